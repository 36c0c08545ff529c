package requestlog

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/gatehouse/gatehouse/caddymodule/internal/caddytest"
	"github.com/gatehouse/gatehouse/caddymodule/internal/errorobject"
	"github.com/gatehouse/gatehouse/internal/apierror"
)

func init() {
	caddy.RegisterModule(testIdentity{})
}

// testIdentity stands in for api_key: it sets the placeholders api_key sets
// from X-Test-* request headers, refuses with a 401 error object when
// X-Test-Refuse is sent (after identifying the key when X-Test-Org is sent
// too, as api_key refuses an expired key), and drops the Authorization
// header as api_key does before proxying.
type testIdentity struct{}

func (testIdentity) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.test_identity", New: func() caddy.Module { return new(testIdentity) }}
}

func (*testIdentity) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if r.Header.Get("X-Test-Refuse") != "" {
		e := apierror.Authentication("api_key_invalid", "No such API key.")
		if org := r.Header.Get("X-Test-Org"); org != "" && r.Header.Get("X-Test-Refuse") == "identified" {
			repl.Set(PlaceholderOrgID, org)
			repl.Set(PlaceholderKeyID, r.Header.Get("X-Test-Key"))
			repl.Set(PlaceholderAuthRefused, "true")
			e = apierror.Authentication("api_key_expired", "This API key expired.")
		}
		errorobject.Write(w, r, e)
		return nil
	}
	repl.Set(PlaceholderOrgID, r.Header.Get("X-Test-Org"))
	repl.Set(PlaceholderKeyID, r.Header.Get("X-Test-Key"))
	repl.Set(PlaceholderLivemode, r.Header.Get("X-Test-Live"))
	repl.Set(PlaceholderAPIVersion, "2026-11-01")
	repl.Set(PlaceholderBodyCapture, r.Header.Get("X-Test-Capture"))
	r.Header.Del("Authorization")
	return next.ServeHTTP(w, r)
}

// runCaddy runs one server on 127.0.0.1:port with routes until the test
// ends.
func runCaddy(t *testing.T, port int, routes ...map[string]any) {
	caddytest.Run(t, fmt.Sprintf("127.0.0.1:%d", port), routes...)
}

// metric returns the value of the sample of name whose labels contain
// every given name="value" pair, from a Prometheus text page.
func metric(t *testing.T, base, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var total float64
	found := false
line:
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, name+"{") && !strings.HasPrefix(l, name+" ") {
			continue
		}
		for _, lb := range labels {
			if !strings.Contains(l, lb) {
				continue line
			}
		}
		f := strings.Fields(l)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", l, err)
		}
		total += v
		found = true
	}
	if !found {
		return -1
	}
	return total
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func do(t *testing.T, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}
