package events

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/outbox"
	"github.com/gatehouse/gatehouse/internal/testenv"
	"github.com/gatehouse/gatehouse/internal/wire"
)

type recordingProducer struct {
	mu  sync.Mutex
	got []outbox.Message
}

func (p *recordingProducer) Enqueue(m outbox.Message) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.got = append(p.got, m)
}

// TestRepublisherSendsEventsThatNeverReachedKafka: an event stored by the
// API whose in-memory send was lost (the process died) is produced again;
// once a consumer has read it back from Kafka it is not.
func TestRepublisherSendsEventsThatNeverReachedKafka(t *testing.T) {
	ctx := context.Background()
	pool, org := poolWithOrg(t)
	old := time.Now().Add(-time.Minute)
	lost := wire.Event{V: 1, ID: ids.NewAt(ids.Event, old), OrganizationID: org, Type: "order.paid", Created: old.Unix(),
		APIVersion: "2026-11-01", Data: json.RawMessage(`{"object":{"id":"o_1"}}`)}
	fresh := lost
	fresh.ID, fresh.Created = ids.New(ids.Event), time.Now().Unix()
	if _, err := InsertPending(ctx, pool, lost, fresh); err != nil {
		t.Fatal(err)
	}
	p := &recordingProducer{}
	r := &Republisher{DB: pool, Producer: p, Topic: "events", Grace: 30 * time.Second}
	n, err := r.Sweep(ctx)
	if err != nil || n != 1 || len(p.got) != 1 {
		t.Fatalf("sweep = %d, %v; produced %d; want only the event older than the grace time", n, err, len(p.got))
	}
	var got wire.Event
	if err := json.Unmarshal(p.got[0].Value, &got); err != nil || got.ID != lost.ID || string(p.got[0].Key) != org {
		t.Fatalf("produced %s (key %s)", p.got[0].Value, p.got[0].Key)
	}
	// A consumer reads it back from Kafka: Insert clears the mark.
	if _, err := Insert(ctx, pool, lost); err != nil {
		t.Fatal(err)
	}
	if n, err := r.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("after the consumer stored it: sweep = %d, %v", n, err)
	}
}

// TestRepublisherBacksOff: an event that stays pending (Kafka down, the
// ingester behind) is produced again once per back-off interval, doubling
// from the grace time up to MaxBackoff, not once per sweep; once a consumer
// has stored it, never again.
func TestRepublisherBacksOff(t *testing.T) {
	ctx := context.Background()
	pool, org := poolWithOrg(t)
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ev := wire.Event{V: 1, ID: ids.NewAt(ids.Event, t0), OrganizationID: org, Type: "order.paid", Created: t0.Unix(),
		APIVersion: "2026-11-01", Data: json.RawMessage(`{"object":{"id":"o_1"}}`)}
	if _, err := InsertPending(ctx, pool, ev); err != nil {
		t.Fatal(err)
	}
	clock := t0
	p := &recordingProducer{}
	r := &Republisher{DB: pool, Producer: p, Topic: "events", Grace: 30 * time.Second,
		MaxBackoff: 5 * time.Minute, Now: func() time.Time { return clock }}

	// Half an hour of sweeps every 10 s: when, after the event's creation,
	// was it produced?
	var sentAt []time.Duration
	for ; clock.Sub(t0) <= 30*time.Minute; clock = clock.Add(10 * time.Second) {
		n, err := r.Sweep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for range n {
			sentAt = append(sentAt, clock.Sub(t0))
		}
	}
	s := time.Second
	want := []time.Duration{30 * s, 90 * s, 210 * s, 450 * s, 750 * s, 1050 * s, 1350 * s, 1650 * s}
	if !slices.Equal(sentAt, want) {
		t.Fatalf("produced at %v after creation; want %v (grace, then doubling, capped at 5m)", sentAt, want)
	}

	// The consumer reads it back from Kafka: no send after that.
	if _, err := Insert(ctx, pool, ev); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(time.Hour)
	if n, err := r.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("after the consumer stored it: sweep = %d, %v", n, err)
	}
}

// TestRepublisherWorksThroughABacklog: with more pending events than one
// sweep takes, the next sweep takes the rest instead of the same oldest
// batch again, so every event is produced.
func TestRepublisherWorksThroughABacklog(t *testing.T) {
	ctx := context.Background()
	pool, org := poolWithOrg(t)
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	evs := make([]wire.Event, sweepBatch+1)
	for i := range evs {
		created := t0.Add(time.Duration(i) * time.Second)
		evs[i] = wire.Event{V: 1, ID: ids.NewAt(ids.Event, created), OrganizationID: org, Type: "order.paid",
			Created: created.Unix(), APIVersion: "2026-11-01", Data: json.RawMessage(`{"object":{"id":"o_1"}}`)}
	}
	if _, err := InsertPending(ctx, pool, evs...); err != nil {
		t.Fatal(err)
	}
	clock := t0.Add(time.Hour)
	p := &recordingProducer{}
	r := &Republisher{DB: pool, Producer: p, Topic: "events", Grace: 30 * time.Second,
		Now: func() time.Time { return clock }}
	for _, want := range []int{sweepBatch, 1, 0} {
		if n, err := r.Sweep(ctx); err != nil || n != want {
			t.Fatalf("sweep = %d, %v; want %d", n, err, want)
		}
		clock = clock.Add(10 * time.Second)
	}
	produced := map[string]bool{}
	for _, m := range p.got {
		var e wire.Event
		if err := json.Unmarshal(m.Value, &e); err != nil {
			t.Fatal(err)
		}
		produced[e.ID] = true
	}
	if len(produced) != len(evs) {
		t.Fatalf("produced %d distinct events of %d", len(produced), len(evs))
	}
}

// poolWithOrg is a fresh database holding one organisation.
func poolWithOrg(t *testing.T) (*pgxpool.Pool, string) {
	t.Helper()
	pool, _ := testenv.Pool(t)
	org := ids.New(ids.Org)
	if _, err := pool.Exec(context.Background(), `INSERT INTO organizations (id, name) VALUES ($1, 'Acme')`, org); err != nil {
		t.Fatal(err)
	}
	return pool, org
}
