-- A manual retry asked for while an attempt of the same delivery is in
-- flight must not be lost (deliverer/store.go, claimSQL). The deliverer's
-- claim now takes the request over: it clears manual_pending and sets
-- manual_claimed, so a retry requested during the attempt sets
-- manual_pending again and the attempt's result, which leaves that flag
-- alone, keeps it queued. manual_claimed says the claimed attempt is a
-- manual one, which survives the deliverer dying mid-attempt (the next
-- claim of the delivery is manual too); recording the attempt clears it.
-- The control plane keeps setting manual_pending alone, as before.
ALTER TABLE webhook_deliveries ADD COLUMN manual_claimed boolean NOT NULL DEFAULT false;
