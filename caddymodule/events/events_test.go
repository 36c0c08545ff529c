package events

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/gatehouse/gatehouse/caddymodule/internal/caddytest"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/outbox"
	"github.com/gatehouse/gatehouse/internal/testenv"
	"github.com/gatehouse/gatehouse/internal/wire"
)

// The gateway under test is real Caddy, loaded in-process from JSON on a
// loopback port with the admin API off: test identity → emit_events →
// reverse_proxy → an httptest upstream standing for the sample API.

func init() {
	caddy.RegisterModule(testIdentity{})
}

// testIdentity stands in for request_id, api_key and idempotency: it sets
// their placeholders from X-Test-* request headers.
type testIdentity struct{}

func (testIdentity) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.emit_events_test_identity", New: func() caddy.Module { return new(testIdentity) }}
}

func (testIdentity) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	for header, placeholder := range map[string]string{
		"X-Test-Org":         placeholderOrg,
		"X-Test-Livemode":    placeholderLivemode,
		"X-Test-Api-Version": placeholderAPIVersion,
		"X-Test-Request-Id":  placeholderRequestID,
		"X-Test-Idem-Key":    placeholderIdempotencyKey,
		"X-Test-Replayed":    placeholderReplayed,
	} {
		if v := r.Header.Get(header); v != "" {
			repl.Set(placeholder, v)
		}
	}
	if watchClient != nil {
		watchClient(r.Context())
	}
	return next.ServeHTTP(w, r)
}

// watchClient, when a test sets it, is given each request's context as it
// comes from the client, outside emit_events.
var watchClient func(context.Context)

// upstream knows nothing of events. Paths choose its answer.
func upstream(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h := w.Header()
		h.Set("X-Upstream", "sampleapi")
		switch {
		case r.URL.Path == "/v1/customers" && r.Method == http.MethodPost:
			h.Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			fmt.Fprintf(w, "{\n  \"id\": \"cus_1\",\n  \"object\": \"customer\",\n  \"name\": %q\n}\n", body)
		case r.URL.Path == "/v1/customers/missing":
			h.Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":{"type":"invalid_request_error","code":"resource_missing"}}`)
		case strings.HasPrefix(r.URL.Path, "/v1/customers/") && r.Method == http.MethodDelete:
			h.Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"id":%q,"object":"customer","deleted":true}`, strings.TrimPrefix(r.URL.Path, "/v1/customers/"))
		case r.URL.Path == "/v1/text":
			h.Set("Content-Type", "text/plain")
			io.WriteString(w, "created")
		case r.URL.Path == "/v1/list":
			h.Set("Content-Type", "application/json")
			io.WriteString(w, `[{"id":"cus_1"}]`)
		case r.URL.Path == "/v1/big":
			n, _ := strconv.Atoi(r.URL.Query().Get("size"))
			h.Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"blob":%q}`, strings.Repeat("x", n))
		case r.URL.Path == "/v1/gzip":
			h.Set("Content-Type", "application/json")
			h.Set("Content-Encoding", "gzip")
			zw := gzip.NewWriter(w)
			io.WriteString(zw, `{"id":"cus_gz","object":"customer"}`)
			zw.Close()
		case r.URL.Path == "/v1/brotli":
			h.Set("Content-Type", "application/json")
			h.Set("Content-Encoding", "br")
			io.WriteString(w, "\x0b\x02\x80{}\x03")
		case r.URL.Path == "/v1/unstorable":
			// JSON that encoding/json accepts and Postgres' jsonb does not.
			h.Set("Content-Type", "application/json")
			io.WriteString(w, map[string]string{
				"nul":    `{"id":"cus_1","note":"a\u0000b"}`,
				"utf8":   "{\"id\":\"cus_2\",\"name\":\"caf\xe9\"}",
				"number": `{"id":"cus_3","n":1e999999}`,
			}[r.URL.Query().Get("kind")])
		case r.URL.Path == "/v1/replayed":
			h.Set("Content-Type", "application/json")
			h.Set("Idempotent-Replayed", "true")
			io.WriteString(w, `{"id":"cus_r"}`)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// startCaddy loads a config with one server: identity → emit_events (with
// handler's settings) → reverse_proxy to up. Caddy's config is process
// global, so these tests never run in parallel.
func startCaddy(t *testing.T, handler map[string]any, up string) string {
	t.Helper()
	addr := testenv.FreeAddr(t)
	handler["handler"] = "emit_events"
	caddytest.Run(t, addr, map[string]any{"handle": []any{
		map[string]any{"handler": "emit_events_test_identity"},
		handler,
		map[string]any{"handler": "reverse_proxy", "upstreams": []any{map[string]any{"dial": up}}},
	}})
	return "http://" + addr
}

// consumer reads the test topic from the beginning.
type consumer struct {
	t *testing.T
	r *kafka.Reader
}

func newConsumer(t *testing.T, brokers []string, topic string) *consumer {
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, MaxWait: 50 * time.Millisecond})
	t.Cleanup(func() { r.Close() })
	return &consumer{t: t, r: r}
}

func (c *consumer) next() (kafka.Message, wire.Event) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := c.r.ReadMessage(ctx)
	if err != nil {
		c.t.Fatalf("no event arrived: %v", err)
	}
	var ev wire.Event
	if err := json.Unmarshal(m.Value, &ev); err != nil {
		c.t.Fatalf("event %s: %v", m.Value, err)
	}
	return m, ev
}

// call is one client request through the gateway.
type call struct {
	method, path, body string
	header             map[string]string
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, base string, c call) answer {
	t.Helper()
	req, err := http.NewRequest(c.method, base+c.path, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept-Encoding", "identity") // see the raw upstream bytes
	for k, v := range map[string]string{"X-Test-Org": "org_A", "X-Test-Livemode": "false"} {
		req.Header.Set(k, v)
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{status: res.StatusCode, header: res.Header, body: b}
}

var testRules = []map[string]any{
	{"method": "POST", "path": "/v1/customers", "type": "customer.created"},
	{"method": "DELETE", "path": "/v1/customers/{id}", "status": "200", "type": "customer.deleted"},
	{"method": "GET", "path": "/v1/customers/{id}", "type": "customer.viewed"},
	{"method": "POST", "path": "/v1/text", "type": "text.created"},
	{"method": "POST", "path": "/v1/list", "type": "list.created"},
	{"method": "POST", "path": "/v1/big", "type": "big.created"},
	{"method": "POST", "path": "/v1/gzip", "type": "gzip.created"},
	{"method": "POST", "path": "/v1/brotli", "type": "brotli.created"},
	{"method": "POST", "path": "/v1/replayed", "type": "replay.created"},
	{"method": "POST", "path": "/v1/unstorable", "type": "unstorable.created"},
}

func skips(reason string) float64 { return value(metrics.skipped.WithLabelValues(reason)) }
func emits(typ string) float64    { return value(metrics.emitted.WithLabelValues(typ)) }

func value(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

func TestEmitsEventsFromUpstreamResponses(t *testing.T) {
	brokers := testenv.Kafka(t)
	topic := testenv.KafkaTopic(t, brokers, "emit-events", 1)
	base := startCaddy(t, map[string]any{
		"brokers": []string{strings.Join(brokers, ",")}, "spool_dir": t.TempDir(), "topic": topic,
		"max_response_size": 1000, "rules": testRules,
	}, upstream(t))
	c := newConsumer(t, brokers, topic)

	// An event with everything set, and the response unchanged.
	res := do(t, base, call{method: "POST", path: "/v1/customers", body: "Ann <ann@example.com> & co", header: map[string]string{
		"X-Test-Request-Id": "req_1", "X-Test-Idem-Key": "key-1", "X-Test-Api-Version": "2026-06-01", "X-Test-Livemode": "true",
	}})
	if want := "{\n  \"id\": \"cus_1\",\n  \"object\": \"customer\",\n  \"name\": \"Ann <ann@example.com> & co\"\n}\n"; res.status != 200 ||
		string(res.body) != want || res.header.Get("X-Upstream") != "sampleapi" {
		t.Fatalf("client got %d %q %v; the response must pass unchanged", res.status, res.body, res.header)
	}
	m, ev := c.next()
	if string(m.Key) != "org_A" || ev.V != 1 || !ids.Valid(ev.ID, ids.Event) || ev.OrganizationID != "org_A" ||
		!ev.Livemode || ev.Type != "customer.created" || ev.APIVersion != "2026-06-01" ||
		ev.RequestID != "req_1" || ev.IdempotencyKey != "key-1" || time.Since(time.Unix(ev.Created, 0)) > time.Minute {
		t.Fatalf("event key %s: %+v", m.Key, ev)
	}
	// Compacted, and not HTML-escaped (which would inflate the message).
	if want := `{"object":{"id":"cus_1","object":"customer","name":"Ann <ann@example.com> & co"}}`; string(ev.Data) != want ||
		!bytes.Contains(m.Value, []byte(want)) {
		t.Fatalf("data = %s in %s", ev.Data, m.Value)
	}

	// Responses that must produce nothing, then one that does: since the
	// topic has one partition and the producer keeps order, the next event
	// read must be that last one.
	before := map[string]float64{}
	for _, r := range []string{reasonNotJSON, reasonTooLarge, reasonReplayed, reasonEncoding, reasonNoIdentity, reasonNotStored} {
		before[r] = skips(r)
	}
	for _, tc := range []struct {
		name string
		call call
	}{
		{"non-2xx", call{method: "DELETE", path: "/v1/customers/missing"}},
		{"no rule for the method", call{method: "PUT", path: "/v1/customers"}},
		{"no rule for the path", call{method: "POST", path: "/v1/customers/cus_1/extra"}},
		{"not JSON", call{method: "POST", path: "/v1/text"}},
		{"JSON but not an object", call{method: "POST", path: "/v1/list"}},
		{"too large", call{method: "POST", path: "/v1/big?size=2000"}},
		{"unsupported encoding", call{method: "POST", path: "/v1/brotli"}},
		{"replayed (placeholder)", call{method: "POST", path: "/v1/customers", header: map[string]string{"X-Test-Replayed": "true"}}},
		{"replayed (header)", call{method: "POST", path: "/v1/replayed"}},
		{"no organisation", call{method: "POST", path: "/v1/customers", header: map[string]string{"X-Test-Org": ""}}},
		// The event ingester and the deliverer would drop these as
		// malformed: emitting them would only lose them out of sight.
		{"NUL escape", call{method: "POST", path: "/v1/unstorable?kind=nul"}},
		{"invalid UTF-8", call{method: "POST", path: "/v1/unstorable?kind=utf8"}},
		{"number out of range", call{method: "POST", path: "/v1/unstorable?kind=number"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r := do(t, base, tc.call); r.status == 0 {
				t.Fatal("no response")
			}
		})
	}
	for reason, n := range map[string]float64{reasonNotJSON: 2, reasonTooLarge: 1, reasonReplayed: 2, reasonEncoding: 1, reasonNoIdentity: 1, reasonNotStored: 3} {
		if got := skips(reason) - before[reason]; got != n {
			t.Errorf("skipped{reason=%q} grew by %v, want %v", reason, got, n)
		}
	}

	emittedBefore := emits("customer.deleted")
	res = do(t, base, call{method: "DELETE", path: "/v1/customers/cus_9"})
	if res.status != 200 {
		t.Fatalf("delete: %d %s", res.status, res.body)
	}
	_, ev = c.next()
	if ev.Type != "customer.deleted" || string(ev.Data) != `{"object":{"id":"cus_9","object":"customer","deleted":true}}` ||
		ev.Livemode || ev.APIVersion == "" || ev.RequestID != "" || ev.IdempotencyKey != "" {
		t.Fatalf("after the skipped requests, got %+v data %s; want only the delete's event", ev, ev.Data)
	}
	if got := emits("customer.deleted") - emittedBefore; got != 1 {
		t.Errorf("emitted{type=customer.deleted} grew by %v, want 1", got)
	}

	// A gzip body is decoded for the event and passed on compressed.
	res = do(t, base, call{method: "POST", path: "/v1/gzip", header: map[string]string{"Accept-Encoding": "gzip"}})
	if res.header.Get("Content-Encoding") != "gzip" || bytes.Contains(res.body, []byte("cus_gz")) {
		t.Fatalf("gzip response altered: %v %q", res.header, res.body)
	}
	if _, ev = c.next(); ev.Type != "gzip.created" || string(ev.Data) != `{"object":{"id":"cus_gz","object":"customer"}}` {
		t.Fatalf("gzip event %+v %s", ev, ev.Data)
	}
}

// TestKafkaDownDoesNotBlock sends through a gateway whose broker address
// refuses connections: the client is answered at once and the event waits
// in the outbox.
func TestKafkaDownDoesNotBlock(t *testing.T) {
	spool := t.TempDir()
	base := startCaddy(t, map[string]any{
		"brokers": []string{"127.0.0.1:1"}, "spool_dir": spool, "rules": testRules,
	}, upstream(t))
	start := time.Now()
	res := do(t, base, call{method: "POST", path: "/v1/customers", body: "Ann"})
	if res.status != 200 {
		t.Fatalf("status %d", res.status)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("request took %v with Kafka down", d)
	}
	// The response was released only after its event was written to the
	// spool file, where a restarted gateway would find it (the outbox's
	// TestWriteThroughSurvivesAKill): no waiting for it here.
	if st := sharedFor(t, spool).Stats(); st.Enqueued != 1 || st.Sent != 0 || st.Memory != 0 || st.SpoolBytes == 0 {
		t.Fatalf("outbox stats %+v when the client got its answer: want the event on disk, not in memory", st)
	}
}

// TestUpstreamDyingMidBodyShowsNoSuccess: when the backend's response
// breaks off, the held part is not sent: the client gets a 502, not a 2xx
// without an event, nor a dropped connection (request_log then records the
// 502, not a handler's crash).
func TestUpstreamDyingMidBodyShowsNoSuccess(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "5000")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"blob":"`+strings.Repeat("x", 3000))
		http.NewResponseController(w).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	t.Cleanup(srv.Close)
	spool := t.TempDir()
	base := startCaddy(t, map[string]any{
		"brokers": []string{"127.0.0.1:1"}, "spool_dir": spool, "max_response_size": 10000,
		"rules": []map[string]any{{"method": "POST", "path": "/v1/customers", "type": "customer.created"}},
	}, strings.TrimPrefix(srv.URL, "http://"))
	// Nothing of the held response reached the client: it gets the 502 of
	// a failed proxying, not a dropped connection (and no 201 to trust).
	res, err := http.Post(base+"/v1/customers", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatalf("the client got no answer for a response the backend broke off: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusBadGateway || strings.Contains(string(body), "blob") {
		t.Fatalf("the client got %d %q for a response the backend broke off; want a 502 without it", res.StatusCode, body)
	}
	if st := sharedFor(t, spool).Stats(); st.Enqueued != 0 {
		t.Fatalf("outbox stats %+v: an event was produced for a broken response", st)
	}
}

// hangUpBackend stands for a backend still working on a create when its
// client hangs up: it acts only after the gateway saw the client go. With
// answer, it then answers 201; without, it never answers and reports, on
// cancelled, how long after the hang-up the gateway gave up on it.
type hangUpBackend struct {
	addr      string
	arrived   chan struct{}
	cancelled chan time.Duration
}

func newHangUpBackend(t *testing.T, answer bool) *hangUpBackend {
	b := &hangUpBackend{arrived: make(chan struct{}), cancelled: make(chan time.Duration, 1)}
	gone := make(chan struct{})
	watchClient = func(ctx context.Context) { context.AfterFunc(ctx, func() { close(gone) }) }
	t.Cleanup(func() { watchClient = nil })
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		close(b.arrived)
		select {
		case <-gone:
		case <-time.After(10 * time.Second):
			t.Error("the gateway did not see the client hang up")
		}
		if answer {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, `{"id":"cus_late","object":"customer"}`)
			return
		}
		at := time.Now()
		select {
		case <-r.Context().Done():
			b.cancelled <- time.Since(at)
		case <-time.After(10 * time.Second):
			close(b.cancelled)
		}
	}))
	t.Cleanup(srv.Close)
	b.addr = strings.TrimPrefix(srv.URL, "http://")
	return b
}

// hangUp sends a create and hangs up once the backend has it.
func (b *hangUpBackend) hangUp(t *testing.T, base string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/v1/customers", strings.NewReader(`{"name":"Ann"}`))
	req.Header.Set("X-Test-Org", "org_A")
	req.Header.Set("X-Test-Livemode", "false")
	failed := make(chan error, 1)
	go func() {
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			res.Body.Close()
		}
		failed <- err
	}()
	<-b.arrived
	cancel()
	if err := <-failed; err == nil {
		t.Fatal("the client's request succeeded although it hung up")
	}
}

// TestClientHangingUpDoesNotLoseTheEvent: a client that hangs up while
// the backend creates the customer (a timeout, a crash) must not cost the
// event of the create the backend did.
func TestClientHangingUpDoesNotLoseTheEvent(t *testing.T) {
	brokers := testenv.Kafka(t)
	topic := testenv.KafkaTopic(t, brokers, "emit-events-hangup", 1)
	b := newHangUpBackend(t, true)
	base := startCaddy(t, map[string]any{
		"brokers": []string{strings.Join(brokers, ",")}, "spool_dir": t.TempDir(), "topic": topic,
		"rules": []map[string]any{{"method": "POST", "path": "/v1/customers", "type": "customer.created"}},
	}, b.addr)
	c := newConsumer(t, brokers, topic)

	b.hangUp(t, base)
	_, ev := c.next()
	if ev.Type != "customer.created" || !strings.Contains(string(ev.Data), "cus_late") {
		t.Fatalf("event %+v: want customer.created of cus_late", ev)
	}
}

// TestFinishTimeoutBoundsAnAbandonedRequest: a backend that never answers
// a client that is gone is let go finish_timeout after the hang-up, not
// at once and not never.
func TestFinishTimeoutBoundsAnAbandonedRequest(t *testing.T) {
	const grace = 300 * time.Millisecond
	b := newHangUpBackend(t, false)
	base := startCaddy(t, map[string]any{
		"brokers": []string{"127.0.0.1:1"}, "spool_dir": t.TempDir(), "finish_timeout": int64(grace),
		"rules": []map[string]any{{"method": "POST", "path": "/v1/customers", "type": "customer.created"}},
	}, b.addr)

	b.hangUp(t, base)
	after, cancelled := <-b.cancelled
	if !cancelled {
		t.Fatal("the gateway still waited for the backend 10 s after its client hung up")
	}
	if after < grace {
		t.Fatalf("the gateway gave up on the backend %v after the hang-up; want finish_timeout, %v", after, grace)
	}
}

// TestOutliveClientKeepsAnEarlierDeadline: idempotency's bound on a keyed
// request holds inside emit_events.
func TestOutliveClientKeepsAnEarlierDeadline(t *testing.T) {
	dl := time.Now().Add(time.Hour)
	parent, cancel := context.WithDeadline(context.Background(), dl)
	ctx, done := outliveClient(parent, time.Hour)
	if got, ok := ctx.Deadline(); !ok || !got.Equal(dl) {
		t.Fatalf("deadline %v, %v; want %v", got, ok, dl)
	}
	cancel()
	if ctx.Err() != nil {
		t.Fatal("cancelled with the client")
	}
	done()
	if ctx.Err() == nil {
		t.Fatal("done did not end the context")
	}
}

// TestOnlyEventResponsesAreHeld: a response no rule wants streams through
// as the backend flushes it, and so does one that outgrows
// max_response_size (it will make no event); only an event's response is
// held until the event is written.
func TestOnlyEventResponsesAreHeld(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"blob":"%s`, strings.Repeat("x", 1500))
		http.NewResponseController(w).Flush() // chunked: the proxy flushes too
		select {
		case <-release:
		case <-r.Context().Done():
		}
		io.WriteString(w, `"}`)
	}))
	t.Cleanup(srv.Close)
	base := startCaddy(t, map[string]any{
		"brokers": []string{"127.0.0.1:1"}, "spool_dir": t.TempDir(), "max_response_size": 1000,
		"rules": []map[string]any{{"method": "POST", "path": "/v1/big", "type": "big.created"}},
	}, strings.TrimPrefix(srv.URL, "http://"))

	for _, tc := range []struct{ name, method string }{
		{"no rule", "GET"},
		{"rule, but larger than max_response_size", "POST"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, base+"/v1/big", nil)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			got := make(chan error, 1)
			go func() {
				_, err := io.ReadFull(res.Body, make([]byte, 1000))
				got <- err
			}()
			select {
			case err := <-got:
				if err != nil {
					t.Fatalf("reading the first bytes: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the first 1000 bytes did not arrive while the backend was still writing: the response was held")
			}
			release <- struct{}{}
			if _, err := io.ReadAll(res.Body); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// sharedFor finds the producer of a spool directory.
func sharedFor(t *testing.T, dir string) *outbox.Producer {
	t.Helper()
	var p *outbox.Producer
	producers.Range(func(key, value any) bool {
		if key == dir {
			p = value.(*sharedProducer).p
		}
		return true
	})
	if p == nil {
		t.Fatalf("no producer for %s", dir)
	}
	return p
}

func TestSpoolDirSharedOnlyWithTheSameBrokers(t *testing.T) {
	spool := t.TempDir()
	up := upstream(t)
	rules := []map[string]any{{"method": "POST", "path": "/v1/customers", "type": "customer.created"}}
	addr := testenv.FreeAddr(t)
	route := func(brokers string) map[string]any {
		return map[string]any{"handle": []any{
			map[string]any{"handler": "emit_events", "brokers": []string{brokers}, "spool_dir": spool, "rules": rules},
			map[string]any{"handler": "reverse_proxy", "upstreams": []any{map[string]any{"dial": up}}},
		}}
	}
	cfg := map[string]any{
		"admin": map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
		"apps": map[string]any{"http": map[string]any{"servers": map[string]any{"srv0": map[string]any{
			"listen": []string{addr}, "automatic_https": map[string]any{"disable": true},
			"routes": []any{route("127.0.0.1:9092"), route("127.0.0.1:9093")},
		}}}},
	}
	raw, _ := json.Marshal(cfg)
	err := caddy.Load(raw, true)
	if err == nil {
		_ = caddy.Stop()
		t.Fatal("two handlers with one spool_dir and different brokers loaded")
	}
	if !strings.Contains(err.Error(), "is already used with brokers 127.0.0.1:9092") {
		t.Fatalf("error %q does not explain the conflict", err)
	}
	// The failed load released everything it acquired.
	producers.Range(func(key, _ any) bool {
		if key == spool {
			t.Errorf("producer for %s still held after the failed load", spool)
		}
		return true
	})
}

func TestValidateRefusesBadJSONConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    Handler
		want string
	}{
		{"no rules", Handler{}, "no rules"},
		{"bad rule", Handler{Rules: []Rule{{Method: "POST", Path: "/v1/x", Type: "x"}}}, `rule 1: event type "x"`},
		{"duplicate", Handler{Rules: []Rule{{Method: "POST", Path: "/v1/{a}", Type: "a.b"}, {Method: "POST", Path: "/v1/{b}", Status: "2xx", Type: "c.d"}}}, "rule 2 (POST /v1/{b} 2xx) repeats rule 1"},
		{"size", Handler{MaxResponseSize: 2_000_000, Rules: []Rule{{Method: "POST", Path: "/v1/x", Type: "a.b"}}}, "max_response_size must be between 1 and 1000000"},
		{"shadowed status", Handler{Rules: []Rule{{Method: "POST", Path: "/v1/customers", Status: "2xx", Type: "customer.created"},
			{Method: "POST", Path: "/v1/customers", Status: "201", Type: "customer.made"}}}, "rule 2 (POST /v1/customers 201) can never apply: rule 1"},
		{"shadowed path", Handler{Rules: []Rule{{Method: "POST", Path: "/v1/customers/{id}", Type: "customer.updated"},
			{Method: "POST", Path: "/v1/customers/search", Type: "customer.searched"}}}, "rule 2 (POST /v1/customers/search 2xx) can never apply: rule 1"},
		{"topic", Handler{Topic: "bad topic/name", Rules: []Rule{{Method: "POST", Path: "/v1/x", Type: "a.b"}}}, `topic "bad topic/name" is not a Kafka topic name`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.h.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// The topic's placeholders are expanded when the config loads, as
// request_log's are: {env.KAFKA_TOPIC_EVENTS} is not sent to Kafka as is.
func TestTopicPlaceholderIsExpanded(t *testing.T) {
	t.Setenv("GATEHOUSE_TEST_EVENTS_TOPIC", "tenant-a.events.v1")
	h := Handler{Topic: "{env.GATEHOUSE_TEST_EVENTS_TOPIC}", SpoolDir: t.TempDir(), Brokers: []string{"127.0.0.1:1"},
		Rules: []Rule{{Method: "POST", Path: "/v1/x", Type: "a.b"}}}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = h.Cleanup() }()
	if err := h.Validate(); err != nil || h.topic != "tenant-a.events.v1" {
		t.Fatalf("topic %q, Validate() = %v", h.topic, err)
	}
}

func TestRuleMatching(t *testing.T) {
	cr, err := compileRule(Rule{Method: "POST", Path: "/v1/customers/{id}/notes/{note}", Type: "note.created", Status: "201"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want bool
	}{
		{"/v1/customers/cus_1/notes/n_1", true},
		{"/v1/customers/cus%2F1/notes/n_1", true},
		{"/v1/customers//notes/n_1", false},
		{"/v1/customers/cus_1/notes", false},
		{"/v1/customers/cus_1/notes/n_1/x", false},
		// Cleaned and compared without case, as Caddy's path matchers let
		// these through to a backend that may route them as the rule's.
		{"/v1/customers/cus_1/notes/n_1/", true},
		{"/v1/Customers/cus_1/NOTES/n_1", true},
		{"//v1/customers/cus_1/notes/n_1", true},
		{"/v1/./customers/cus_1/notes/n_1/.", true},
		{"/v1/x/../customers/cus_1/notes/n_1", true},
		{"/v1/customers/cus_1/notes/%2E%2E/n_1", false},
		// An escaped dot is a segment's name to a backend that unescapes
		// each segment: this is a note called "..", not a customer.
		{"/v1/customers/cus_1/notes/n_1/%2E%2E", false},
		{"/v1/customers/cus_1/notes/%2E%2E", true},
		{"/../../v1/customers/cus_1/notes/n_1", true},
		// The backend unescapes each segment before routing: this is its
		// POST /v1/customers/{id}/notes/{note}, and the event must follow.
		{"/v1/%63ustomers/cus_1/notes/n_1", true},
		{"/v1/customers/cus_1/%6Eotes/n_1", true},
		{"/v1/customers/cus_1/notes%2Fn_1", false},
	} {
		h := &Handler{rules: []rule{cr}}
		if got := len(h.candidates(httptest.NewRequest("POST", tc.path, nil))) == 1; got != tc.want {
			t.Errorf("%s: match = %v, want %v", tc.path, got, tc.want)
		}
	}
	for status, want := range map[int]bool{200: false, 201: true, 204: false} {
		if cr.matchStatus(status) != want {
			t.Errorf("status %d: match = %v", status, !want)
		}
	}
}

// A bug behind emit_events (a panic other than reverse_proxy's abort) is
// logged with the stack of where it happened before it goes on: the panic
// net/http then logs is raised again here, and would name only this handler.
func TestPanicBehindIsLoggedWithItsOrigin(t *testing.T) {
	cr, err := compileRule(Rule{Method: "POST", Path: "/v1/customers", Type: "customer.created"})
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.ErrorLevel)
	h := &Handler{rules: []rule{cr}, MaxResponseSize: 1000, now: time.Now, logger: zap.New(core)}
	r := httptest.NewRequest("POST", "/v1/customers", nil)
	func() {
		defer func() {
			if recover() == nil {
				t.Error("the panic did not go on")
			}
		}()
		_ = h.ServeHTTP(httptest.NewRecorder(), r, caddyhttp.HandlerFunc(buggyBackend))
	}()
	entries := logs.All()
	if len(entries) != 1 || !strings.Contains(fmt.Sprint(entries[0].ContextMap()["stack"]), "buggyBackend") {
		t.Fatalf("logged %+v, want the panic with a stack through buggyBackend", entries)
	}
}

func buggyBackend(w http.ResponseWriter, r *http.Request) error {
	var m map[string]int
	m["boom"] = 1
	return nil
}
