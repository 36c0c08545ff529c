package events

import (
	"context"
	"encoding/json"
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
type Republisher struct {
	DB       Querier
	Producer interface{ Enqueue(outbox.Message) }
	Topic    string        // wire.TopicEvents when empty
	Grace    time.Duration // 30 s when zero: longer than a healthy produce + consume
	Every    time.Duration // 10 s when zero
	Logger   *zap.Logger
}

// Run sweeps until ctx ends.
func (r *Republisher) Run(ctx context.Context) error {
	if r.Topic == "" {
		r.Topic = wire.TopicEvents
	}
	if r.Grace <= 0 {
		r.Grace = 30 * time.Second
	}
	if r.Every <= 0 {
		r.Every = 10 * time.Second
	}
	if r.Logger == nil {
		r.Logger = zap.NewNop()
	}
	t := time.NewTicker(r.Every)
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

// Sweep produces the pending events older than Grace, at most 1,000 a round.
func (r *Republisher) Sweep(ctx context.Context) (int, error) {
	rows, _ := r.DB.Query(ctx, `
		SELECT id, organization_id, livemode, type, api_version, data, coalesce(request_id, '') AS request_id,
		       coalesce(idempotency_key, '') AS idempotency_key, created_at
		FROM events WHERE pending_publish AND created_at < $1
		ORDER BY created_at LIMIT 1000`, time.Now().Add(-r.Grace))
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
	for _, p := range pending {
		ev := wire.Event{V: 1, ID: p.ID, OrganizationID: p.OrganizationID, Livemode: p.Livemode, Type: p.Type,
			Created: p.CreatedAt.Unix(), APIVersion: p.APIVersion, Data: p.Data, RequestID: p.RequestID,
			IdempotencyKey: p.IdempotencyKey}
		value, err := Encode(ev)
		if err != nil {
			return 0, err
		}
		r.Producer.Enqueue(outbox.Message{Topic: r.Topic, Key: []byte(ev.OrganizationID), Value: value})
	}
	return len(pending), nil
}
