package ratelimit

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/gatehouse/gatehouse/caddymodule/internal/caddytest"
	_ "github.com/gatehouse/gatehouse/caddymodule/requestid"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

// testIdentity stands in for the api_key handler: it sets the placeholders
// api_key would from X-Test-* request headers, so the limiter can be tested
// without keys in Postgres.
type testIdentity struct{}

func init() { caddy.RegisterModule(testIdentity{}) }

func (testIdentity) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.gatehouse_test_identity",
		New: func() caddy.Module { return new(testIdentity) },
	}
}

func (testIdentity) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if org := r.Header.Get("X-Test-Org"); org != "" {
		env := r.Header.Get("X-Test-Env")
		if env == "" {
			env = "live"
		}
		repl.Set(phOrg, org)
		repl.Set(phKeyID, r.Header.Get("X-Test-Key"))
		repl.Set(phEnvironment, env)
		repl.Set("http.auth.api_key.livemode", env == "live")
	}
	return next.ServeHTTP(w, r)
}

// fakeClock is a settable clock for the script's "now".
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// gateway is Caddy running in-process with request_id (which renders
// refusals as the error object) → test_identity → rate_limit → a static 200.
type gateway struct {
	url    string
	prefix string
	rdb    *redis.Client
	client *http.Client
}

// startGateway loads h (KeyPrefix and Redis default to the test's) with the
// given clock (nil: Redis TIME). Caddy's config is process-global, so tests
// that use it do not run in parallel.
func startGateway(t *testing.T, h *Handler, clock *fakeClock) *gateway {
	t.Helper()
	rdb, prefix := testenv.Redis(t)
	if h.KeyPrefix == "" {
		h.KeyPrefix = prefix
	}
	if h.Redis == "" {
		h.Redis = testenv.RedisURL(t)
	}
	if clock != nil {
		testClock = clock.Now
	}
	defer func() { testClock = nil }()

	addr := testenv.FreeAddr(t)
	caddytest.Run(t, addr, map[string]any{"handle": []any{
		map[string]any{"handler": "request_id"},
		map[string]any{"handler": "gatehouse_test_identity"},
		caddyconfig.JSONModuleObject(h, "handler", "rate_limit", nil),
		map[string]any{"handler": "static_response", "status_code": 200, "body": "ok"},
	}})
	return &gateway{
		url: "http://" + addr, prefix: h.KeyPrefix, rdb: rdb,
		client: &http.Client{Timeout: 5 * time.Second},
	}
}

// response is what a test looks at.
type response struct {
	status int
	header http.Header
	body   string
}

// errorObject decodes the error object of a refusal.
func (r response) errorObject(t *testing.T) map[string]string {
	t.Helper()
	var b struct{ Error map[string]any }
	if err := json.Unmarshal([]byte(r.body), &b); err != nil {
		t.Fatalf("body is not the error object: %v: %s", err, r.body)
	}
	out := map[string]string{}
	for k, v := range b.Error {
		s, _ := v.(string)
		out[k] = s
	}
	return out
}

// caller is who sends a request; the zero value is unauthenticated.
type caller struct{ org, key, env string }

func (g *gateway) get(t *testing.T, c caller, path string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, g.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.org != "" {
		req.Header.Set("X-Test-Org", c.org)
		req.Header.Set("X-Test-Key", c.key)
		req.Header.Set("X-Test-Env", c.env)
	}
	res, err := g.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return response{status: res.StatusCode, header: res.Header, body: string(b)}
}

// admitted sends n requests and counts the 200s.
func (g *gateway) admitted(t *testing.T, c caller, path string, n int) int {
	t.Helper()
	ok := 0
	for range n {
		r := g.get(t, c, path)
		switch r.status {
		case http.StatusOK:
			ok++
		case http.StatusTooManyRequests:
		default:
			t.Fatalf("unexpected status %d: %s", r.status, r.body)
		}
	}
	return ok
}

// counter reads a counter of the running config's metrics registry.
func counter(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	ctx := caddy.ActiveContext()
	mfs, err := ctx.GetMetricsRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabels(m, labels) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	got := map[string]string{}
	for _, lp := range m.GetLabel() {
		got[lp.GetName()] = lp.GetValue()
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// keys lists the Redis keys under the test's prefix.
func (g *gateway) keys(t *testing.T) []string {
	t.Helper()
	var out []string
	iter := g.rdb.Scan(context.Background(), 0, g.prefix+"*", 1000).Iterator()
	for iter.Next(context.Background()) {
		out = append(out, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
