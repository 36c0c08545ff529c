package deliverer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/internal/outbox"
	"github.com/gatehouse/gatehouse/internal/pgerr"
	"github.com/gatehouse/gatehouse/internal/redact"
	"github.com/gatehouse/gatehouse/internal/wire"
)

// Disabled reasons written to webhook_endpoints.disabled_reason.
const (
	ReasonGone    = "The endpoint answered 410 Gone."
	ReasonFailing = "The endpoint failed every delivery for %s."
)

// Audit identity of the deliverer's own actions.
var systemActor = audit.Actor{Type: audit.ActorSystem, ID: "deliverer"}

// writeResults applies results in batches: whatever finished while the
// previous batch was being written goes in the next, so under load one
// statement records hundreds of attempts and at rest a result is written
// as soon as it exists. It returns when results is closed and drained.
func (w *Worker) writeResults(ctx context.Context) {
	const maxBatch = 512
	for r := range w.results {
		batch := []*result{r}
	fill:
		for len(batch) < maxBatch {
			select {
			case r, ok := <-w.results:
				if !ok {
					break fill
				}
				batch = append(batch, r)
			default:
				break fill
			}
		}
		w.flush(ctx, batch)
	}
}

// flush makes a batch durable, retrying while Postgres is unavailable, then
// does what follows a commit (dead letters, alerts) and lets the jobs go.
// Should Postgres refuse a batch for a reason no retry fixes, it is split so
// that one bad result cannot hold up the rest. An outage is waited out,
// however long: a result given up would have its delivery sent again when
// the lease expires, to a receiver that may already have taken it.
func (w *Worker) flush(ctx context.Context, batch []*result) {
	defer func() {
		for _, r := range batch {
			w.disp.done(r.j)
		}
	}()
	start := time.Now()
	for attempt := 0; ; attempt++ {
		after, err := w.apply(ctx, batch)
		if err == nil {
			w.afterCommit(after)
			if ce := w.log.Check(zap.DebugLevel, "delivery results written"); ce != nil {
				ce.Write(zap.Int("results", len(batch)), zap.Duration("took", time.Since(start)), zap.Int("tries", attempt+1))
			}
			return
		}
		if ctx.Err() != nil {
			w.log.Error("giving up on unwritten delivery results at shutdown; their leases will expire and they will be retried",
				zap.Int("results", len(batch)), zap.Error(err))
			return
		}
		if pgerr.Refused(err) {
			if len(batch) == 1 {
				w.log.Error("dropping delivery result Postgres refuses; the lease will expire and the delivery be retried",
					zap.String("delivery_id", batch[0].j.d.ID), zap.Error(err))
				return
			}
			w.log.Warn("writing delivery results failed; writing them one by one", zap.Error(err))
			for _, r := range batch {
				w.flush(ctx, []*result{r})
			}
			return
		}
		w.log.Warn("writing delivery results; retrying", zap.Error(err), zap.Int("results", len(batch)))
		select {
		case <-ctx.Done():
		case <-time.After(resultsRetryWait(attempt)):
		}
	}
}

// resultsRetryWait is the pause before the next try at writing results:
// 0.5 s more each time, at most 5 s. Tests shorten it.
var resultsRetryWait = func(attempt int) time.Duration {
	return min(time.Duration(attempt+1)*500*time.Millisecond, 5*time.Second)
}

// committed is what apply decided, to act on once it is durable.
type committed struct {
	dead   []*result
	alerts []Alert
	now    time.Time
	counts map[string]int // deliveries by outcome
}

// apply writes one batch in one transaction: the attempts, the deliveries'
// new states (only where this process still holds the lease), and the
// endpoints' health (failing_since, disabling, alert bookkeeping, audit).
func (w *Worker) apply(ctx context.Context, batch []*result) (*committed, error) {
	now := w.now()
	out := &committed{now: now, counts: map[string]int{}}
	err := asyncTx(ctx, w.db, func(tx pgx.Tx) error {
		out.dead, out.alerts, out.counts = nil, nil, map[string]int{}
		if err := w.applyReleases(ctx, tx, batch); err != nil {
			return err
		}
		applied, err := w.applyDeliveries(ctx, tx, now, batch)
		if err != nil {
			return err
		}
		if err := w.applyAttempts(ctx, tx, batch); err != nil {
			return err
		}
		for _, r := range batch {
			if r.kind == resRelease {
				continue
			}
			st, ok := applied[r.j.d.ID]
			if !ok {
				w.m.leaseLost.Inc()
				w.log.Warn("delivery lease lost before its result was written; result recorded as an attempt only",
					zap.String("delivery_id", r.j.d.ID))
				continue
			}
			switch {
			case r.kind == resParked:
				out.counts["parked"]++
			case r.kind == resPostponed:
				out.counts["postponed"]++
			case st == "dead" && r.status == "dead":
				out.counts["dead"]++
				out.dead = append(out.dead, r)
			case st == "succeeded":
				out.counts["succeeded"]++
			case st == "failed" && r.status == "failed" && !r.scheduled:
				out.counts["parked"]++
			case st == "failed":
				out.counts["retrying"]++
			}
		}
		alerts, err := w.applyEndpoints(ctx, tx, now, batch, out.dead)
		if err != nil {
			return err
		}
		out.alerts = alerts
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (w *Worker) applyReleases(ctx context.Context, tx pgx.Tx, batch []*result) error {
	var jobs []*job
	for _, r := range batch {
		if r.kind == resRelease {
			jobs = append(jobs, r.j)
		}
	}
	if len(jobs) == 0 {
		return nil
	}
	idsA, leases := make([]string, len(jobs)), make([]string, len(jobs))
	for i, j := range jobs {
		idsA[i], leases[i] = j.d.ID, j.d.LeaseID
	}
	_, err := tx.Exec(ctx, releaseSQL, idsA, leases)
	if err != nil {
		return fmt.Errorf("releasing leases: %w", err)
	}
	return nil
}

// applyDeliveriesSQL updates deliveries still leased by us. The claim
// cleared manual_pending (claimSQL), so a set flag is a manual retry
// requested while this attempt, manual or not, was in flight: it is kept,
// with the status and next attempt it set, so the manual attempt follows.
// A recorded attempt clears manual_claimed: the manual request it carried
// is done.
const applyDeliveriesSQL = `
UPDATE webhook_deliveries d SET
	attempts = d.attempts + CASE WHEN u.attempted THEN 1 ELSE 0 END,
	manual_attempts = d.manual_attempts + CASE WHEN u.attempted AND u.manual THEN 1 ELSE 0 END,
	last_status_code = CASE WHEN u.attempted THEN u.code ELSE d.last_status_code END,
	status = CASE WHEN d.manual_pending OR u.status = '' THEN d.status ELSE u.status END,
	next_attempt_at = CASE WHEN d.manual_pending THEN d.next_attempt_at ELSE u.next END,
	manual_claimed = d.manual_claimed AND NOT u.attempted,
	locked_until = NULL, lease_id = NULL, updated_at = $1
FROM unnest($2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::int[], $7::boolean[], $8::boolean[])
     AS u(id, lease, status, next, code, attempted, manual)
WHERE d.id = u.id AND d.lease_id = u.lease
RETURNING d.id, d.status`

func (w *Worker) applyDeliveries(ctx context.Context, tx pgx.Tx, now time.Time, batch []*result) (map[string]string, error) {
	n := 0
	for _, r := range batch {
		if r.kind != resRelease {
			n++
		}
	}
	applied := make(map[string]string, n)
	if n == 0 {
		return applied, nil
	}
	var (
		idsA, leases, statuses = make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
		next                   = make([]*time.Time, 0, n)
		codes                  = make([]*int32, 0, n)
		attempted, manual      = make([]bool, 0, n), make([]bool, 0, n)
	)
	for _, r := range batch {
		if r.kind == resRelease {
			continue
		}
		idsA, leases, statuses = append(idsA, r.j.d.ID), append(leases, r.j.d.LeaseID), append(statuses, r.status)
		var nx *time.Time
		if r.scheduled {
			t := r.next.Truncate(time.Microsecond)
			nx = &t
		}
		var code *int32
		if r.code != 0 {
			c := int32(r.code)
			code = &c
		}
		next, codes = append(next, nx), append(codes, code)
		attempted, manual = append(attempted, r.kind == resAttempted), append(manual, r.j.d.Manual)
	}
	rows, err := tx.Query(ctx, applyDeliveriesSQL, now, idsA, leases, statuses, next, codes, attempted, manual)
	if err != nil {
		return nil, fmt.Errorf("updating deliveries: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, st string
		if err := rows.Scan(&id, &st); err != nil {
			return nil, fmt.Errorf("updating deliveries: %w", err)
		}
		applied[id] = st
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("updating deliveries: %w", err)
	}
	return applied, nil
}

// applyAttempts records every attempt made, whether or not the lease was
// still ours: the request reached (or tried to reach) the endpoint either
// way. Deliveries deleted meanwhile (their endpoint was deleted) are skipped.
func (w *Worker) applyAttempts(ctx context.Context, tx pgx.Tx, batch []*result) error {
	var (
		idsA, dels, orgs, snippets, errs, triggers []string
		live                                       []bool
		codes                                      []*int32
		lat                                        []int32
		at                                         []time.Time
	)
	for _, r := range batch {
		if r.kind != resAttempted {
			continue
		}
		trigger := "scheduled"
		if r.j.d.Manual {
			trigger = "manual"
		}
		var code *int32
		if r.code != 0 {
			c := int32(r.code)
			code = &c
		}
		idsA, dels, orgs = append(idsA, r.attemptID), append(dels, r.j.d.ID), append(orgs, r.j.d.OrganizationID)
		snippets, errs, triggers = append(snippets, r.snippet), append(errs, r.errText), append(triggers, trigger)
		live, codes = append(live, r.j.d.Livemode), append(codes, code)
		lat, at = append(lat, int32(min(r.latency.Milliseconds(), 1<<31-1))), append(at, r.at)
	}
	if len(idsA) == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, `
		INSERT INTO webhook_attempts (id, delivery_id, organization_id, livemode, status_code, latency_ms,
		                              response_snippet, error, trigger, created_at)
		SELECT u.id, u.del, u.org, u.live, u.code, u.lat, u.snip, u.err, u.trig, u.at
		FROM unnest($1::text[], $2::text[], $3::text[], $4::boolean[], $5::int[], $6::int[], $7::text[],
		            $8::text[], $9::text[], $10::timestamptz[]) AS u(id, del, org, live, code, lat, snip, err, trig, at)
		WHERE EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.id = u.del)
		ON CONFLICT (id) DO NOTHING`, idsA, dels, orgs, live, codes, lat, snippets, errs, triggers, at)
	if err != nil {
		return fmt.Errorf("recording attempts: %w", err)
	}
	return nil
}

// applyEndpoints keeps endpoint health: failing_since starts with a failure
// and clears with a success (the latest attempt in the batch decides),
// 410 Gone and failing for DisableAfter disable the endpoint (audited, actor
// system), and alerts are raised once per threshold and episode.
func (w *Worker) applyEndpoints(ctx context.Context, tx pgx.Tx, now time.Time, batch []*result, dead []*result) ([]Alert, error) {
	type epInfo struct {
		last *result
		gone *result
	}
	eps := map[string]*epInfo{}
	for _, r := range batch {
		if r.kind != resAttempted || r.class == "no_event" {
			continue
		}
		e := eps[r.j.d.EndpointID]
		if e == nil {
			e = &epInfo{}
			eps[r.j.d.EndpointID] = e
		}
		if e.last == nil || r.at.After(e.last.at) || r.at.Equal(e.last.at) {
			e.last = r
		}
		if r.gone {
			e.gone = r
		}
	}
	var healthy, failing, check []string
	for id, e := range eps {
		if e.last.ok {
			healthy = append(healthy, id)
			continue
		}
		failing = append(failing, id)
		if f := e.last.j.ep.FailingSince; f != nil && w.cfg.checkFailingAfter > 0 && now.Sub(*f) >= w.cfg.checkFailingAfter {
			check = append(check, id)
		}
	}
	if len(healthy) > 0 {
		if _, err := tx.Exec(ctx, `UPDATE webhook_endpoints SET failing_since = NULL, failing_alert_level = 0
			WHERE id = ANY($1) AND (failing_since IS NOT NULL OR failing_alert_level <> 0)`, healthy); err != nil {
			return nil, fmt.Errorf("clearing failing_since: %w", err)
		}
	}
	if len(failing) > 0 {
		if _, err := tx.Exec(ctx, `UPDATE webhook_endpoints SET failing_since = $1
			WHERE id = ANY($2) AND failing_since IS NULL`, now, failing); err != nil {
			return nil, fmt.Errorf("setting failing_since: %w", err)
		}
	}
	var alerts []Alert
	for id, e := range eps {
		if e.gone == nil {
			continue
		}
		a, err := w.disable(ctx, tx, now, id, "gone", ReasonGone, map[string]any{"status_code": 410, "delivery_id": e.gone.j.d.ID})
		if err != nil {
			return nil, err
		}
		alerts = append(alerts, a...)
	}
	if len(check) > 0 {
		a, err := w.checkFailing(ctx, tx, now, check)
		if err != nil {
			return nil, err
		}
		alerts = append(alerts, a...)
	}
	deadEps := map[string]int{}
	for _, r := range dead {
		deadEps[r.j.d.EndpointID]++
	}
	for id, n := range deadEps {
		var org, url string
		var live bool
		err := tx.QueryRow(ctx, `UPDATE webhook_endpoints SET dead_alerted_at = $1
			WHERE id = $2 AND (dead_alerted_at IS NULL OR dead_alerted_at <= $3)
			RETURNING organization_id, livemode, url`, now, id, now.Add(-w.cfg.DeadAlertEvery)).Scan(&org, &live, &url)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("recording dead-delivery alert: %w", err)
		}
		alerts = append(alerts, Alert{Kind: AlertDeliveriesDying, OrganizationID: org, Livemode: live, EndpointID: id, URL: url, Time: now,
			Message: fmt.Sprintf("%d webhook deliveries to this endpoint exhausted their retries and were dead-lettered.", n)})
	}
	return alerts, nil
}

// checkFailing raises failing_since threshold alerts and disables endpoints
// failing for DisableAfter.
func (w *Worker) checkFailing(ctx context.Context, tx pgx.Tx, now time.Time, endpoints []string) ([]Alert, error) {
	rows, err := tx.Query(ctx, `SELECT id, organization_id, livemode, url, failing_since, failing_alert_level
		FROM webhook_endpoints WHERE id = ANY($1) AND status = 'enabled' AND failing_since IS NOT NULL`, endpoints)
	if err != nil {
		return nil, fmt.Errorf("checking failing endpoints: %w", err)
	}
	type ep struct {
		id, org, url string
		live         bool
		since        time.Time
		level        int
	}
	var eps []ep
	for rows.Next() {
		var e ep
		if err := rows.Scan(&e.id, &e.org, &e.live, &e.url, &e.since, &e.level); err != nil {
			rows.Close()
			return nil, fmt.Errorf("checking failing endpoints: %w", err)
		}
		eps = append(eps, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("checking failing endpoints: %w", err)
	}
	var alerts []Alert
	for _, e := range eps {
		age := now.Sub(e.since)
		if w.cfg.DisableAfter > 0 && age >= w.cfg.DisableAfter {
			a, err := w.disable(ctx, tx, now, e.id, "failing", fmt.Sprintf(ReasonFailing, humanDuration(w.cfg.DisableAfter)),
				map[string]any{"failing_since": e.since.UTC().Format(time.RFC3339)})
			if err != nil {
				return nil, err
			}
			alerts = append(alerts, a...)
			continue
		}
		level := 0
		for i, t := range w.cfg.FailingThresholds {
			if age >= t {
				level = i + 1
			}
		}
		if level <= e.level {
			continue
		}
		tag, err := tx.Exec(ctx, `UPDATE webhook_endpoints SET failing_alert_level = $1
			WHERE id = $2 AND failing_alert_level < $1`, level, e.id)
		if err != nil {
			return nil, fmt.Errorf("recording failing alert: %w", err)
		}
		if tag.RowsAffected() == 0 {
			continue // another deliverer raised it
		}
		msg := fmt.Sprintf("Every webhook delivery to this endpoint has failed for %s.", humanDuration(w.cfg.FailingThresholds[level-1]))
		if w.cfg.DisableAfter > 0 {
			msg += fmt.Sprintf(" It will be disabled if it keeps failing for %s.", humanDuration(w.cfg.DisableAfter))
		}
		alerts = append(alerts, Alert{Kind: AlertFailing, OrganizationID: e.org, Livemode: e.live, EndpointID: e.id, URL: e.url,
			Time: now, Message: msg})
	}
	return alerts, nil
}

// disable turns an endpoint off on the platform's behalf, audited in the
// same transaction. It is a no-op for an endpoint already disabled.
func (w *Worker) disable(ctx context.Context, tx pgx.Tx, now time.Time, id, why, reason string, data map[string]any) ([]Alert, error) {
	var org, url string
	var live bool
	err := tx.QueryRow(ctx, `UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = $1, updated_at = $2
		WHERE id = $3 AND status = 'enabled' RETURNING organization_id, livemode, url`, reason, now, id).Scan(&org, &live, &url)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("disabling endpoint: %w", err)
	}
	data["reason"] = why
	data["disabled_reason"] = reason
	if err := audit.Record(ctx, tx, audit.Entry{OrganizationID: org, Livemode: &live, Actor: systemActor,
		Action: "webhook_endpoint.disabled", TargetType: "webhook_endpoint", TargetID: id, Data: data, CreatedAt: now}); err != nil {
		return nil, err
	}
	w.m.disabled.WithLabelValues(why).Inc()
	w.log.Warn("webhook endpoint disabled", zap.String("endpoint_id", id), zap.String("reason", why))
	return []Alert{{Kind: AlertDisabled, OrganizationID: org, Livemode: live, EndpointID: id, URL: url, Time: now,
		Message: "This webhook endpoint was disabled: " + reason + " Re-enable it in the dashboard once it is fixed; failed deliveries can then be recovered."}}, nil
}

// afterCommit sends the dead letters and alerts of a committed batch.
func (w *Worker) afterCommit(c *committed) {
	for outcome, n := range c.counts {
		w.m.deliveries.WithLabelValues(outcome).Add(float64(n))
	}
	for _, r := range c.dead {
		dl := wire.DeadLetter{V: 1, DeliveryID: r.j.d.ID, EventID: r.j.d.EventID, EndpointID: r.j.d.EndpointID,
			OrganizationID: r.j.d.OrganizationID, Livemode: r.j.d.Livemode, Attempts: r.j.d.Attempts + 1,
			LastStatusCode: r.code, LastError: r.errText, Time: c.now.Unix()}
		b, err := json.Marshal(dl)
		if err != nil {
			continue
		}
		w.dlq.Enqueue(outbox.Message{Topic: w.cfg.DeadLetterTopic, Key: []byte(r.j.d.EndpointID), Value: b})
		w.m.deadLetters.Inc()
	}
	for _, a := range c.alerts {
		w.notify(a)
	}
}

// notify hands an alert to the notifier off the delivery path; at most a
// few run at once and the rest are logged and dropped.
func (w *Worker) notify(a Alert) {
	a.URL = redact.EndpointURL(a.URL) // one place, so that no alert kind forgets
	w.m.alerts.WithLabelValues(string(a.Kind)).Inc()
	select {
	case w.notifySem <- struct{}{}:
	default:
		w.log.Warn("alert dropped: notifier busy", zap.String("kind", string(a.Kind)), zap.String("endpoint_id", a.EndpointID))
		return
	}
	w.notifyWG.Go(func() {
		defer func() { <-w.notifySem }()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := w.cfg.Notifier.Notify(ctx, a); err != nil {
			w.log.Warn("sending alert", zap.String("kind", string(a.Kind)), zap.String("endpoint_id", a.EndpointID), zap.Error(err))
		}
	})
}

// humanDuration writes 120h as "5 days" and 90m as "1h30m0s".
func humanDuration(d time.Duration) string {
	if d >= 24*time.Hour && d%(24*time.Hour) == 0 {
		n := int(d / (24 * time.Hour))
		if n == 1 {
			return "1 day"
		}
		return fmt.Sprintf("%d days", n)
	}
	if d >= time.Hour && d%time.Hour == 0 {
		n := int(d / time.Hour)
		if n == 1 {
			return "1 hour"
		}
		return fmt.Sprintf("%d hours", n)
	}
	return d.String()
}
