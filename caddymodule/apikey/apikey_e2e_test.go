package apikey

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/gatehouse/gatehouse/caddymodule/requestid"
	_ "github.com/gatehouse/gatehouse/caddymodule/staticerror"
	keyformat "github.com/gatehouse/gatehouse/internal/apikey"
	"github.com/gatehouse/gatehouse/internal/apiversion"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

// TestGateway runs a real Caddy with request_id, api_key, reverse_proxy and
// api_error in front of a recording upstream, against a real Postgres.
func TestGateway(t *testing.T) {
	pool, dsn := testenv.Pool(t)
	f := fixture{pool, dsn}
	clk := useFakeClock(t)
	up := newUpstream(t)
	port := testenv.FreePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	runCaddy(t, globalOptions+site(port, dsn, up, testenv.FreePort(t), ""))

	org := f.org(t, "2026-06-01")
	secret, secretID := f.key(t, org, keyOpts{})
	live, _ := f.key(t, org, keyOpts{env: keyformat.Live})
	reader, _ := f.key(t, org, keyOpts{kind: keyformat.Restricted, scopes: []string{"customers:read"}})

	// An unknown key with a valid checksum: only a lookup can refuse it.
	unknown, _ := keyformat.Generate(keyformat.Secret, keyformat.Sandbox)

	t.Run("refusals", func(t *testing.T) {
		// One changed checksum character, the typo the checksum exists for.
		badSum := secret[:len(secret)-1] + "a"
		if strings.HasSuffix(secret, "a") {
			badSum = secret[:len(secret)-1] + "b"
		}
		basic := func(user, pass string) string {
			return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
		}
		revoked, _ := f.key(t, org, keyOpts{revoked: true})
		for _, tc := range []struct {
			name    string
			auth    []string // Authorization header values
			status  int
			code    string
			message string // substring
		}{
			{"no key", nil, 401, "api_key_missing", "Authorization: Bearer"},
			{"empty header", []string{""}, 401, "api_key_missing", "Authorization: Bearer"},
			{"bearer without key", []string{"Bearer "}, 401, "api_key_malformed", "no API key after Bearer"},
			{"other scheme", []string{"Token " + secret}, 401, "api_key_malformed", "unsupported scheme"},
			{"key without scheme", []string{secret}, 401, "api_key_malformed", "put `Bearer ` before the key"},
			{"garbage", []string{"%%%garbage%%%"}, 401, "api_key_malformed", "unsupported scheme"},
			{"bad checksum", []string{"Bearer " + badSum}, 401, "api_key_malformed", "checksum"},
			{"unknown prefix", []string{"Bearer pk_test_" + secret[8:]}, 401, "api_key_malformed", "unknown prefix"},
			{"truncated", []string{"Bearer " + secret[:30]}, 401, "api_key_malformed", "has 30 characters; keys have 50"},
			{"10 kB key", []string{"Bearer sk_test_" + strings.Repeat("A", 10_000)}, 401, "api_key_malformed", "bytes long"},
			{"non-UTF-8", []string{"Bearer sk_test_\xff\xfe\xfd"}, 401, "api_key_malformed", "not printable ASCII"},
			{"two headers", []string{"Bearer " + secret, "Bearer " + secret}, 401, "api_key_malformed", "several Authorization headers"},
			{"basic with password", []string{basic(secret, "hunter2")}, 401, "api_key_malformed", "empty password"},
			{"basic key as password", []string{basic("", secret)}, 401, "api_key_malformed", "goes in the username"},
			{"basic not base64", []string{"Basic !!!"}, 401, "api_key_malformed", "not valid base64"},
			{"unknown key", []string{"Bearer " + unknown}, 401, "api_key_invalid", "does not exist or was revoked"},
			{"revoked key", []string{"Bearer " + revoked}, 401, "api_key_invalid", "does not exist or was revoked"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				hits := up.hitCount()
				lookups := counterValue(cacheMiss) + counterValue(cacheHit) + counterValue(cacheNegativeHit) + counterValue(cacheStale)
				req, _ := http.NewRequest("GET", base+"/v1/customers", nil)
				for _, v := range tc.auth {
					req.Header.Add("Authorization", v)
				}
				r := do(t, req)
				if r.Status != tc.status || r.Error["code"] != tc.code || !strings.Contains(r.Error["message"], tc.message) {
					t.Fatalf("got %d %s; want %d %s containing %q", r.Status, r.Body, tc.status, tc.code, tc.message)
				}
				if r.Error["type"] != "authentication_error" {
					t.Fatalf("type = %q", r.Error["type"])
				}
				if rid := r.Header.Get("Request-Id"); !ids.Valid(rid, ids.Request) || r.Error["request_id"] != rid {
					t.Fatalf("Request-Id %q, body request_id %q", rid, r.Error["request_id"])
				}
				if r.Header.Get("Www-Authenticate") == "" {
					t.Fatal("401 without WWW-Authenticate")
				}
				if up.hitCount() != hits {
					t.Fatal("a refused request reached the upstream")
				}
				after := counterValue(cacheMiss) + counterValue(cacheHit) + counterValue(cacheNegativeHit) + counterValue(cacheStale)
				if tc.code != "api_key_invalid" && after != lookups {
					t.Fatalf("%s looked the key up; malformed keys must be refused without a lookup", tc.code)
				}
				if strings.Contains(r.Body, secret) {
					t.Fatal("the key was echoed in the error")
				}
			})
		}
	})

	t.Run("secret key reaches the upstream with a signed identity", func(t *testing.T) {
		r := get(t, base, "/v1/customers", secret,
			// Spoofed identity: none of it may reach the upstream.
			"X-Org-Id", "org_evil", "X-Livemode", "true", "X-Api-Key-Id", "key_evil",
			"X-Scopes", "*", "X-Gateway-Signature", "t=1,v1=00", "Request-Id", "req_spoofed")
		if r.Status != 200 {
			t.Fatalf("got %d %s", r.Status, r.Body)
		}
		h := up.lastHeader()
		// Signed for the request the upstream received.
		id, err := identity.NewVerifier([]byte(testSecret), 0, nil).Verify(
			&http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/v1/customers"}, Header: h})
		if err != nil {
			t.Fatalf("upstream identity does not verify: %v (%v)", err, h)
		}
		rid := r.Header.Values("Request-Id")
		if len(rid) != 1 || !ids.Valid(rid[0], ids.Request) || rid[0] == "req_spoofed" {
			t.Fatalf("response Request-Id = %q", rid)
		}
		want := identity.Identity{OrgID: org, KeyID: secretID, Scopes: []string{"*"}, RequestID: rid[0], APIVersion: "2026-06-01"}
		if id.OrgID != want.OrgID || id.KeyID != want.KeyID || id.Livemode || strings.Join(id.Scopes, ",") != "*" ||
			id.RequestID != want.RequestID || id.APIVersion != want.APIVersion {
			t.Fatalf("identity = %+v, want %+v", id, want)
		}
		if v := h.Values("X-Org-Id"); len(v) != 1 {
			t.Fatalf("upstream X-Org-Id = %q", v)
		}
		if h.Get("Authorization") != "" {
			t.Fatal("the API key was forwarded upstream")
		}
		if v := r.Header.Values("Api-Version"); len(v) != 1 || v[0] != "2026-06-01" {
			t.Fatalf("response Api-Version = %q", v)
		}
	})

	t.Run("basic auth with the key as username", func(t *testing.T) {
		req, _ := http.NewRequest("GET", base+"/v1/customers", nil)
		req.SetBasicAuth(secret, "")
		if r := do(t, req); r.Status != 200 {
			t.Fatalf("got %d %s", r.Status, r.Body)
		}
	})

	t.Run("live key is livemode", func(t *testing.T) {
		if r := get(t, base, "/v1/customers", live); r.Status != 200 {
			t.Fatalf("got %d %s", r.Status, r.Body)
		}
		if got := up.lastHeader().Get("X-Livemode"); got != "true" {
			t.Fatalf("X-Livemode = %q", got)
		}
	})

	t.Run("restricted key and scopes", func(t *testing.T) {
		if r := get(t, base, "/v1/customers/cus_1", reader); r.Status != 200 {
			t.Fatalf("read: %d %s", r.Status, r.Body)
		}
		if got := up.lastHeader().Get("X-Scopes"); got != "customers:read" {
			t.Fatalf("X-Scopes = %q", got)
		}
		req, _ := http.NewRequest("POST", base+"/v1/customers", strings.NewReader(`{}`))
		req.Header.Set("Authorization", "Bearer "+reader)
		r := do(t, req)
		if r.Status != 403 || r.Error["type"] != "permission_error" || r.Error["code"] != "scope_missing" ||
			!strings.Contains(r.Error["message"], "customers:write") {
			t.Fatalf("write: %d %s", r.Status, r.Body)
		}
		// No rule covers it: restricted keys are refused, secret keys are not.
		if r := get(t, base, "/v1/balance", reader); r.Status != 403 || r.Error["code"] != "scope_missing" {
			t.Fatalf("unruled route, restricted: %d %s", r.Status, r.Body)
		}
		if r := get(t, base, "/v1/balance", secret); r.Status != 404 || r.Error["code"] != "route_missing" {
			t.Fatalf("unruled route, secret: %d %s", r.Status, r.Body)
		}
		// A crafted path is judged as the router sees it.
		if r := get(t, base, "/v1/customers/../balance", reader); r.Status != 403 {
			t.Fatalf("dot-dot path: %d %s", r.Status, r.Body)
		}
	})

	t.Run("ip allowlist", func(t *testing.T) {
		office, _ := f.key(t, org, keyOpts{allowlist: []string{"10.0.0.0/8", "2001:db8::/32"}})
		if r := get(t, base, "/v1/customers", office, "X-Forwarded-For", "10.1.2.3"); r.Status != 200 {
			t.Fatalf("allowed address: %d %s", r.Status, r.Body)
		}
		if r := get(t, base, "/v1/customers", office, "X-Forwarded-For", "2001:db8::1"); r.Status != 200 {
			t.Fatalf("allowed v6 address: %d %s", r.Status, r.Body)
		}
		r := get(t, base, "/v1/customers", office, "X-Forwarded-For", "192.0.2.7")
		if r.Status != 403 || r.Error["code"] != "ip_not_allowed" || !strings.Contains(r.Error["message"], "192.0.2.7") {
			t.Fatalf("other address: %d %s", r.Status, r.Body)
		}
	})

	t.Run("made-up keys from one address are throttled, real cached keys are not", func(t *testing.T) {
		clk.Freeze(t) // the limit counts per second
		const attacker, other = "203.0.113.7", "203.0.113.8"
		madeUp := func() string {
			k, err := keyformat.Generate(keyformat.Secret, keyformat.Sandbox)
			if err != nil {
				t.Fatal(err)
			}
			return k
		}
		var first string
		for i := range DefaultUnknownKeyLimit {
			k := madeUp()
			if i == 0 {
				first = k
			}
			if r := get(t, base, "/v1/customers", k, "X-Forwarded-For", attacker); r.Status != 401 || r.Error["code"] != "api_key_invalid" {
				t.Fatalf("unknown key %d: %d %s", i+1, r.Status, r.Body)
			}
		}
		throttled := counterValue(authThrottled)
		misses := counterValue(cacheMiss)
		fresh, _ := f.key(t, org, keyOpts{}) // real, but not cached yet
		for _, k := range []string{madeUp(), fresh} {
			r := get(t, base, "/v1/customers", k, "X-Forwarded-For", attacker)
			if r.Status != 429 || r.Error["type"] != "rate_limit_error" || r.Error["code"] != "rate_limited" ||
				r.Header.Get("Retry-After") != "1" || !strings.Contains(r.Error["message"], attacker) {
				t.Fatalf("key past the limit: %d %s (Retry-After %q)", r.Status, r.Body, r.Header.Get("Retry-After"))
			}
		}
		if got := counterValue(authThrottled) - throttled; got != 2 {
			t.Fatalf("throttled counter rose by %v, want 2", got)
		}
		if counterValue(cacheMiss)-misses != 2 {
			t.Fatal("throttled keys were not cache misses; the test proves nothing")
		}
		// What the cache can answer is still answered, from that address too.
		if r := get(t, base, "/v1/customers", secret, "X-Forwarded-For", attacker); r.Status != 200 {
			t.Fatalf("cached real key from the throttled address: %d %s", r.Status, r.Body)
		}
		if r := get(t, base, "/v1/customers", first, "X-Forwarded-For", attacker); r.Status != 401 || r.Error["code"] != "api_key_invalid" {
			t.Fatalf("cached unknown key: %d %s", r.Status, r.Body)
		}
		// Other addresses are not held back, and the real key works there.
		if r := get(t, base, "/v1/customers", madeUp(), "X-Forwarded-For", other); r.Status != 401 {
			t.Fatalf("unknown key from another address: %d %s", r.Status, r.Body)
		}
		if r := get(t, base, "/v1/customers", fresh, "X-Forwarded-For", other); r.Status != 200 {
			t.Fatalf("real key from another address: %d %s", r.Status, r.Body)
		}
		// The next second, the address may try again.
		clk.Advance(time.Second)
		if r := get(t, base, "/v1/customers", madeUp(), "X-Forwarded-For", attacker); r.Status != 401 {
			t.Fatalf("a second later: %d %s", r.Status, r.Body)
		}
	})

	t.Run("expiry is checked at request time", func(t *testing.T) {
		exp := time.Now().Add(time.Hour)
		rolled, _ := f.key(t, org, keyOpts{expiresAt: &exp, rolledTo: secretID})
		if r := get(t, base, "/v1/customers", rolled); r.Status != 200 {
			t.Fatalf("before expiry: %d %s", r.Status, r.Body)
		}
		clk.Advance(2 * time.Hour)
		defer clk.Advance(-2 * time.Hour)
		r := get(t, base, "/v1/customers", rolled)
		if r.Status != 401 || r.Error["code"] != "api_key_expired" ||
			!strings.Contains(r.Error["message"], "expired at "+exp.UTC().Format(time.RFC3339)) ||
			!strings.Contains(r.Error["message"], secretID) {
			t.Fatalf("after expiry: %d %s", r.Status, r.Body)
		}
	})

	t.Run("revocation of a cached key applies within a second", func(t *testing.T) {
		doomed, _ := f.key(t, org, keyOpts{})
		for range 3 {
			if r := get(t, base, "/v1/customers", doomed); r.Status != 200 {
				t.Fatalf("before revocation: %d %s", r.Status, r.Body)
			}
		}
		f.revoke(t, doomed)
		took := eventually(t, time.Second, "revoked key refused", func() bool {
			return get(t, base, "/v1/customers", doomed).Status == 401
		})
		t.Logf("revocation applied after %s", took)
	})

	t.Run("api versions", func(t *testing.T) {
		fresh := f.org(t, "")
		k, _ := f.key(t, fresh, keyOpts{})
		r := get(t, base, "/v1/customers", k)
		if r.Status != 200 || r.Header.Get("Api-Version") != apiversion.Latest() {
			t.Fatalf("first request: %d %q", r.Status, r.Header.Get("Api-Version"))
		}
		eventually(t, 2*time.Second, "org pinned", func() bool {
			var v *string
			_ = pool.QueryRow(context.Background(), `SELECT api_version FROM organizations WHERE id = $1`, fresh).Scan(&v)
			return v != nil && *v == apiversion.Latest()
		})

		// The header on the very first request decides the pin.
		other := f.org(t, "")
		k2, _ := f.key(t, other, keyOpts{})
		if r := get(t, base, "/v1/customers", k2, "Api-Version", "2026-06-01"); r.Header.Get("Api-Version") != "2026-06-01" {
			t.Fatalf("first request with header: %d %q", r.Status, r.Header.Get("Api-Version"))
		}
		eventually(t, 2*time.Second, "org pinned to the header's version", func() bool {
			var v *string
			_ = pool.QueryRow(context.Background(), `SELECT api_version FROM organizations WHERE id = $1`, other).Scan(&v)
			return v != nil && *v == "2026-06-01"
		})
		if r := get(t, base, "/v1/customers", k2); r.Header.Get("Api-Version") != "2026-06-01" {
			t.Fatalf("pinned: %q", r.Header.Get("Api-Version"))
		}
		// The header overrides the pin for one request, upstream included.
		r = get(t, base, "/v1/customers", k2, "Api-Version", "2026-11-01")
		if r.Header.Get("Api-Version") != "2026-11-01" || up.lastHeader().Get("Api-Version") != "2026-11-01" {
			t.Fatalf("override: response %q, upstream %q", r.Header.Get("Api-Version"), up.lastHeader().Get("Api-Version"))
		}
		r = get(t, base, "/v1/customers", k2, "Api-Version", "2020-01-01")
		if r.Status != 400 || r.Error["type"] != "invalid_request_error" || r.Error["code"] != "api_version_invalid" ||
			!strings.Contains(r.Error["message"], strings.Join(apiversion.Supported, ", ")) {
			t.Fatalf("unknown version: %d %s", r.Status, r.Body)
		}
	})

	t.Run("dead upstream is a 502 error object", func(t *testing.T) {
		r := get(t, base, "/v1/dead", secret)
		if r.Status != 502 || r.Error["type"] != "api_error" || r.Error["code"] != "upstream_unavailable" ||
			r.Error["request_id"] == "" || r.Error["request_id"] != r.Header.Get("Request-Id") {
			t.Fatalf("got %d %s (Request-Id %q)", r.Status, r.Body, r.Header.Get("Request-Id"))
		}
		if strings.Contains(r.Body, "127.0.0.1") || strings.Contains(r.Body, "dial") {
			t.Fatalf("internal detail leaked: %s", r.Body)
		}
	})

	t.Run("unknown routes", func(t *testing.T) {
		r := get(t, base, "/nope", "")
		if r.Status != 404 || r.Error["code"] != "route_missing" || r.Error["request_id"] != r.Header.Get("Request-Id") {
			t.Fatalf("got %d %s", r.Status, r.Body)
		}
	})

	t.Run("body too large", func(t *testing.T) {
		big := strings.Repeat("x", 2048)
		for _, chunked := range []bool{false, true} {
			req, _ := http.NewRequest("POST", base+"/v1/customers", strings.NewReader(big))
			if chunked {
				req.ContentLength = -1 // no Content-Length: the limit hits while proxying
			}
			req.Header.Set("Authorization", "Bearer "+secret)
			r := do(t, req)
			if r.Status != 413 || r.Error["code"] != "body_too_large" || r.Error["request_id"] == "" {
				t.Fatalf("chunked=%v: got %d %s", chunked, r.Status, r.Body)
			}
		}
	})

	t.Run("last_used_at is written in batches", func(t *testing.T) {
		eventually(t, 3*time.Second, "last_used_at set", func() bool {
			var n int
			_ = pool.QueryRow(context.Background(),
				`SELECT count(*) FROM api_keys WHERE id = $1 AND last_used_at > now() - interval '1 minute'`, secretID).Scan(&n)
			return n == 1
		})
	})
}

// TestRevocationReachesEveryGateway runs two gateways with separate stores
// (pools, caches and LISTEN connections); one revocation must reach both.
func TestRevocationReachesEveryGateway(t *testing.T) {
	pool, dsn := testenv.Pool(t)
	f := fixture{pool, dsn}
	up := newUpstream(t)
	p1, p2 := testenv.FreePort(t), testenv.FreePort(t)
	runCaddy(t, globalOptions+
		site(p1, withParam(dsn, "application_name=gateway1"), up, testenv.FreePort(t), "")+
		site(p2, withParam(dsn, "application_name=gateway2"), up, testenv.FreePort(t), ""))
	if n := countStores(); n < 2 {
		t.Fatalf("%d key stores; the gateways must not share one", n)
	}

	org := f.org(t, "")
	k, _ := f.key(t, org, keyOpts{})
	bases := []string{fmt.Sprintf("http://127.0.0.1:%d", p1), fmt.Sprintf("http://127.0.0.1:%d", p2)}
	for _, b := range bases {
		if r := get(t, b, "/v1/customers", k); r.Status != 200 {
			t.Fatalf("%s: %d %s", b, r.Status, r.Body)
		}
	}
	f.revoke(t, k)
	start := time.Now()
	for _, b := range bases {
		eventually(t, time.Second-time.Since(start), "revoked on "+b, func() bool {
			return get(t, b, "/v1/customers", k).Status == 401
		})
	}
	t.Logf("both gateways refused the key %s after the revocation", time.Since(start))
}

// TestPostgresDown takes the key store's Postgres away: cached keys keep
// working, unknown keys get 503 (never 401), and when Postgres is back the
// cache starts over, so a revocation missed meanwhile takes effect.
func TestPostgresDown(t *testing.T) {
	pool, dsn := testenv.Pool(t)
	f := fixture{pool, dsn}
	clk := useFakeClock(t)
	up := newUpstream(t)
	proxy := newTCPProxy(t, pgHostPort(t, dsn))
	viaProxy := strings.Replace(dsn, pgHostPort(t, dsn), proxy.addr, 1)
	port := testenv.FreePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	runCaddy(t, globalOptions+site(port, viaProxy, up, testenv.FreePort(t), "query_timeout 500ms"))

	org := f.org(t, "2026-11-01")
	cached, _ := f.key(t, org, keyOpts{})
	if r := get(t, base, "/v1/customers", cached); r.Status != 200 {
		t.Fatalf("warming: %d %s", r.Status, r.Body)
	}

	proxy.stop()
	unknown, _ := f.key(t, org, keyOpts{}) // exists, but this gateway cannot know
	start := time.Now()
	r := get(t, base, "/v1/customers", unknown)
	if r.Status != 503 || r.Error["type"] != "api_error" || r.Error["code"] != "auth_unavailable" {
		t.Fatalf("unknown key with Postgres down: %d %s", r.Status, r.Body)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("refusal took %s; lookups must be bounded", d)
	}
	// Far past the TTL: the cached copy is still served.
	clk.Advance(time.Hour)
	for range 3 {
		if r := get(t, base, "/v1/customers", cached); r.Status != 200 {
			t.Fatalf("cached key with Postgres down: %d %s", r.Status, r.Body)
		}
	}

	// Revoked while this gateway could not hear it.
	f.revoke(t, cached)
	flushes := counterValue(cacheInvalidations.WithLabelValues("flush"))
	proxy.start(t)
	eventually(t, 10*time.Second, "LISTEN reconnected and flushed the cache", func() bool {
		return counterValue(cacheInvalidations.WithLabelValues("flush")) > flushes
	})
	eventually(t, 10*time.Second, "missed revocation applied after reconnect", func() bool {
		return get(t, base, "/v1/customers", cached).Status == 401
	})
	if r := get(t, base, "/v1/customers", unknown); r.Status != 200 {
		t.Fatalf("unknown key after recovery: %d %s", r.Status, r.Body)
	}
}

func countStores() int {
	n := 0
	stores.Range(func(any, any) bool { n++; return true })
	return n
}

func pgHostPort(t testing.TB, dsn string) string {
	t.Helper()
	i := strings.Index(dsn, "@")
	j := strings.Index(dsn[i:], "/")
	if i < 0 || j < 0 {
		t.Fatalf("cannot find host in DSN")
	}
	return dsn[i+1 : i+j]
}

// TestReloadKeepsTheStore: a config reload with the same database reuses
// the pool, the warm cache and the LISTEN connection.
func TestReloadKeepsTheStore(t *testing.T) {
	pool, dsn := testenv.Pool(t)
	f := fixture{pool, dsn}
	up := newUpstream(t)
	port, dead := testenv.FreePort(t), testenv.FreePort(t)
	runCaddy(t, globalOptions+site(port, dsn, up, dead, ""))
	k, _ := f.key(t, f.org(t, ""), keyOpts{})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	if r := get(t, base, "/v1/customers", k); r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	before := onlyStore(t)

	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(globalOptions+site(port, dsn, up, dead, "cache_ttl 10m")), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatal(err)
	}
	if after := onlyStore(t); after != before {
		t.Fatal("the reload replaced the key store")
	}
	if known, _ := before.cache.len(); known != 1 {
		t.Fatalf("cache holds %d keys after the reload, want the warm one", known)
	}
	misses := counterValue(cacheMiss)
	if r := get(t, base, "/v1/customers", k); r.Status != 200 || counterValue(cacheMiss) != misses {
		t.Fatalf("after reload: %d %s (misses %v → %v)", r.Status, r.Body, misses, counterValue(cacheMiss))
	}
}

func onlyStore(t *testing.T) *store {
	t.Helper()
	var all []*store
	stores.Range(func(_, v any) bool { all = append(all, v.(*store)); return true })
	if len(all) != 1 {
		t.Fatalf("%d key stores, want 1", len(all))
	}
	return all[0]
}

// TestUnknownKeysInFlightAreThrottled holds the key table locked, so that
// lookups stay in flight: made-up keys from one address cannot each start
// a lookup before the first failure counted, and a client that hangs up
// while its lookup waits is counted all the same (the load goes on
// without it, holding a connection of the pool).
func TestUnknownKeysInFlightAreThrottled(t *testing.T) {
	pool, dsn := testenv.Pool(t)
	clk := useFakeClock(t)
	clk.Freeze(t) // the limit counts per second
	up := newUpstream(t)
	port := testenv.FreePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	runCaddy(t, globalOptions+site(port, dsn, up, testenv.FreePort(t), "query_timeout 1m\n\t\tunknown_key_limit 2"))

	const attacker = "203.0.113.7"
	madeUp := func() string {
		k, err := keyformat.Generate(keyformat.Secret, keyformat.Sandbox)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	ctx := context.Background()
	lock, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(ctx)
	if _, err := lock.Exec(ctx, `LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	waiting := func() int {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%k.key_hash%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	send := func(ctx context.Context, key string) <-chan response {
		out := make(chan response, 1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/customers", nil)
			req.Header.Set("Authorization", "Bearer "+key)
			req.Header.Set("X-Forwarded-For", attacker)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				out <- response{}
				return
			}
			defer resp.Body.Close()
			out <- response{Status: resp.StatusCode}
		}()
		return out
	}

	// One client hangs up while its lookup waits; another waits.
	hangUp, cancel := context.WithCancel(ctx)
	gone := send(hangUp, madeUp())
	eventually(t, 10*time.Second, "the first lookup waiting for the lock", func() bool { return waiting() == 1 })
	cancel()
	<-gone
	inFlight := send(ctx, madeUp())
	eventually(t, 10*time.Second, "the second lookup waiting for the lock", func() bool { return waiting() == 2 })

	third := send(ctx, madeUp())
	for {
		select {
		case r := <-third:
			if r.Status != 429 {
				t.Fatalf("a third made-up key while two lookups were in flight: %d, want 429", r.Status)
			}
		default:
			if waiting() > 2 {
				t.Fatal("a third made-up key reached Postgres while two lookups were in flight")
			}
			runtime.Gosched()
			continue
		}
		break
	}

	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if r := <-inFlight; r.Status != 401 {
		t.Fatalf("the lookup in flight: %d, want 401", r.Status)
	}
	// Both lookups found nothing, the hung-up one included: the limit is
	// reached for this second.
	if r := get(t, base, "/v1/customers", madeUp(), "X-Forwarded-For", attacker); r.Status != 429 {
		t.Fatalf("a made-up key after two failures, one hung up: %d %s", r.Status, r.Body)
	}
}
