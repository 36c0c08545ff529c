package events

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap/zaptest"

	"github.com/gatehouse/gatehouse/controlplane/router"
	"github.com/gatehouse/gatehouse/controlplane/server"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/outbox"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

var testSecret = []byte("events-test-identity-secret")

// Callers. orgA sandbox is the default tenant; the others must never see
// its events.
var (
	orgA     = identity.Identity{OrgID: "org_A", KeyID: "key_A", Scopes: []string{"*"}, APIVersion: "2026-11-01"}
	orgALive = identity.Identity{OrgID: "org_A", Livemode: true, KeyID: "key_AL", Scopes: []string{"*"}, APIVersion: "2026-11-01"}
	orgB     = identity.Identity{OrgID: "org_B", KeyID: "key_B", Scopes: []string{"*"}, APIVersion: "2026-11-01"}
)

// env is the events API on a fresh database, producing to a fresh topic.
type env struct {
	t       *testing.T
	pool    *pgxpool.Pool
	brokers []string
	topic   string
	handler http.Handler
	clock   *clock
}

// clock is a settable time source.
type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

func newEnv(t *testing.T) *env {
	t.Helper()
	pool, _ := testenv.Pool(t)
	brokers := testenv.Kafka(t)
	e := &env{t: t, pool: pool, brokers: brokers, topic: testenv.KafkaTopic(t, brokers, "events", 1),
		clock: &clock{now: time.Now().Truncate(time.Second)}}
	for _, org := range []string{"org_A", "org_B"} {
		if _, err := pool.Exec(context.Background(), `INSERT INTO organizations (id, name) VALUES ($1, $1)`, org); err != nil {
			t.Fatal(err)
		}
	}
	prod := newProducer(t, brokers)
	api := NewAPI(Config{DB: pool, Producer: prod, Topic: e.topic, Logger: zaptest.NewLogger(t), Now: e.clock.Now})
	e.handler = server.New(server.Config{IdentitySecret: testSecret, API: []router.Routes{api}, Logger: zaptest.NewLogger(t)}).Handler()
	return e
}

// newProducer is a running outbox producer on the test Kafka.
func newProducer(t *testing.T, brokers []string) *outbox.Producer {
	t.Helper()
	ks := outbox.NewKafkaSender(brokers)
	p, err := outbox.New(outbox.Config{Dir: t.TempDir(), Linger: time.Millisecond}, ks)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = p.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; _ = ks.Close() })
	return p
}

// readMessages reads n messages from partition 0 of topic.
func readMessages(t *testing.T, brokers []string, topic string, n int) []kafka.Message {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []kafka.Message
	for len(out) < n {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("reading message %d of %d from %s: %v", len(out)+1, n, topic, err)
		}
		out = append(out, m)
	}
	return out
}

type response struct {
	status int
	header http.Header
	raw    []byte
}

// do signs a request as id and serves it; header holds extra header
// name/value pairs.
func (e *env) do(id identity.Identity, method, target, contentType, body string, header ...string) response {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r := httptest.NewRequest(method, target, rd)
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	id.RequestID = ids.New(ids.Request)
	identity.NewSigner(testSecret, nil).Apply(r, id)
	w := httptest.NewRecorder()
	e.handler.ServeHTTP(w, r)
	return response{status: w.Code, header: w.Header(), raw: w.Body.Bytes()}
}

func (e *env) get(id identity.Identity, target string) response {
	e.t.Helper()
	return e.do(id, http.MethodGet, target, "", "")
}

func (e *env) postJSON(id identity.Identity, target, body string) response {
	e.t.Helper()
	return e.do(id, http.MethodPost, target, "application/json", body)
}

func (r response) decode(t *testing.T, status int, v any) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d; body: %s", r.status, status, r.raw)
	}
	if err := json.Unmarshal(r.raw, v); err != nil {
		t.Fatalf("decoding %s: %v", r.raw, err)
	}
}

type wantError struct {
	status int
	code   string
	param  string
}

func (r response) assertError(t *testing.T, want wantError) {
	t.Helper()
	if r.status != want.status {
		t.Fatalf("status = %d, want %d; body: %s", r.status, want.status, r.raw)
	}
	var body struct {
		Error map[string]string `json:"error"`
	}
	if err := json.Unmarshal(r.raw, &body); err != nil || body.Error == nil {
		t.Fatalf("not an error object: %s", r.raw)
	}
	if body.Error["code"] != want.code || body.Error["param"] != want.param {
		t.Errorf("error code %q param %q, want %q %q; message: %s",
			body.Error["code"], body.Error["param"], want.code, want.param, body.Error["message"])
	}
	if body.Error["message"] == "" || body.Error["request_id"] == "" {
		t.Errorf("error without message or request_id: %s", r.raw)
	}
}

// eventJSON is the event object as a client decodes it.
type eventJSON struct {
	ID         string          `json:"id"`
	Object     string          `json:"object"`
	Type       string          `json:"type"`
	Created    int64           `json:"created"`
	Livemode   bool            `json:"livemode"`
	APIVersion string          `json:"api_version"`
	Data       json.RawMessage `json:"data"`
	Request    struct {
		ID             *string `json:"id"`
		IdempotencyKey *string `json:"idempotency_key"`
	} `json:"request"`
	Deliveries *DeliverySummary `json:"deliveries"`
}

type eventList struct {
	Object  string      `json:"object"`
	URL     string      `json:"url"`
	HasMore bool        `json:"has_more"`
	Data    []eventJSON `json:"data"`
}

func (e *env) count(sql string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// waitFor polls cond until it holds or 30 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
