package requestlog

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/gatehouse/gatehouse/internal/outbox"
	"github.com/gatehouse/gatehouse/internal/redact"
	"github.com/gatehouse/gatehouse/internal/wire"
	"github.com/klauspost/compress/zstd"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestRoute(t *testing.T) {
	var templates []template
	for _, s := range []string{"/v1/customers/{id}", "/v1/customers/search", "/v1/customers", "/v1/events/{id}/retry"} {
		tp, err := parseTemplate(s)
		if err != nil {
			t.Fatal(err)
		}
		templates = append(templates, tp)
	}
	for _, tc := range []struct {
		path, want string
		configured bool
	}{
		{"/v1/customers/cus_9Xk2Ab77QQzz", "/v1/customers/{id}", true},
		{"/v1/customers/search", "/v1/customers/search", true}, // the literal wins
		{"/v1/customers", "/v1/customers", true},
		{"/v1/customers/", "/v1/customers/", false}, // an empty segment is no id
		{"/v1/events/evt_0VcAX19jD7oyfEjapKn0S4/retry", "/v1/events/{id}/retry", true},
		{"/v1/orders/12345/items/550e8400-e29b-41d4-a716-446655440000", "/v1/orders/{id}/items/{id}", false},
		{"/v1/webhook_endpoints/we_3Fj29dkQ0a", "/v1/webhook_endpoints/{id}", false},
		{"/v1/blobs/deadbeefdeadbeefdeadbeef", "/v1/blobs/{id}", false},
		{"/v1/users/me", "/v1/users/me", false},
		{"/", "/", false},
	} {
		t.Run(tc.path, func(t *testing.T) {
			got, configured := route(templates, tc.path)
			if got != tc.want || configured != tc.configured {
				t.Fatalf("route(%q) = %q, %v; want %q, %v", tc.path, got, configured, tc.want, tc.configured)
			}
		})
	}
}

func TestRouteLabelsAreBounded(t *testing.T) {
	var l routeLabels
	if got := l.label("/v1/customers/{id}", true, 200); got != "/v1/customers/{id}" {
		t.Fatalf("configured route labelled %q", got)
	}
	if got := l.label("/v1/anything", false, 404); got != "other" {
		t.Fatalf("a 404 labelled %q", got)
	}
	// Refusals on made-up paths (a scanner without a key) use up nothing.
	for i := 0; i < maxDerived+50; i++ {
		if got := l.label(fmt.Sprintf("/v1/scan%d", i), false, 401); got != "other" {
			t.Fatalf("a 401 on a new route labelled %q", got)
		}
	}
	for i := 0; i < maxDerived+50; i++ {
		l.label(fmt.Sprintf("/v1/r%d", i), false, 200)
	}
	if got := l.label("/v1/r7", false, 500); got != "/v1/r7" {
		t.Fatalf("an error on a known route labelled %q", got)
	}
	if got := l.label("/v1/r5", false, 200); got != "/v1/r5" {
		t.Fatalf("an early route labelled %q", got)
	}
	if got := l.label("/v1/new", false, 200); got != "other" {
		t.Fatalf("a route past the bound labelled %q", got)
	}
}

func TestRecorderDecodes(t *testing.T) {
	body := []byte(`{"error":{"type":"api_error","code":"internal_error","message":"` + strings.Repeat("x", 10000) + `"}}`)
	var gz, zs bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(body)
	_ = zw.Close()
	enc, _ := zstd.NewWriter(&zs)
	_, _ = enc.Write(body)
	_ = enc.Close()
	for _, tc := range []struct {
		encoding string
		payload  []byte
	}{{"", body}, {"gzip", gz.Bytes()}, {"zstd", zs.Bytes()}} {
		t.Run("encoding "+tc.encoding, func(t *testing.T) {
			w := httptest.NewRecorder()
			w.Header().Set("Content-Type", "application/json")
			if tc.encoding != "" {
				w.Header().Set("Content-Encoding", tc.encoding)
			}
			rec := &recorder{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, maxBody: 8192}
			rec.WriteHeader(500)
			_, _ = rec.Write(tc.payload)
			if eo := rec.errorObject(); eo.Type != "" || eo.Code != "" || eo.Message != "" {
				// The object is longer than the peek, so it cannot be parsed:
				// that must come out empty, not wrong.
				t.Fatalf("truncated object parsed as %+v", eo)
			}
			out, truncated := rec.decoded()
			if !truncated || len(out) != errorPeek || !bytes.HasPrefix(body, out) {
				t.Fatalf("decoded %d bytes (truncated %v)", len(out), truncated)
			}
			if rec.bytes != int64(len(tc.payload)) || w.Body.Len() != len(tc.payload) || rec.status != 500 {
				t.Fatalf("bytes %d, status %d", rec.bytes, rec.status)
			}
		})
	}
	t.Run("a short error object", func(t *testing.T) {
		w := httptest.NewRecorder()
		w.Header().Set("Content-Type", "application/problem+json")
		rec := &recorder{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}}
		rec.WriteHeader(429)
		_, _ = rec.Write([]byte(`{"error":{"type":"rate_limit_error",`))
		_, _ = rec.Write([]byte(`"code":"rate_limited","message":"Slow down."}}`))
		if eo := rec.errorObject(); eo.Type != "rate_limit_error" || eo.Code != "rate_limited" || eo.Message != "Slow down." {
			t.Fatalf("got %+v", eo)
		}
	})
	t.Run("a message or param of another shape", func(t *testing.T) {
		for _, body := range []string{
			`{"error":{"type":"invalid_request_error","code":"parameter_invalid","param":["email","name"],"message":"Invalid."}}`,
			`{"error":{"type":"invalid_request_error","code":"parameter_invalid","message":{"en":"Invalid."},"param":"email"}}`,
			`{"error":{"type":"invalid_request_error","code":"parameter_invalid","request_id":12345,"doc_url":false,"message":"Invalid.","param":"email"}}`,
		} {
			w := httptest.NewRecorder()
			w.Header().Set("Content-Type", "application/json")
			rec := &recorder{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}}
			rec.WriteHeader(400)
			_, _ = rec.Write([]byte(body))
			eo := rec.errorObject()
			if eo.Type != "invalid_request_error" || eo.Code != "parameter_invalid" {
				t.Errorf("%s: type and code lost: %+v", body, eo)
			}
			if strings.Contains(body, `"message":"Invalid."`) != (eo.Message == "Invalid.") ||
				strings.Contains(body, `"param":"email"`) != (eo.Param == "email") {
				t.Errorf("%s: message %q, param %q", body, eo.Message, eo.Param)
			}
		}
	})
	t.Run("successes keep nothing", func(t *testing.T) {
		w := httptest.NewRecorder()
		w.Header().Set("Content-Type", "application/json")
		rec := &recorder{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, maxBody: 8192}
		_, _ = rec.Write(body)
		if len(rec.buf) != 0 || rec.status != 200 {
			t.Fatalf("kept %d bytes of a 200 without capture", len(rec.buf))
		}
	})
}

type capture chan []outbox.Message

func (c capture) Send(_ context.Context, ms []outbox.Message) error {
	c <- ms
	return nil
}

// The largest bodies max_body_capture allows, made of characters JSON
// escapes to six bytes, still give a record that fits in one Kafka message
// (one over outbox.MaxMessageBytes would be dropped whole): the bodies are
// cut instead.
func TestRecordWithLargeBodiesFitsInAKafkaMessage(t *testing.T) {
	sent := make(capture, 16)
	p, err := outbox.New(outbox.Config{Dir: t.TempDir()}, sent)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = p.Run(ctx) }()
	defer cancel()
	h := &Handler{MaxBodyCapture: MaxMaxBodyCapture, redactor: redact.New(redact.Config{}), topic: "t",
		producer: &sharedProducer{Producer: p}, logger: caddy.Log()}
	body := `{"description":"` + strings.Repeat("<", 600_000) + `"}`
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return err
		}
		w.Header().Set("Content-Type", "application/json")
		_, err = w.Write(b)
		return err
	})
	req := httptest.NewRequest("POST", "/v1/customers", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	repl := caddy.NewReplacer()
	repl.Set(PlaceholderOrgID, "org_A")
	repl.Set(PlaceholderBodyCapture, "true")
	req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, repl))
	if err := h.ServeHTTP(httptest.NewRecorder(), req, next); err != nil {
		t.Fatal(err)
	}
	select {
	case ms := <-sent:
		var l wire.RequestLog
		if err := json.Unmarshal(ms[0].Value, &l); err != nil {
			t.Fatal(err)
		}
		if n := len(ms[0].Key) + len(ms[0].Value); n > outbox.MaxMessageBytes {
			t.Errorf("record of %d bytes", n)
		}
		for name, b := range map[string]string{"request": l.RequestBody, "response": l.ResponseBody} {
			if len(b) < 50_000 || !strings.HasPrefix(b, `{"description":"<<<`) || !strings.HasSuffix(b, "…") {
				t.Errorf("%s body: %d bytes, %.30q … %q", name, len(b), b, b[max(0, len(b)-10):])
			}
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no record sent: dropped")
	}
}

// A config loaded while a producer runs (a reload) shares it and its
// limits; when its own limits differ, it says so instead of ignoring them.
func TestReloadedLimitsAreNotIgnoredSilently(t *testing.T) {
	dir := t.TempDir()
	brokers := []string{"127.0.0.1:1"}
	first, err := acquireProducer(brokers, dir, 10, 1<<20, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = releaseProducer(brokers, dir) }()
	core, logs := observer.New(zap.WarnLevel)
	second, err := acquireProducer(brokers, dir, 5000, 2<<30, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = releaseProducer(brokers, dir) }()
	if second != first {
		t.Fatal("a second config did not share the running producer")
	}
	if w := logs.FilterMessageSnippet("new ones apply from the next start").All(); len(w) != 1 {
		t.Fatalf("warnings: %v", logs.All())
	}
	if _, err := acquireProducer(brokers, dir, 10, 1<<20, zap.New(core)); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = releaseProducer(brokers, dir) }()
	if n := logs.Len(); n != 1 {
		t.Fatalf("the same limits warned too: %d warnings", n)
	}
}

// Two spellings of one spool directory share one producer: the spool is
// locked by the process that holds it, so a second producer on it would be
// refused (the process's own pid named as "another process").
func TestSpellingsOfOneSpoolDirShareAProducer(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	var hs []*Handler
	for _, d := range []string{dir, dir + "/", dir + "/./"} {
		h := &Handler{Brokers: []string{"127.0.0.1:1"}, SpoolDir: d}
		if err := h.Provision(ctx); err != nil {
			t.Fatalf("spool_dir %q: %v", d, err)
		}
		defer func() { _ = h.Cleanup() }()
		hs = append(hs, h)
	}
	if hs[0].producer != hs[1].producer || hs[1].producer != hs[2].producer {
		t.Fatal("one directory, several producers")
	}
}

// KAFKA_BROKERS is read as every other process reads it (internal/config):
// "a:9092, b:9092" is two brokers. Split on commas alone, the second was
// " b:9092", which cannot be dialled.
func TestBrokersFromTheEnvironmentAreTrimmed(t *testing.T) {
	t.Setenv("KAFKA_BROKERS", "127.0.0.1:1, 127.0.0.1:2,")
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &Handler{SpoolDir: t.TempDir()}
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = h.Cleanup() }()
	if !slices.Equal(h.brokers, []string{"127.0.0.1:1", "127.0.0.1:2"}) {
		t.Fatalf("brokers from KAFKA_BROKERS = %q", h.brokers)
	}
}
