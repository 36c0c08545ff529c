package requestlog

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/gatehouse/gatehouse/internal/outbox"
	"github.com/gatehouse/gatehouse/internal/redact"
)

type discard struct{}

func (discard) Send(context.Context, []outbox.Message) error { return nil }

// BenchmarkServeHTTP is the cost request_log adds to a request: redaction,
// the record, its JSON and the enqueue (Kafka is replaced by a sender that
// accepts everything).
func BenchmarkServeHTTP(b *testing.B) {
	p, err := outbox.New(outbox.Config{Dir: b.TempDir()}, discard{})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = p.Run(ctx) }()
	defer cancel()
	tp, _ := parseTemplate("/v1/customers/{id}")
	h := &Handler{MaxBodyCapture: DefaultMaxBodyCapture, redactor: redact.New(redact.Config{}), templates: []template{tp},
		topic: "bench", producer: &sharedProducer{Producer: p}, logger: caddy.Log()}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "application/json")
		_, err := w.Write([]byte(`{"object":"customer","id":"cus_9Xk2Ab77QQzz"}`))
		return err
	})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req := httptest.NewRequest("GET", "/v1/customers/cus_9Xk2Ab77QQzz?expand=x", nil)
		req.Header.Set("Authorization", "Bearer sk_test_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")
		req.Header.Set("User-Agent", "gatehouse-go/1.4.0")
		repl := caddy.NewReplacer()
		repl.Set(PlaceholderOrgID, "org_A")
		repl.Set(PlaceholderKeyID, "key_A")
		req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, repl))
		if err := h.ServeHTTP(httptest.NewRecorder(), req, next); err != nil {
			b.Fatal(err)
		}
	}
}
