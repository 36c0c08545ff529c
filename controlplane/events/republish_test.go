package events

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

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
	pool, _ := testenv.Pool(t)
	org := ids.New(ids.Org)
	if _, err := pool.Exec(ctx, `INSERT INTO organizations (id, name) VALUES ($1, 'Acme')`, org); err != nil {
		t.Fatal(err)
	}
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
