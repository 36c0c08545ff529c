package deliverer_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/deliverer"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/whsign"
	"github.com/gatehouse/gatehouse/internal/wire"
)

// TestEndToEnd: an event produced to Kafka reaches the endpoints that want
// it, signed so that whsign.Verify and an independent HMAC accept it, and
// the attempt is recorded.
func TestEndToEnd(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	other := newReceiver(t, nil)
	ep, secrets := e.endpoint(rc.URL+"/hooks?source=gatehouse", endpointOpts{events: []string{"customer.*"}, secrets: 2})
	epExact, _ := e.endpoint(other.URL+"/exact", endpointOpts{events: []string{"customer.created"}})
	// None of these may receive the sandbox customer.created event.
	e.endpoint(other.URL+"/live", endpointOpts{live: true})
	e.endpoint(other.URL+"/invoices", endpointOpts{events: []string{"invoice.*"}})
	e.endpoint(other.URL+"/disabled", endpointOpts{disabled: true})
	e.start(e.config())

	ev := e.event(false, "customer.created")
	ev.IdempotencyKey = "idem-1"
	e.produce(ev)

	d := e.waitDelivery("the delivery to succeed", ev.ID, ep, func(d deliveryRow) bool { return d.Status == "succeeded" })
	e.waitDelivery("the exact-type delivery to succeed", ev.ID, epExact, func(d deliveryRow) bool { return d.Status == "succeeded" })
	if d.Attempts != 1 || d.LastStatusCode == nil || *d.LastStatusCode != 200 || d.NextAttemptAt != nil || d.LockedUntil != nil {
		t.Fatalf("delivery = %+v", d)
	}
	got := rc.received()
	if len(got) != 1 {
		t.Fatalf("receiver got %d requests", len(got))
	}
	req := got[0]
	for name, want := range map[string]string{"Content-Type": "application/json", "User-Agent": "Gatehouse-Webhooks/1", "Webhook-Id": d.ID} {
		if req.header.Get(name) != want {
			t.Errorf("%s = %q, want %q", name, req.header.Get(name), want)
		}
	}
	if ts := req.header.Get("Webhook-Timestamp"); ts != strconv.FormatInt(e.clock.Now().Unix(), 10) {
		t.Errorf("webhook-timestamp %s, clock %d", ts, e.clock.Now().Unix())
	}
	// Both secrets of the rotation sign; either verifies.
	sigs := strings.Fields(req.header.Get("Webhook-Signature"))
	if len(sigs) != 2 {
		t.Fatalf("want 2 signatures during rotation, got %q", sigs)
	}
	for _, s := range secrets {
		if err := whsign.Verify(s, req.header, req.body, 5*time.Minute, e.clock.Now()); err != nil {
			t.Errorf("whsign.Verify: %v", err)
		}
		// The reference algorithm, independently.
		key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "whsec_"))
		m := hmac.New(sha256.New, key)
		m.Write([]byte(d.ID + "." + req.header.Get("Webhook-Timestamp") + "." + string(req.body)))
		want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
		found := false
		for _, sig := range sigs {
			found = found || sig == want
		}
		if !found {
			t.Errorf("no signature %s among %q", want, sigs)
		}
	}
	var body map[string]any
	if err := json.Unmarshal(req.body, &body); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"id": ev.ID, "object": "event", "type": "customer.created", "created": float64(ev.Created),
		"livemode": false, "api_version": "2026-11-01"}
	for k, v := range want {
		if body[k] != v {
			t.Errorf("payload %s = %v, want %v", k, body[k], v)
		}
	}
	if r, _ := body["request"].(map[string]any); r["id"] != ev.RequestID || r["idempotency_key"] != "idem-1" {
		t.Errorf("payload request = %v", body["request"])
	}
	if obj := body["data"].(map[string]any)["object"].(map[string]any); obj["name"] != "Ada" {
		t.Errorf("payload data = %v", body["data"])
	}

	as := e.attempts(d.ID)
	if len(as) != 1 || as[0].StatusCode == nil || *as[0].StatusCode != 200 || as[0].Trigger != "scheduled" || as[0].Error != "" {
		t.Fatalf("attempts = %+v", as)
	}
	if n := e.count(`SELECT count(*) FROM events WHERE id = $1 AND organization_id = $2`, ev.ID, e.org); n != 1 {
		t.Errorf("event row missing")
	}
	if n := e.count(`SELECT count(*) FROM webhook_deliveries WHERE event_id = $1`, ev.ID); n != 2 {
		t.Errorf("%d deliveries, want 2 (live, invoice-only and disabled endpoints get none)", n)
	}
	waitFor(t, "the other receiver", 10*time.Second, func() bool { return other.count() == 1 })
	if got := other.received()[0]; !strings.Contains(string(got.body), ev.ID) {
		t.Errorf("exact-type endpoint got %s", got.body)
	}

	// Re-reading the same event (a crash before the offset commit) adds
	// nothing: fan-out is idempotent per (event, endpoint).
	e.produce(ev)
	ev2 := e.event(false, "customer.updated")
	e.produce(ev2)
	e.waitDelivery("the second event", ev2.ID, ep, func(d deliveryRow) bool { return d.Status == "succeeded" })
	if n := e.count(`SELECT count(*) FROM webhook_deliveries WHERE event_id = $1`, ev.ID); n != 2 {
		t.Errorf("re-read created deliveries: %d", n)
	}
	if rc.count() != 2 {
		t.Errorf("receiver got %d requests, want 2", rc.count())
	}
}

// TestRetrySchedule: a receiver failing three times then succeeding sees
// the attempts at the schedule's times (± jitter), on the injected clock.
func TestRetrySchedule(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n <= 3 {
			http.Error(w, `{"error":"not yet"}`, http.StatusInternalServerError)
		}
	})
	ep, _ := e.endpoint(rc.URL, endpointOpts{live: true})
	e.start(e.config())
	ev := e.event(true, "customer.created")
	e.produce(ev)

	var prevAt time.Time
	for attempt := 1; attempt <= 4; attempt++ {
		d := e.waitDelivery("attempt "+strconv.Itoa(attempt), ev.ID, ep, func(d deliveryRow) bool {
			return d.Attempts == attempt && d.LockedUntil == nil
		})
		as := e.attempts(d.ID)
		if len(as) != attempt {
			t.Fatalf("%d attempts recorded, want %d", len(as), attempt)
		}
		at := as[attempt-1].CreatedAt
		if attempt > 1 {
			// The attempt ran when the clock reached next_attempt_at.
			wait := at.Sub(prevAt)
			base := deliverer.DefaultLiveSchedule[attempt-2]
			if lo, hi := time.Duration(float64(base)*0.8), time.Duration(float64(base)*1.2)+time.Second; wait < lo || wait > hi {
				t.Errorf("attempt %d came %s after the previous one, want %s ± 20%%", attempt, wait, base)
			}
		}
		if attempt == 4 {
			if d.Status != "succeeded" || d.NextAttemptAt != nil || *d.LastStatusCode != 200 {
				t.Fatalf("after the 4th attempt: %+v", d)
			}
			break
		}
		if d.Status != "failed" || d.NextAttemptAt == nil || *d.LastStatusCode != 500 {
			t.Fatalf("after attempt %d: %+v", attempt, d)
		}
		if as[attempt-1].Snippet != `{"error":"not yet"}`+"\n" {
			t.Errorf("snippet %q", as[attempt-1].Snippet)
		}
		base := deliverer.DefaultLiveSchedule[attempt-1]
		wait := d.NextAttemptAt.Sub(at)
		if wait < time.Duration(float64(base)*0.8) || wait > time.Duration(float64(base)*1.2) {
			t.Errorf("retry %d scheduled %s after the attempt, want %s ± 20%%", attempt, wait, base)
		}
		// Nothing happens before it is due…
		e.clock.Set(d.NextAttemptAt.Add(-time.Second))
		e.pollsAfterNow()
		if got := e.delivery(ev.ID, ep); got.Attempts != attempt || got.LockedUntil != nil {
			t.Fatalf("attempt %d was claimed before it was due: %+v", attempt+1, got)
		}
		// …and it runs once it is.
		prevAt = at
		e.clock.Set(*d.NextAttemptAt)
	}
	if rc.count() != 4 {
		t.Errorf("receiver saw %d requests", rc.count())
	}
	// failing_since was set by the failures and cleared by the success.
	if n := e.count(`SELECT count(*) FROM webhook_endpoints WHERE id = $1 AND failing_since IS NULL`, ep); n != 1 {
		t.Error("failing_since not cleared after the success")
	}
	// Every attempt carried the same webhook-id.
	for _, r := range rc.received() {
		if r.header.Get("Webhook-Id") != rc.received()[0].header.Get("Webhook-Id") {
			t.Fatal("webhook-id changed between retries")
		}
	}
}

// TestExhaustedGoesDead: a sandbox delivery failing every attempt is dead
// after 1 + len(schedule) attempts and lands on the dead-letter topic.
func TestExhaustedGoesDead(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadGateway) })
	ep, _ := e.endpoint(rc.URL, endpointOpts{})
	e.start(e.config())
	ev := e.event(false, "customer.deleted")
	e.produce(ev)

	max := deliverer.DefaultSandboxSchedule.MaxAttempts()
	var d deliveryRow
	for attempt := 1; attempt <= max; attempt++ {
		d = e.waitDelivery("attempt "+strconv.Itoa(attempt), ev.ID, ep, func(d deliveryRow) bool {
			return d.Attempts == attempt && d.LockedUntil == nil
		})
		if d.NextAttemptAt != nil {
			e.clock.Set(*d.NextAttemptAt)
		}
	}
	if d.Status != "dead" || d.NextAttemptAt != nil || *d.LastStatusCode != 502 {
		t.Fatalf("after %d attempts: %+v", max, d)
	}
	msgs := readDeadLetters(t, e.brokers, e.dlqTopic, 1)
	var dl wire.DeadLetter
	if err := json.Unmarshal(msgs[0].Value, &dl); err != nil {
		t.Fatal(err)
	}
	if string(msgs[0].Key) != ep || dl.V != 1 || dl.DeliveryID != d.ID || dl.EventID != ev.ID || dl.EndpointID != ep ||
		dl.OrganizationID != e.org || dl.Attempts != max || dl.LastStatusCode != 502 {
		t.Fatalf("dead letter %s: %+v", msgs[0].Key, dl)
	}
	waitFor(t, "the dead-delivery alert", 5*time.Second, func() bool {
		for _, k := range e.alerts.kinds() {
			if k == deliverer.AlertDeliveriesDying {
				return true
			}
		}
		return false
	})
	if rc.count() != max {
		t.Errorf("receiver saw %d attempts, want %d", rc.count(), max)
	}
}

// TestUnstorableEventDoesNotStallItsPartition: an event whose created time
// Postgres cannot store (its timestamp range ends in the year 294276) is
// skipped as malformed, so the events behind it on the partition are still
// delivered instead of waiting forever behind a fan-out that can never
// commit.
func TestUnstorableEventDoesNotStallItsPartition(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	ep, _ := e.endpoint(rc.URL, endpointOpts{})
	cfg := e.config()
	cfg.BatchSize = 1 // the bad event in a round of its own
	e.start(cfg)

	bad := e.event(false, "customer.created")
	bad.Created = 10_000_000_000_000 // unix seconds, beyond Postgres's range
	good := e.event(false, "customer.created")
	e.produce(bad, good) // same organisation: same partition, in this order
	e.waitDelivery("the event after the unstorable one", good.ID, ep, func(d deliveryRow) bool { return d.Status == "succeeded" })
}

// TestEventPostgresRefusesIsSkippedNotTheBatch: should Postgres refuse an
// event's values that events.Validate let through, the round it came in is
// fanned out one event at a time: the refused event is skipped and counted
// as malformed, and the others in its round are stored and delivered
// instead of the partition stalling on a fan-out that can never commit.
func TestEventPostgresRefusesIsSkippedNotTheBatch(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	ep, _ := e.endpoint(rc.URL, endpointOpts{})
	// A refusal no valid event meets today, standing in for one Validate
	// does not foresee.
	e.exec(`ALTER TABLE events ADD CONSTRAINT test_refused CHECK (idempotency_key IS DISTINCT FROM 'refuse-me')`)

	before, bad, after := e.event(false, "customer.created"), e.event(false, "customer.created"), e.event(false, "customer.created")
	bad.IdempotencyKey = "refuse-me"
	e.produce(before, bad, after) // one write, one partition: one round
	e.start(e.config())

	for _, ev := range []wire.Event{before, after} {
		e.waitDelivery("an event in the refused one's round", ev.ID, ep, func(d deliveryRow) bool { return d.Status == "succeeded" })
	}
	waitFor(t, "the refused event counted as malformed", 10*time.Second, func() bool {
		return e.metric("gatehouse_deliverer_events_malformed_total") == 1
	})
	if n := e.count(`SELECT count(*) FROM events WHERE id = $1`, bad.ID); n != 0 {
		t.Fatalf("the refused event was stored (%d rows)", n)
	}
	if n := e.count(`SELECT count(*) FROM webhook_deliveries WHERE event_id = $1`, bad.ID); n != 0 {
		t.Fatalf("the refused event has %d deliveries", n)
	}
}

// TestLoneEventPostgresRefusesIsSkipped: a refused event alone in its
// round is skipped too, not retried for ever with its partition behind it.
func TestLoneEventPostgresRefusesIsSkipped(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	ep, _ := e.endpoint(rc.URL, endpointOpts{})
	e.exec(`ALTER TABLE events ADD CONSTRAINT test_refused CHECK (idempotency_key IS DISTINCT FROM 'refuse-me')`)

	bad := e.event(false, "customer.created")
	bad.IdempotencyKey = "refuse-me"
	e.produce(bad) // alone on the topic: a round of one
	e.start(e.config())
	waitFor(t, "the refused event counted as malformed", 10*time.Second, func() bool {
		return e.metric("gatehouse_deliverer_events_malformed_total") == 1
	})
	good := e.event(false, "customer.created")
	e.produce(good) // same organisation: same partition
	e.waitDelivery("the event after the refused one", good.ID, ep, func(d deliveryRow) bool { return d.Status == "succeeded" })
	if n := e.count(`SELECT count(*) FROM events WHERE id = $1`, bad.ID); n != 0 {
		t.Fatalf("the refused event was stored (%d rows)", n)
	}
}

// TestEndpointDeletedDuringFanOutIsRetried: a foreign-key violation in a
// fan-out is an endpoint deleted between the round's reading of the
// endpoints and its insert of their deliveries, not a bad event: the round
// is retried, not the event skipped as malformed for every other endpoint.
func TestEndpointDeletedDuringFanOutIsRetried(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	ep, _ := e.endpoint(rc.URL, endpointOpts{})
	// The race, twice (the whole round, then the event alone): a sequence
	// counts across the rolled-back attempts.
	e.exec(`CREATE SEQUENCE test_fk_race`)
	e.exec(`CREATE FUNCTION test_fk_race() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF nextval('test_fk_race') <= 2 THEN
				RAISE EXCEPTION 'endpoint deleted meanwhile' USING ERRCODE = 'foreign_key_violation';
			END IF;
			RETURN NEW;
		END $$`)
	e.exec(`CREATE TRIGGER test_fk_race BEFORE INSERT ON webhook_deliveries FOR EACH ROW EXECUTE FUNCTION test_fk_race()`)

	ev := e.event(false, "customer.created")
	e.produce(ev)
	e.start(e.config())
	e.waitDelivery("the event whose fan-out met a deleted endpoint", ev.ID, ep, func(d deliveryRow) bool { return d.Status == "succeeded" })
	if n := e.metric("gatehouse_deliverer_events_malformed_total"); n != 0 {
		t.Fatalf("%v events counted as malformed", n)
	}
}

// TestUnreadableSecretsCostNoAttempt: when Postgres cannot serve an
// endpoint's signing secrets, the attempt is postponed, not made and
// failed: a delivery on its last scheduled attempt is not dead-lettered
// unsent, and is delivered once the secrets can be read.
func TestUnreadableSecretsCostNoAttempt(t *testing.T) {
	e := newEnv(t)
	rc, release := newHoldingReceiver(t, http.StatusOK)
	ep, _ := e.endpoint(rc.URL, endpointOpts{})
	now := e.clock.Now()
	insert := func(status string, attempts int) (eventID string) {
		ev := e.event(false, "customer.created")
		e.exec(`INSERT INTO events (id, organization_id, livemode, type, api_version, data, created_at)
			VALUES ($1, $2, false, $3, $4, $5, $6)`, ev.ID, e.org, ev.Type, ev.APIVersion, string(ev.Data), now)
		e.exec(`INSERT INTO webhook_deliveries (id, organization_id, livemode, event_id, endpoint_id, status, attempts,
			next_attempt_at) VALUES ($1, $2, false, $3, $4, $5, $6, $7)`, ids.New(ids.Delivery), e.org, ev.ID, ep, status, attempts, now)
		return ev.ID
	}
	insert("pending", 0) // its attempt is held by the receiver
	cfg := e.config()
	cfg.EndpointConcurrency = 1
	cfg.EndpointTTL, cfg.SecretTTL = time.Nanosecond, time.Nanosecond // every attempt reads both
	e.start(cfg)
	waitFor(t, "the first attempt to reach the receiver", 10*time.Second, func() bool { return rc.count() == 1 })

	// Claimed and queued behind it: a delivery with one scheduled attempt left.
	last := deliverer.DefaultSandboxSchedule.MaxAttempts() - 1
	evB := insert("failed", last)
	waitFor(t, "the last attempt to be claimed", 10*time.Second, func() bool { return e.delivery(evB, ep).LockedUntil != nil })

	// Postgres cannot serve the secrets while its attempt starts.
	e.exec(`ALTER TABLE webhook_endpoint_secrets RENAME TO webhook_endpoint_secrets_away`)
	close(release)
	d := e.waitDelivery("the attempt to be postponed", evB, ep, func(d deliveryRow) bool { return d.LockedUntil == nil })
	if d.Status != "failed" || d.Attempts != last || d.NextAttemptAt == nil || !d.NextAttemptAt.Equal(now.Add(5*time.Second)) ||
		len(e.attempts(d.ID)) != 0 || rc.count() != 1 {
		t.Fatalf("after a failed secrets read: %+v, %d attempts recorded, %d requests received; want it postponed 5 s with no attempt",
			d, len(e.attempts(d.ID)), rc.count())
	}

	e.exec(`ALTER TABLE webhook_endpoint_secrets_away RENAME TO webhook_endpoint_secrets`)
	e.clock.Set(*d.NextAttemptAt)
	d = e.waitDelivery("the postponed attempt", evB, ep, func(d deliveryRow) bool { return d.Status == "succeeded" })
	if d.Attempts != last+1 || rc.count() != 2 {
		t.Fatalf("delivered after %d attempts, %d requests received", d.Attempts, rc.count())
	}
}
