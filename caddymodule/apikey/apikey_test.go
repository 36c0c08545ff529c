package apikey

import (
	"context"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/gatehouse/gatehouse/caddymodule/requestid"
	keyformat "github.com/gatehouse/gatehouse/internal/apikey"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

func TestHashKeyIsTheStoredHash(t *testing.T) {
	for range 20 {
		k, err := keyformat.Generate(keyformat.Restricted, keyformat.Live)
		if err != nil {
			t.Fatal(err)
		}
		if hashKey(k) != keyformat.Hash(k) {
			t.Fatalf("hashKey(%s) differs from apikey.Hash", k)
		}
	}
}

func TestCacheDropsLoadsThatRacedAnInvalidation(t *testing.T) {
	c := newCache(10)
	var h [32]byte
	h[0] = 1
	gen := c.generation()
	// The load read the row before the revocation committed; the
	// notification is processed before the load stores its result.
	c.evict(h)
	if c.put(h, &record{}, time.Now(), gen) {
		t.Fatal("a load older than an invalidation was cached")
	}
	if e, _, _ := c.get(h); e != nil {
		t.Fatal("entry present")
	}
	if !c.put(h, &record{}, time.Now(), c.generation()) {
		t.Fatal("a current load was not cached")
	}
}

func TestCacheIsBounded(t *testing.T) {
	c := newCache(1000)
	for i := range 5000 {
		var h [32]byte
		h[0], h[1] = byte(i), byte(i>>8)
		c.put(h, &record{}, time.Now(), c.generation())
		h[2] = 1
		c.put(h, nil, time.Now(), c.generation())
	}
	known, unknown := c.len()
	if known > 1000 || unknown > 250 {
		t.Fatalf("cache holds %d known and %d unknown keys; bounds are 1000 and 250", known, unknown)
	}
}

func TestScopeRules(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	rules, err := compileRules(ctx, []ScopeRule{
		{Scope: "customers:read", Methods: []string{"GET", "HEAD"}, Paths: []string{"/v1/customers*"}},
		{Scope: "customers:write", Methods: []string{"POST", "DELETE"}, Paths: []string{"/v1/customers*"}},
		{Scope: "usage:read", Paths: []string{"/v1/usage"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ method, path, scope string }{
		{"GET", "/v1/customers", "customers:read"},
		{"HEAD", "/v1/customers/cus_1", "customers:read"},
		{"GET", "/V1/Customers", "customers:read"},
		{"POST", "/v1/customers", "customers:write"},
		{"DELETE", "/v1/customers/cus_1", "customers:write"},
		{"PATCH", "/v1/customers/cus_1", ""},
		{"OPTIONS", "/v1/usage", "usage:read"},
		{"GET", "/v1/customers/../usage", "usage:read"},
		{"GET", "/v1/events", ""},
	} {
		r := httptest.NewRequest(tc.method, "http://x"+tc.path, nil)
		r.URL.Path = tc.path
		r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
		got, ok := requiredScope(rules, r)
		if got != tc.scope || ok != (tc.scope != "") {
			t.Errorf("%s %s: scope %q (%v), want %q", tc.method, tc.path, got, ok, tc.scope)
		}
	}
}

// BenchmarkAPIKeyHandler measures the hot path: a cached secret key, all
// checks, identity signing, placeholders, and the call to the next handler.
func BenchmarkAPIKeyHandler(b *testing.B) {
	pool, dsn := testenv.Pool(b)
	f := fixture{pool, dsn}
	key, _ := f.key(b, f.org(b, "2026-11-01"), keyOpts{})

	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &Handler{DatabaseURL: dsn, IdentitySecret: testSecret}
	if err := h.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	defer h.Cleanup()
	h.logger = zap.NewNop()
	// Connecting the LISTEN channel flushes the cache; warm it after.
	waitListening(b)

	r := httptest.NewRequest("GET", "/v1/customers/cus_123", nil)
	repl := caddy.NewReplacer()
	rctx := context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl)
	rctx = context.WithValue(rctx, caddyhttp.VarsCtxKey, map[string]any{
		caddyhttp.ClientIPVarKey: "127.0.0.1",
		requestid.VarKey:         "req_0VcASxlf4Q4bPBXI8jl403", // as request_id leaves it
	})
	r = r.WithContext(rctx)
	auth := []string{"Bearer " + key}
	w := httptest.NewRecorder()
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })

	r.Header["Authorization"] = auth
	if err := h.ServeHTTP(w, r, next); err != nil {
		b.Fatalf("warming the cache: %v", err)
	}
	misses := counterValue(cacheMiss)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		r.Header["Authorization"] = auth
		if err := h.ServeHTTP(w, r, next); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if counterValue(cacheMiss) != misses {
		b.Fatal("the benchmark left the cache")
	}
}

// Requests still running after their config's store was destroyed (past
// Caddy's grace period) start no background work: none on the closed pool,
// and no WaitGroup Add racing Destruct's Wait.
func TestStoreStartsNothingAfterDestruct(t *testing.T) {
	_, dsn := testenv.Pool(t)
	s, err := newStore(storeConfig{dsn: dsn, cacheSize: 10, queryTimeout: time.Second, flushInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if !s.background(func() {}) {
		t.Fatal("a live store refused background work")
	}
	if err := s.Destruct(); err != nil {
		t.Fatal(err)
	}
	ran := false
	if s.background(func() { ran = true }) || ran {
		t.Fatal("a destroyed store started background work")
	}
	// The callers on a request's path: neither may block or panic.
	s.startRefresh([32]byte{1}, &entry{}, time.Now())
	s.pin(&org{id: "org_x"}, "2026-11-01")
}

// A request that misses the cache after a revocation's notice was applied
// does not join a lookup begun before it: that lookup's answer may predate
// the revocation (a slow Postgres), and would authenticate the revoked key
// for up to the query timeout. It starts a lookup of its own.
func TestLookupsAreNotSharedAcrossAnInvalidation(t *testing.T) {
	var hash [32]byte
	hash[0] = 1
	before := &record{}
	release := make(chan struct{})
	var lookups atomic.Int32
	s := &store{cfg: storeConfig{queryTimeout: time.Minute}, cache: newCache(10), logger: zap.NewNop(), ctx: context.Background()}
	s.lookup = func(ctx context.Context, h [32]byte) (*record, error) {
		if lookups.Add(1) == 1 {
			<-release // the key as it was before the revocation, answered late
			return before, nil
		}
		return nil, nil // revoked
	}
	first := make(chan *record)
	go func() {
		rec, _ := s.loadShared(context.Background(), hash, time.Now())
		first <- rec
	}()
	for lookups.Load() == 0 {
		runtime.Gosched()
	}
	s.invalidate(hex.EncodeToString(hash[:]))                                // the revocation's notice
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // joined to the first, it would wait for it
	defer cancel()
	rec, err := s.loadShared(ctx, hash, time.Now())
	if err != nil || rec != nil {
		t.Fatalf("a request after the revocation's notice got %v, %v; want the key refused", rec, err)
	}
	close(release)
	if rec := <-first; rec != before {
		t.Fatal("the request before the notice lost its answer")
	}
	if e, _, _ := s.cache.get(hash); e != nil {
		t.Fatal("the answer from before the revocation was cached")
	}
}
