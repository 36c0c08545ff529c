package caddymodule

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/gatehouse/gatehouse/caddymodule/internal/adapttest"
	"github.com/gatehouse/gatehouse/controlplane/server"
	"github.com/gatehouse/gatehouse/internal/apikey"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

func repoCaddyfile(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRepoCaddyfileLoads adapts the demo Caddyfile with its defaults and
// provisions and validates every module in it, without serving.
func TestRepoCaddyfileLoads(t *testing.T) {
	out, err := adapttest.Adapt(t, repoCaddyfile(t))
	if err != nil {
		t.Fatalf("adapting the repository's Caddyfile: %v", err)
	}
	var cfg caddy.Config
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&cfg); err != nil {
		t.Fatalf("provisioning the repository's Caddyfile: %v", err)
	}
	for _, want := range []string{`"handler": "request_id"`, `"handler": "api_key"`, `"handler": "api_error"`, `"database_url": "{env.DATABASE_URL}"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("adapted Caddyfile lacks %s", want)
		}
	} // Caddy's own log lines go through the redaction of request logs.
	var logs struct {
		Logging struct {
			Logs map[string]struct {
				Encoder struct {
					Format string
					Fields map[string]struct{ Filter string }
				}
			}
		}
	}
	if err := json.Unmarshal(out, &logs); err != nil {
		t.Fatal(err)
	}
	enc := logs.Logging.Logs["default"].Encoder
	if enc.Format != "filter" || enc.Fields["request>uri"].Filter != "gatehouse_redact" ||
		enc.Fields["request>headers"].Filter != "gatehouse_redact" {
		t.Errorf("the default log is not redacted: %+v", enc)
	}
}

// The gateway waits for the control plane's answer longer than the control
// plane lets a request run, so a slow search's 503 request_timeout (with its
// advice to narrow the search) reaches the client instead of a 504.
func TestRepoCaddyfileOutwaitsTheControlPlane(t *testing.T) {
	t.Setenv("CONTROLPLANE_URL", "controlplane.test:8081")
	out, err := adapttest.Adapt(t, repoCaddyfile(t))
	if err != nil {
		t.Fatal(err)
	}
	var tree any
	if err := json.Unmarshal(out, &tree); err != nil {
		t.Fatal(err)
	}
	var proxies []map[string]any
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if v["handler"] == "reverse_proxy" {
				proxies = append(proxies, v)
			}
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	walk(tree)
	found := false
	for _, p := range proxies {
		if b, _ := json.Marshal(p["upstreams"]); !strings.Contains(string(b), "controlplane.test") {
			continue
		}
		found = true
		wait, _ := p["transport"].(map[string]any)["response_header_timeout"].(float64)
		if time.Duration(wait) <= server.DefaultRequestTimeout {
			t.Errorf("the gateway waits %s for the control plane, whose requests run up to %s", time.Duration(wait), server.DefaultRequestTimeout)
		}
	}
	if !found {
		t.Fatal("no reverse_proxy to the control plane in the repository's Caddyfile")
	}
}

// TestRepoCaddyfileServes runs the demo Caddyfile as `make run` would, with
// a stand-in sample API, and checks the promises of DESIGN §3 and §5 at the
// gateway's front door.
func TestRepoCaddyfileServes(t *testing.T) {
	pool, dsn := testenv.Pool(t)
	sample := httptest.NewServer(identity.NewVerifier([]byte("demo-secret"), 0, nil).Middleware(
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, _ := identity.FromContext(r.Context())
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"object":"list","org":%q}`, id.OrgID)
		})))
	defer sample.Close()
	port, admin := testenv.FreePort(t), testenv.FreePort(t)
	t.Setenv("GATEWAY_PORT", strconv.Itoa(port))
	t.Setenv("CADDY_ADMIN", fmt.Sprintf("127.0.0.1:%d", admin))
	t.Setenv("SAMPLEAPI_URL", strings.TrimPrefix(sample.URL, "http://"))
	t.Setenv("CONTROLPLANE_URL", fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)))
	t.Setenv("DATABASE_URL", dsn)
	t.Setenv("IDENTITY_SECRET", "demo-secret")

	out, err := adapttest.Adapt(t, repoCaddyfile(t))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	_ = json.Unmarshal(out, &cfg)
	cfg["admin"].(map[string]any)["config"] = map[string]any{"persist": false}
	out, _ = json.Marshal(cfg)
	if err := caddy.Load(out, true); err != nil {
		t.Fatal(err)
	}
	defer caddy.Stop()

	org := ids.New(ids.Org)
	if _, err := pool.Exec(t.Context(), `INSERT INTO organizations (id, name) VALUES ($1, 'Demo')`, org); err != nil {
		t.Fatal(err)
	}
	key, _ := apikey.Generate(apikey.Secret, apikey.Sandbox)
	h := apikey.Hash(key)
	if _, err := pool.Exec(t.Context(), `INSERT INTO api_keys (id, organization_id, environment, kind, prefix, key_hash, last4, created_by)
		VALUES ($1, $2, 'sandbox', 'secret', 'sk_test_', $3, 'xxxx', 'test')`, ids.New(ids.Key), org, h[:]); err != nil {
		t.Fatal(err)
	}

	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	metrics := func() string {
		t.Helper()
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", admin))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	logged := func() int { // request_log's count of requests it saw
		n := 0
		for line := range strings.Lines(metrics()) {
			if strings.HasPrefix(line, "caddy_gatehouse_requests_total{") {
				f := strings.Fields(line)
				v, _ := strconv.ParseFloat(f[len(f)-1], 64)
				n += int(v)
			}
		}
		return n
	}
	for _, tc := range []struct {
		name, method, path, key string
		status                  int
		code                    string
		body                    string
	}{
		{"health needs no key", "GET", "/healthz", "", 200, "", `{"status":"ok"}`},
		{"api needs a key", "GET", "/v1/customers", "", 401, "api_key_missing", ""},
		{"customers reach the sample API", "GET", "/v1/customers", key, 200, "", `"org":"` + org + `"`},
		{"platform routes are proxied", "GET", "/v1/events", key, 502, "upstream_unavailable", ""},
		{"unknown API route", "GET", "/v1/nothing-here", key, 404, "route_missing", ""},
		{"unknown route", "GET", "/favicon.ico", "", 404, "route_missing", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, base+tc.path, nil)
			if tc.key != "" {
				req.Header.Set("Authorization", "Bearer "+tc.key)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.Contains(string(b), tc.body) {
				t.Fatalf("got %d %s", resp.StatusCode, b)
			}
			if tc.code != "" && !strings.Contains(string(b), `"code":"`+tc.code+`"`) {
				t.Fatalf("got %s, want code %s", b, tc.code)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Fatalf("Content-Type %q", ct)
			}
			if rid := resp.Header.Values("Request-Id"); len(rid) != 1 || !ids.Valid(rid[0], ids.Request) {
				t.Fatalf("Request-Id %q", rid)
			}
		})
	}

	// Caddy's metrics and ours on the admin endpoint.
	m := metrics()
	for _, name := range []string{"caddy_gatehouse_auth_requests_total", "caddy_gatehouse_key_cache_lookups_total", "caddy_http_requests_total"} {
		if !strings.Contains(m, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}

	// API requests are logged; load balancers' health probes are not.
	before := logged()
	if r, err := http.Get(base + "/v1/customers"); err != nil {
		t.Fatal(err)
	} else {
		r.Body.Close()
	}
	if logged() != before+1 {
		t.Fatalf("an API request was not counted by request_log (%d → %d)", before, logged())
	}
	for range 3 {
		r, err := http.Get(base + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
	}
	if n := logged(); n != before+1 {
		t.Fatalf("health probes reached request_log: %d entries, want %d", n, before+1)
	}
}
