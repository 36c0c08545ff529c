package requestid

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/apikey"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/redact"
)

func newHandler(t *testing.T) *Handler {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(func() { cancel() })
	h := new(Handler)
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	h.logger = zap.NewNop()
	return h
}

// newRequest is a request as Caddy's server hands it to handlers.
func newRequest(method, target string) (*http.Request, *caddy.Replacer) {
	r := httptest.NewRequest(method, target, nil)
	repl := caddy.NewReplacer()
	ctx := context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl)
	ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{})
	return r.WithContext(ctx), repl
}

func TestAssignsAFreshIDEverywhere(t *testing.T) {
	h := newHandler(t)
	r, repl := newRequest("GET", "/v1/customers")
	r.Header.Set("Request-Id", "req_client_chosen")
	var upstream string
	rec := httptest.NewRecorder()
	err := h.ServeHTTP(rec, r, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		upstream = r.Header.Get("Request-Id")
		w.Header().Add("Request-Id", upstream) // an upstream echoing it, as reverse_proxy copies with Add
		w.Header().Add("Api-Version", "2026-11-01")
		w.WriteHeader(200)
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	id := rec.Header().Values("Request-Id")
	if len(id) != 1 || !ids.Valid(id[0], ids.Request) {
		t.Fatalf("response Request-Id = %q, want one req_ id", id)
	}
	if upstream != id[0] {
		t.Fatalf("upstream got %q, response has %q", upstream, id[0])
	}
	if got, _ := repl.GetString(Placeholder); got != id[0] {
		t.Fatalf("placeholder = %q", got)
	}
	if got := caddyhttp.GetVar(r.Context(), VarKey); got != id[0] {
		t.Fatalf("var = %v", got)
	}
	if v := rec.Header().Values("Api-Version"); len(v) != 1 {
		t.Fatalf("Api-Version = %q", v)
	}
}

func TestErrorsBecomeErrorObjects(t *testing.T) {
	h := newHandler(t)
	dialErr := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused 10.1.2.3:8082")}
	for _, tc := range []struct {
		name   string
		err    error
		status int
		typ    string
		code   string
	}{
		{"upstream down", caddyhttp.Error(502, dialErr), 502, "api_error", "upstream_unavailable"},
		{"upstream timeout", caddyhttp.Error(504, dialErr), 504, "api_error", "upstream_timeout"},
		{"no healthy upstream", caddyhttp.Error(503, errors.New("no upstreams available")), 503, "api_error", "service_unavailable"},
		{"body too large", caddyhttp.Error(413, &http.MaxBytesError{Limit: 1000000}), 413, "invalid_request_error", "body_too_large"},
		{"body too large inside 502", caddyhttp.Error(502, fmt.Errorf("reading body: %w", &http.MaxBytesError{Limit: 10})), 413, "invalid_request_error", "body_too_large"},
		{"our own error", caddyhttp.Error(401, apierror.Authentication("api_key_invalid", "no")), 401, "authentication_error", "api_key_invalid"},
		{"bare apierror", apierror.Permission("scope_missing", "no"), 403, "permission_error", "scope_missing"},
		{"plain error", errors.New("pq: password authentication failed"), 500, "api_error", "internal_error"},
		{"caddy 404", caddyhttp.Error(404, nil), 404, "invalid_request_error", "route_missing"},
		{"caddy 400", caddyhttp.Error(400, errors.New("bad header")), 400, "invalid_request_error", "request_invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, repl := newRequest("POST", "/v1/customers")
			rec := httptest.NewRecorder()
			err := h.ServeHTTP(rec, r, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return tc.err }))
			if err != nil {
				t.Fatalf("ServeHTTP returned %v; errors must be rendered, not passed to Caddy", err)
			}
			var body struct{ Error map[string]string }
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q: %v", rec.Body, err)
			}
			e := body.Error
			if rec.Code != tc.status || e["type"] != tc.typ || e["code"] != tc.code {
				t.Fatalf("got %d %s", rec.Code, rec.Body)
			}
			if e["request_id"] == "" || e["request_id"] != rec.Header().Get("Request-Id") {
				t.Fatalf("request_id %q, header %q", e["request_id"], rec.Header().Get("Request-Id"))
			}
			if strings.Contains(rec.Body.String(), "10.1.2.3") || strings.Contains(rec.Body.String(), "password") {
				t.Fatalf("internal detail leaked: %s", rec.Body)
			}
			if got, _ := repl.GetString("http.api_error.code"); got != tc.code {
				t.Fatalf("placeholder code = %q", got)
			}
		})
	}
}

func TestCaseVariantsOfStandardMethodsAreRefused(t *testing.T) {
	h := newHandler(t)
	for _, tc := range []struct {
		method  string
		refused bool
	}{
		{"post", true},
		{"Post", true},
		{"pAtCh", true},
		{"delete", true},
		{"get", true},
		{"POST", false},
		{"GET", false},
		{"PROPFIND", false}, // a method of its own (WebDAV)
		{"purge", false},    // lower case, but no standard method's name
	} {
		t.Run(tc.method, func(t *testing.T) {
			r, _ := newRequest(tc.method, "/v1/customers")
			rec := httptest.NewRecorder()
			reached := false
			err := h.ServeHTTP(rec, r, caddyhttp.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) error {
				reached = true
				w.WriteHeader(http.StatusCreated)
				return nil
			}))
			if err != nil {
				t.Fatal(err)
			}
			if !tc.refused {
				if !reached || rec.Code != http.StatusCreated {
					t.Fatalf("%s: reached %v, status %d %s; want it passed on", tc.method, reached, rec.Code, rec.Body)
				}
				return
			}
			if reached {
				t.Fatalf("%s reached the next handler", tc.method)
			}
			var body struct{ Error map[string]string }
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q: %v", rec.Body, err)
			}
			e := body.Error
			if rec.Code != http.StatusBadRequest || e["type"] != "invalid_request_error" || e["code"] != "request_invalid" ||
				!strings.Contains(e["message"], strings.ToUpper(tc.method)) {
				t.Fatalf("got %d %s", rec.Code, rec.Body)
			}
			if e["request_id"] == "" || e["request_id"] != rec.Header().Get("Request-Id") {
				t.Fatalf("request_id %q, header %q", e["request_id"], rec.Header().Get("Request-Id"))
			}
		})
	}
}

// A key pasted into a URL must not reach the error log through the path of
// a request that failed with a 5xx.
func TestErrorLogRedactsThePath(t *testing.T) {
	h := newHandler(t)
	core, logs := observer.New(zap.DebugLevel)
	h.logger = zap.New(core)
	key, err := apikey.Generate(apikey.Secret, apikey.Live)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := newRequest("POST", "/v1/customers/"+key)
	rec := httptest.NewRecorder()
	_ = h.ServeHTTP(rec, r, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		return caddyhttp.Error(http.StatusBadGateway, errors.New("dial tcp 127.0.0.1:8082: connect: connection refused"))
	}))
	entries := logs.FilterMessage("request failed").All()
	if len(entries) != 1 || entries[0].Level != zap.ErrorLevel {
		t.Fatalf("log entries: %v", logs.All())
	}
	if got := entries[0].ContextMap()["path"]; got != "/v1/customers/"+redact.Mask {
		t.Errorf("logged path %q, want the key masked", got)
	}
	for _, e := range logs.All() {
		for _, f := range e.Context {
			if strings.Contains(f.String, key[8:]) {
				t.Errorf("log %q: field %s = %q carries the API key", e.Message, f.Key, f.String)
			}
		}
	}
}

func TestErrorAfterTheResponseStartedIsOnlyLogged(t *testing.T) {
	h := newHandler(t)
	r, _ := newRequest("GET", "/v1/customers")
	rec := httptest.NewRecorder()
	err := h.ServeHTTP(rec, r, caddyhttp.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) error {
		w.WriteHeader(200)
		_, _ = w.Write([]byte(`{"partial":`))
		return caddyhttp.Error(502, errors.New("upstream reset"))
	}))
	if err != nil || rec.Code != 200 || rec.Body.String() != `{"partial":` {
		t.Fatalf("got %v %d %q", err, rec.Code, rec.Body)
	}
}

func TestClientGoneGetsNoBody(t *testing.T) {
	h := newHandler(t)
	r, _ := newRequest("GET", "/v1/customers")
	ctx, cancel := context.WithCancel(r.Context())
	cancel()
	r = r.WithContext(ctx)
	rec := httptest.NewRecorder()
	_ = h.ServeHTTP(rec, r, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		return caddyhttp.Error(499, context.Canceled)
	}))
	if rec.Code != 499 || rec.Body.Len() != 0 {
		t.Fatalf("got %d %q", rec.Code, rec.Body)
	}
}

func TestResponseControllerReachesTheConnection(t *testing.T) {
	h := newHandler(t)
	r, _ := newRequest("GET", "/stream")
	rec := httptest.NewRecorder()
	_ = h.ServeHTTP(rec, r, caddyhttp.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) error {
		_, _ = w.Write([]byte("chunk"))
		return http.NewResponseController(w).Flush()
	}))
	if !rec.Flushed {
		t.Fatal("Flush did not reach the underlying writer")
	}
}

func BenchmarkRequestID(b *testing.B) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := new(Handler)
	if err := h.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	r, _ := newRequest("GET", "/v1/customers")
	w := httptest.NewRecorder()
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) error { w.WriteHeader(200); return nil })
	b.ReportAllocs()
	for b.Loop() {
		_ = h.ServeHTTP(w, r, next)
	}
}
