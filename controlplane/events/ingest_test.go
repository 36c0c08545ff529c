package events

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap/zaptest"

	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/testenv"
	"github.com/gatehouse/gatehouse/internal/wire"
)

func testEvent(org, typ string) wire.Event {
	return wire.Event{V: 1, ID: ids.New(ids.Event), OrganizationID: org, Type: typ, Created: time.Now().Unix(),
		APIVersion: "2026-11-01", Data: json.RawMessage(`{"object":{"id":"cus_1"}}`), RequestID: ids.New(ids.Request)}
}

func encode(t *testing.T, e wire.Event) []byte {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// produce writes raw values to topic, keyed like the real producers.
func produce(t *testing.T, brokers []string, topic string, values ...[]byte) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer w.Close()
	msgs := make([]kafka.Message, len(values))
	for i, v := range values {
		msgs[i] = kafka.Message{Key: []byte("org_A"), Value: v}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		err := w.WriteMessages(ctx, msgs...)
		if err == nil {
			return
		}
		// A topic just created may not be known to every metadata path yet.
		if !errors.Is(err, kafka.UnknownTopicOrPartition) || ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// committed is the group's committed offset on partition 0 of topic (-1
// when nothing was committed).
func committed(t *testing.T, brokers []string, group, topic string) int64 {
	t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(brokers...)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: {0}}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Error != nil {
		t.Fatal(res.Error)
	}
	parts := res.Topics[topic]
	if len(parts) != 1 {
		t.Fatalf("offset fetch returned %+v", res.Topics)
	}
	return parts[0].CommittedOffset
}

// startWorker runs an ingester until the test ends (or stop is called).
func startWorker(t *testing.T, e *env, group string) (w *Worker, stop func()) {
	t.Helper()
	w, err := NewWorker(WorkerConfig{Brokers: e.brokers, Topic: e.topic, GroupID: group, DB: e.pool,
		RetryEvery: 10 * time.Millisecond, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	}
	t.Cleanup(stop)
	return w, stop
}

func TestIngesterIsIdempotentAndSkipsMalformed(t *testing.T) {
	e := newEnv(t)
	group := "test-events-" + testenv.Suffix()

	viaAPI := testEvent("org_A", "customer.created")
	// The API stores its events before producing them; the ingester's copy
	// must be a no-op.
	if _, err := Insert(context.Background(), e.pool, viaAPI); err != nil {
		t.Fatal(err)
	}
	twice := testEvent("org_B", "customer.updated")
	badType := testEvent("org_A", "Customer")
	nul := testEvent("org_A", "customer.created")
	nul.Data = json.RawMessage(`{"object":{"name":"a\u0000b"}}`)
	noObject := testEvent("org_A", "customer.created")
	noObject.Data = json.RawMessage(`{"id":"cus_1"}`)
	unknownOrg := testEvent("org_gone", "customer.created")
	produce(t, e.brokers, e.topic,
		encode(t, viaAPI), encode(t, twice), encode(t, twice),
		[]byte("not json"), encode(t, badType), encode(t, nul), encode(t, noObject),
		encode(t, unknownOrg))

	w, stop := startWorker(t, e, group)
	waitFor(t, "offsets committed past all 8 messages", func() bool { return committed(t, e.brokers, group, e.topic) == 8 })
	stop()

	if n := e.count(`SELECT count(*) FROM events`); n != 2 {
		t.Fatalf("%d event rows, want 2 (one per valid event id)", n)
	}
	if n := e.count(`SELECT count(*) FROM events WHERE id = $1 AND organization_id = 'org_B' AND type = 'customer.updated'
		AND data::text = '{"object":{"id":"cus_1"}}' AND request_id = $2`, twice.ID, twice.RequestID); n != 1 {
		t.Fatalf("ingested event not stored as sent")
	}
	if st := w.Stats(); st.Consumed != 8 || st.Inserted != 1 || st.Malformed != 4 {
		t.Fatalf("stats = %+v, want 8 consumed, 1 inserted, 4 malformed", st)
	}

	// A restarted ingester in the same group resumes after the commit.
	later := testEvent("org_A", "customer.deleted")
	produce(t, e.brokers, e.topic, encode(t, later))
	w2, _ := startWorker(t, e, group)
	waitFor(t, "the new event", func() bool { return e.count(`SELECT count(*) FROM events WHERE id = $1`, later.ID) == 1 })
	waitFor(t, "the commit", func() bool { return committed(t, e.brokers, group, e.topic) == 9 })
	if st := w2.Stats(); st.Consumed != 1 {
		t.Fatalf("restarted worker consumed %d messages, want only the new one", st.Consumed)
	}
}

func TestIngesterCommitsOffsetsOnlyAfterInsert(t *testing.T) {
	e := newEnv(t)
	group := "test-events-" + testenv.Suffix()
	ctx := context.Background()

	// Hold the events table so the ingester's insert has to wait.
	lock, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(ctx)
	if _, err := lock.Exec(ctx, `LOCK TABLE events IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	produce(t, e.brokers, e.topic,
		encode(t, testEvent("org_A", "customer.created")),
		encode(t, testEvent("org_A", "customer.updated")),
		encode(t, testEvent("org_A", "customer.deleted")))
	startWorker(t, e, group)

	waitFor(t, "the ingester's insert to block on the lock", func() bool {
		return e.count(`SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO events%'`) > 0
	})
	if off := committed(t, e.brokers, group, e.topic); off >= 0 {
		t.Fatalf("offset %d committed while the insert has not committed", off)
	}
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the commit", func() bool { return committed(t, e.brokers, group, e.topic) == 3 })
	if n := e.count(`SELECT count(*) FROM events`); n != 3 {
		t.Fatalf("%d rows after commit, want 3", n)
	}
}

func TestValidate(t *testing.T) {
	ok := testEvent("org_A", "customer.created")
	for _, tc := range []struct {
		name   string
		change func(*wire.Event)
		valid  bool
	}{
		{"valid", func(*wire.Event) {}, true},
		{"newer schema version", func(e *wire.Event) { e.V = 2 }, true},
		{"no request", func(e *wire.Event) { e.RequestID = "" }, true},
		{"no version", func(e *wire.Event) { e.V = 0 }, false},
		{"bad id", func(e *wire.Event) { e.ID = "cus_1" }, false},
		{"no org", func(e *wire.Event) { e.OrganizationID = "" }, false},
		{"NUL in org", func(e *wire.Event) { e.OrganizationID = "org\x00" }, false},
		{"bad type", func(e *wire.Event) { e.Type = "x" }, false},
		{"no created", func(e *wire.Event) { e.Created = 0 }, false},
		{"no api version", func(e *wire.Event) { e.APIVersion = "" }, false},
		{"long idempotency key", func(e *wire.Event) { e.IdempotencyKey = string(make([]byte, 256)) }, false},
		{"data not an object", func(e *wire.Event) { e.Data = json.RawMessage(`[1]`) }, false},
		{"data.object not an object", func(e *wire.Event) { e.Data = json.RawMessage(`{"object":1}`) }, false},
		{"escaped backslash is not NUL", func(e *wire.Event) { e.Data = json.RawMessage(`{"object":{"p":"C:\\u0000"}}`) }, true},
		{"NUL in a key", func(e *wire.Event) { e.Data = json.RawMessage(`{"object":{"a\u0000":1}}`) }, false},
		{"invalid UTF-8", func(e *wire.Event) { e.Data = json.RawMessage("{\"object\":{\"a\":\"\xff\"}}") }, false},
		{"surrogate pair", func(e *wire.Event) { e.Data = json.RawMessage(`{"object":{"a":"\ud83d\ude00"}}`) }, true},
		{"lone high surrogate", func(e *wire.Event) { e.Data = json.RawMessage(`{"object":{"a":"\ud83dx"}}`) }, false},
		{"lone low surrogate", func(e *wire.Event) { e.Data = json.RawMessage(`{"object":{"a":"\ude00"}}`) }, false},
		{"high surrogate at the end", func(e *wire.Event) { e.Data = json.RawMessage(`{"object":{"a":"\ud83d"}}`) }, false},
		{"big number", func(e *wire.Event) { e.Data = json.RawMessage(`{"object":{"n":1e131071,"m":-0.0001e131075}}`) }, true},
		{"small number", func(e *wire.Event) { e.Data = json.RawMessage(`{"object":{"n":1.5e-16382,"z":0e99999999}}`) }, true},
		{"number too big", func(e *wire.Event) { e.Data = json.RawMessage(`{"object":{"n":12e131071}}`) }, false},
		{"number too small", func(e *wire.Event) { e.Data = json.RawMessage(`{"object":{"n":[1e-16384]}}`) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := ok
			tc.change(&e)
			if err := Validate(e); (err == nil) != tc.valid {
				t.Fatalf("Validate = %v, want valid %v", err, tc.valid)
			}
		})
	}
}
