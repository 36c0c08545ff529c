package events

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/gatehouse/gatehouse/internal/outbox"
	"github.com/gatehouse/gatehouse/internal/wire"
)

// Republisher closes the gap between storing an API-created event and
// producing it: the producer queues in memory, so a control plane killed in
// between would leave a stored event that is never delivered. Rows still
// marked pending_publish after Grace are produced again; consumers are
// idempotent on the event id, so a duplicate send costs nothing.
//
// A row can stay pending for reasons a new send does not cure (Kafka down,
// the ingester behind), so each row backs off: its n-th republish waits
// Grace·2^(n-1) after the previous send (the first, Grace after the API's
// own), never more than MaxBackoff. Every pending row is thus still produced
// at least once per MaxBackoff, however long it stays pending, while an
// outage costs each row a handful of sends instead of one per sweep.
type Republisher struct {
	DB         Querier
	Producer   interface{ Enqueue(outbox.Message) }
	Topic      string        // wire.TopicEvents when empty
	Grace      time.Duration // 30 s when zero: longer than a healthy produce + consume
	MaxBackoff time.Duration // 10 min when zero, and never less than Grace
	Every      time.Duration // 10 s when zero
	Logger     *zap.Logger
	// Now is the clock of the grace time and the back-off; time.Now by
	// default.
	Now func() time.Time
}

// sweepBatch bounds one sweep. Rows sent are not due again until their
// back-off has passed, so a larger backlog is worked through over sweeps.
const sweepBatch = 1000

// Run sweeps until ctx ends.
func (r *Republisher) Run(ctx context.Context) error {
	if r.Logger == nil {
		r.Logger = zap.NewNop()
	}
	every := r.Every
	if every <= 0 {
		every = 10 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if n, err := r.Sweep(ctx); err != nil && ctx.Err() == nil {
			r.Logger.Warn("republishing pending events", zap.Error(err))
		} else if n > 0 {
			r.Logger.Info("republished events that never reached Kafka", zap.Int("events", n))
		}
	}
}

// Sweep produces the pending events whose back-off has passed, at most
// sweepBatch a round, and returns how many it produced.
func (r *Republisher) Sweep(ctx context.Context) (int, error) {
	topic, grace, maxBackoff, now := r.Topic, r.Grace, r.MaxBackoff, time.Now
	if topic == "" {
		topic = wire.TopicEvents
	}
	if grace <= 0 {
		grace = 30 * time.Second
	}
	if maxBackoff <= 0 {
		maxBackoff = 10 * time.Minute
	}
	maxBackoff = max(maxBackoff, grace)
	if r.Now != nil {
		now = r.Now
	}
	// Rows are claimed (stamped) in the statement that selects them, so that
	// two control planes sweeping at once do not both send a row. A claim
	// whose send is then lost, the process dying in between, only delays
	// that row by one back-off. The exponent is capped where the wait has
	// long reached MaxBackoff, before 2^n could overflow.
	rows, _ := r.DB.Query(ctx, `
		WITH due AS (
			SELECT id FROM events
			WHERE pending_publish
			  AND coalesce(republished_at, created_at) <= $1::timestamptz - make_interval(secs =>
			          least($2::float8 * 2::float8 ^ least(republish_count, 30), $3::float8))
			ORDER BY created_at LIMIT $4
			FOR UPDATE SKIP LOCKED)
		UPDATE events e SET republished_at = $1, republish_count = e.republish_count + 1
		FROM due WHERE e.id = due.id
		RETURNING e.id, e.organization_id, e.livemode, e.type, e.api_version, e.data,
		          coalesce(e.request_id, '') AS request_id, coalesce(e.idempotency_key, '') AS idempotency_key,
		          e.created_at`,
		now(), grace.Seconds(), maxBackoff.Seconds(), sweepBatch)
	type pendingRow struct {
		ID             string          `db:"id"`
		OrganizationID string          `db:"organization_id"`
		Livemode       bool            `db:"livemode"`
		Type           string          `db:"type"`
		APIVersion     string          `db:"api_version"`
		Data           json.RawMessage `db:"data"`
		RequestID      string          `db:"request_id"`
		IdempotencyKey string          `db:"idempotency_key"`
		CreatedAt      time.Time       `db:"created_at"`
	}
	pending, err := pgx.CollectRows(rows, pgx.RowToStructByName[pendingRow])
	if err != nil {
		return 0, err
	}
	// RETURNING has no order; oldest first is the order they were created in.
	slices.SortFunc(pending, func(a, b pendingRow) int { return a.CreatedAt.Compare(b.CreatedAt) })
	// The rows are claimed now: one that cannot be encoded must not cost the
	// others their send.
	var errs []error
	sent := 0
	for _, p := range pending {
		ev := wire.Event{V: 1, ID: p.ID, OrganizationID: p.OrganizationID, Livemode: p.Livemode, Type: p.Type,
			Created: p.CreatedAt.Unix(), APIVersion: p.APIVersion, Data: p.Data, RequestID: p.RequestID,
			IdempotencyKey: p.IdempotencyKey}
		value, err := Encode(ev)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		r.Producer.Enqueue(outbox.Message{Topic: topic, Key: []byte(ev.OrganizationID), Value: value})
		sent++
	}
	return sent, errors.Join(errs...)
}
