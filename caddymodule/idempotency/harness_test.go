package idempotency

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	neturl "net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/redis/go-redis/v9"

	"github.com/gatehouse/gatehouse/caddymodule/internal/caddytest"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

// The gateway under test is real Caddy, loaded in-process from JSON on a
// loopback port with the admin API off: identity → idempotency →
// reverse_proxy → an httptest upstream that counts its executions.

func init() {
	caddy.RegisterModule(identity{})
	caddy.RegisterModule(hang{})
	caddy.RegisterModule(panicking{})
	// go-redis logs every failed dial of the Redis-down test on stderr; the
	// handler's own logs and the tests' assertions say what matters.
	redis.SetLogger(quietRedis{})
}

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

// identity stands in for the request_id and api_key handlers: it sets the
// api_key placeholders from X-Test-Org / X-Test-Livemode, gives every
// request a fresh Request-Id, sets a RateLimit header as rate_limit would,
// renders returned errors as the error object, and notes the idempotency
// placeholders of every request for the tests to inspect.
//
// With placeholders_only it only sets the api_key placeholders, for chains
// where the real request_id handler runs in front.
type identity struct {
	PlaceholdersOnly bool `json:"placeholders_only,omitempty"`
}

func (identity) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.idempotency_test_identity", New: func() caddy.Module { return new(identity) }}
}

func (ident identity) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if org := r.Header.Get("X-Test-Org"); org != "" {
		repl.Set("http.auth.api_key.org_id", org)
		repl.Set("http.auth.api_key.key_id", "key_test")
		live := r.Header.Get("X-Test-Livemode")
		if live == "" {
			live = "false"
		}
		repl.Set("http.auth.api_key.livemode", live)
	}
	if ident.PlaceholdersOnly {
		return next.ServeHTTP(w, r)
	}
	id := "req_" + randomHex(8)
	repl.Set("http.request_id", id)
	w.Header().Set("Request-Id", id)
	w.Header().Set("RateLimit", `"default";r=99;t=1`)
	if v := r.Header.Get("X-Test-Api-Version"); v != "" {
		w.Header().Set("Api-Version", v) // as api_key does, in front
	}

	err := next.ServeHTTP(w, r)
	placeholders.Store(id, map[string]string{
		"key":                 repl.ReplaceKnown("{http.idempotency.key}", ""),
		"replayed":            repl.ReplaceKnown("{http.idempotency.replayed}", ""),
		"original_request_id": repl.ReplaceKnown("{http.idempotency.original_request_id}", ""),
	})
	if err != nil {
		apierror.Write(w, asAPIError(err))
	}
	return nil
}

// asAPIError maps handler errors the way the request_id handler does.
func asAPIError(err error) error {
	var ae *apierror.Error
	if errors.As(err, &ae) {
		return ae
	}
	var he caddyhttp.HandlerError
	if errors.As(err, &he) {
		switch he.StatusCode {
		case http.StatusGatewayTimeout:
			return apierror.New(504, apierror.TypeAPI, "upstream_timeout", "The service behind the gateway took too long to answer.")
		case http.StatusBadGateway, http.StatusServiceUnavailable:
			return apierror.New(he.StatusCode, apierror.TypeAPI, "upstream_unavailable", "The service behind the gateway could not be reached.")
		}
	}
	return err
}

// placeholders holds, per Request-Id, the idempotency placeholders seen.
var placeholders sync.Map

// hang stands in for a gateway that died mid-request: it holds the request
// forever (ignoring cancellation) until the test closes its gate.
type hang struct {
	Gate string `json:"gate"`
}

// gates are the hang handlers' channels by name.
var gates sync.Map

// newGate returns the config of a hang handler and the func that releases it.
func newGate() (map[string]any, func()) {
	name, ch := randomHex(8), make(chan struct{})
	gates.Store(name, ch)
	var once sync.Once
	return map[string]any{"handler": "idempotency_test_hang", "gate": name}, func() { once.Do(func() { close(ch) }) }
}

func (hang) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.idempotency_test_hang", New: func() caddy.Module { return new(hang) }}
}

func (h hang) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	ch, _ := gates.Load(h.Gate)
	<-ch.(chan struct{})
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, `{"from":"dead gateway"}`)
	return nil
}

// panicking is a handler behind idempotency with a bug: it panics before
// writing anything.
type panicking struct{}

func (panicking) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.idempotency_test_panic", New: func() caddy.Module { return new(panicking) }}
}

func (panicking) ServeHTTP(http.ResponseWriter, *http.Request, caddyhttp.Handler) error {
	panic("bug behind the idempotency handler")
}

// upstream is the backend: it knows nothing of idempotency and counts how
// often it executes. Paths choose its behaviour:
//
//	/v1/ok     201 with a JSON body echoing the request, and response headers
//	/v1/fail   500
//	/v1/huge   200 with ?size= bytes
//	/v1/block  waits until release() (or the request is cancelled), then 201
//	/v1/abort  sends headers and half a body, then drops the connection
//	/v1/latin1 201 with a header value that is not UTF-8 (obs-text)
//	/v1/crash  reads the request, then drops the connection without a byte
//	           of response (a backend that died after acting on it)
//	/v1/gzip   201, gzip-encoded when the request accepts gzip
//	/v1/busy   503 with Retry-After and ?size= bytes of body
type upstream struct {
	srv       *httptest.Server
	count     atomic.Int64
	started   chan struct{} // one value per /v1/block request that arrived
	release   chan struct{}
	closeOnce sync.Once
}

func newUpstream(t testing.TB) *upstream {
	u := &upstream{started: make(chan struct{}, 1000), release: make(chan struct{})}
	u.srv = httptest.NewServer(u)
	t.Cleanup(func() { u.releaseAll(); u.srv.Close() })
	return u
}

// newUpstreamAt is newUpstream listening on addr.
func newUpstreamAt(t testing.TB, addr string) *upstream {
	u := &upstream{started: make(chan struct{}, 1000), release: make(chan struct{})}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	u.srv = httptest.NewUnstartedServer(u)
	u.srv.Listener.Close()
	u.srv.Listener = l
	u.srv.Start()
	t.Cleanup(func() { u.releaseAll(); u.srv.Close() })
	return u
}

func (u *upstream) releaseAll() { u.closeOnce.Do(func() { close(u.release) }) }

func (u *upstream) addr() string { return strings.TrimPrefix(u.srv.URL, "http://") }

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := u.count.Add(1)
	body, _ := io.ReadAll(r.Body)
	switch r.URL.Path {
	case "/v1/fail":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, `{"error":{"type":"api_error","message":"upstream exploded","n":%d}}`, n)
	case "/v1/huge":
		size, _ := strconv.Atoi(r.URL.Query().Get("size"))
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(strings.Repeat("x", size)))
	case "/v1/busy":
		size, _ := strconv.Atoi(r.URL.Query().Get("size"))
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(strings.Repeat("b", size)))
	case "/v1/block":
		u.started <- struct{}{}
		select {
		case <-u.release:
		case <-r.Context().Done():
			return
		}
		u.writeCreated(w, r, n, body)
	case "/v1/abort":
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte("half"))
		w.(http.Flusher).Flush()
		conn, _, _ := http.NewResponseController(w).Hijack()
		conn.Close()
	case "/v1/stall":
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte("half"))
		w.(http.Flusher).Flush()
		<-r.Context().Done() // the rest never comes
	case "/v1/latin1":
		w.Header()["Content-Disposition"] = []string{"attachment; filename=\"caf\xe9.csv\""}
		u.writeCreated(w, r, n, body)
	case "/v1/crash":
		panic(http.ErrAbortHandler) // net/http closes the connection, answering nothing
	case "/v1/gzip":
		if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			u.writeCreated(w, r, n, body)
			return
		}
		var plain bytes.Buffer
		_ = json.NewEncoder(&plain).Encode(map[string]any{"id": fmt.Sprintf("cus_%d", n), "object": "customer"})
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "gzip")
		w.WriteHeader(http.StatusCreated)
		zw := gzip.NewWriter(w)
		_, _ = zw.Write(plain.Bytes())
		_ = zw.Close()
	default:
		u.writeCreated(w, r, n, body)
	}
}

func (u *upstream) writeCreated(w http.ResponseWriter, r *http.Request, n int64, body []byte) {
	id := fmt.Sprintf("cus_%d", n)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Location", "/v1/customers/"+id)
	w.Header().Set("X-Upstream", "sampleapi")
	w.Header().Set("Set-Cookie", "session=secret; HttpOnly")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"id": id, "object": "customer", "method": r.Method, "uri": r.URL.RequestURI(),
		"body": string(body), "content_length": r.ContentLength,
		"idempotency_key": r.Header.Get(HeaderKey),
	})
}

// settings is the idempotency handler's JSON config in a test.
type settings map[string]any

// gateway is one Caddy server of the in-process config.
type gateway struct {
	url string
}

// testRedis is the test's Redis client and its private key prefix; keys
// under it are deleted when the test ends.
func testRedis(t testing.TB) (*redis.Client, string) {
	t.Helper()
	rdb, prefix := testenv.Redis(t)
	t.Cleanup(func() {
		ctx := context.Background()
		var batch []string
		iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			if batch = append(batch, iter.Val()); len(batch) == 1000 {
				rdb.Unlink(ctx, batch...)
				batch = batch[:0]
			}
		}
		if len(batch) > 0 {
			rdb.Unlink(ctx, batch...)
		}
	})
	return rdb, prefix
}

// serverSpec is one server of the in-process config: the idempotency
// settings and what stands behind the handler.
type serverSpec struct {
	settings settings
	next     map[string]any   // the handler after idempotency
	front    []map[string]any // the handlers before it; default the identity stand-in
}

func proxyTo(addr string) map[string]any {
	return map[string]any{"handler": "reverse_proxy", "upstreams": []any{map[string]any{"dial": addr}}}
}

// startCaddy loads one Caddy config with a server per spec and returns
// them. Caddy's config is process-global, so these tests never run in
// parallel; each stops its config when it ends.
func startCaddy(t testing.TB, specs ...serverSpec) []gateway {
	t.Helper()
	servers := map[string]any{}
	gws := make([]gateway, len(specs))
	for i, s := range specs {
		addr := testenv.FreeAddr(t)
		idem := map[string]any{"handler": "idempotency"}
		for k, v := range s.settings {
			idem[k] = v
		}
		front := s.front
		if front == nil {
			front = []map[string]any{{"handler": "idempotency_test_identity"}}
		}
		var handle []any
		for _, f := range front {
			handle = append(handle, f)
		}
		handle = append(handle, idem, s.next)
		servers[fmt.Sprintf("srv%d", i)] = caddytest.Server(addr, map[string]any{"handle": handle})
		gws[i] = gateway{url: "http://" + addr}
	}
	caddytest.Load(t, map[string]any{"servers": servers, "grace_period": "1s"})
	return gws
}

// startGateway is the common case: one server proxying to up, with the
// test's Redis prefix and any extra settings.
func startGateway(t testing.TB, up *upstream, prefix string, extra settings) gateway {
	t.Helper()
	s := settings{"key_prefix": prefix, "ttl": "10m", "methods": []string{"POST", "PATCH"}}
	for k, v := range extra {
		s[k] = v
	}
	return startCaddy(t, serverSpec{settings: s, next: proxyTo(up.addr())})[0]
}

// req is one client request.
type req struct {
	method string // default POST
	path   string // default /v1/ok
	body   string
	key    string   // Idempotency-Key, when not ""
	keys   []string // several Idempotency-Key headers, or one empty one
	xKey   string   // X-Idempotency-Key, when not ""
	org    string   // default org_a; "-" for none
	live   string
	// chunked sends the body without a Content-Length.
	chunked bool
	// accept is the Accept-Encoding sent, when not "" (the client then
	// does not decode a compressed answer itself).
	accept string
	// version is the Api-Version api_key would answer with, when not "".
	version string
}

// resp is what the client got.
type resp struct {
	status int
	header http.Header
	body   string
}

// mustBeExecuted fails the test unless r is a fresh 201, not a replay.
func (r resp) mustBeExecuted(t *testing.T, what string) {
	t.Helper()
	if r.status != http.StatusCreated || r.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("%s: %d %s replayed=%q, want a fresh 201", what, r.status, r.body, r.header.Get("Idempotent-Replayed"))
	}
}

// apiError decodes the error object.
func (r resp) apiError(t testing.TB) map[string]string {
	t.Helper()
	var e struct{ Error map[string]string }
	if err := json.Unmarshal([]byte(r.body), &e); err != nil || e.Error == nil {
		t.Fatalf("status %d, body is not an error object: %q", r.status, r.body)
	}
	return e.Error
}

var client = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 100},
}

func (g gateway) do(t testing.TB, q req) resp {
	t.Helper()
	r, err := g.send(q)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (g gateway) send(q req) (resp, error) {
	if q.method == "" {
		q.method = http.MethodPost
	}
	if q.path == "" {
		q.path = "/v1/ok"
	}
	var body io.Reader = strings.NewReader(q.body)
	if q.chunked {
		body = io.MultiReader(strings.NewReader(q.body)) // hides the length
	}
	hr, err := http.NewRequest(q.method, g.url+q.path, body)
	if err != nil {
		return resp{}, err
	}
	if q.chunked {
		hr.ContentLength = -1
	}
	if q.key != "" {
		hr.Header.Set(HeaderKey, q.key)
	}
	if q.keys != nil {
		hr.Header[HeaderKey] = q.keys
	}
	if q.xKey != "" {
		hr.Header.Set("X-Idempotency-Key", q.xKey)
	}
	switch q.org {
	case "":
		hr.Header.Set("X-Test-Org", "org_a")
	case "-":
	default:
		hr.Header.Set("X-Test-Org", q.org)
	}
	if q.live != "" {
		hr.Header.Set("X-Test-Livemode", q.live)
	}
	hr.Header.Set("Content-Type", "application/json")
	if q.accept != "" {
		hr.Header.Set("Accept-Encoding", q.accept)
	}
	if q.version != "" {
		hr.Header.Set("X-Test-Api-Version", q.version)
	}
	res, err := client.Do(hr)
	if err != nil {
		return resp{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return resp{}, err
	}
	return resp{status: res.StatusCode, header: res.Header, body: string(b)}, nil
}

// eventually polls cond until it holds or the deadline passes: the tests
// wait for expiries this way, never with fixed sleeps.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newKey is a fresh Idempotency-Key.
func newKey() string { return "key-" + randomHex(8) }

// slowProxy forwards TCP to a Redis server. While slow is set, it holds
// each chunk of Redis's replies for delay before passing it on: commands
// reach Redis and run at once, their answers come late.
type slowProxy struct {
	addr string
	slow atomic.Bool
}

func newSlowProxy(t testing.TB, target string, delay time.Duration) *slowProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &slowProxy{addr: ln.Addr().String()}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go func() { _, _ = io.Copy(s, c); s.Close() }()
			go func() {
				defer c.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := s.Read(buf)
					if n > 0 {
						if p.slow.Load() {
							time.Sleep(delay)
						}
						if _, err := c.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return p
}

// redisURL is the test Redis's URL, parsed, for tests that put something
// between the handler and Redis.
func redisURL(t testing.TB) *neturl.URL {
	t.Helper()
	u, err := neturl.Parse(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	return u
}
