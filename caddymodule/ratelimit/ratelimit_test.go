package ratelimit

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/caddymodule/ratelimit/keyspace"
)

// t0 is an arbitrary instant for injected clocks, on a whole second.
var t0 = time.Date(2030, 3, 14, 15, 9, 26, 0, time.UTC)

var (
	liveKey    = caller{org: "org_a", key: "key_live1", env: "live"}
	liveKey2   = caller{org: "org_a", key: "key_live2", env: "live"}
	sandboxKey = caller{org: "org_a", key: "key_test1", env: "sandbox"}
)

func perKey(r Rate) *Policy {
	return &Policy{Name: "per-key", Key: "{http.auth.api_key.key_id}", Rate: r}
}

func TestGCRAAdmitsExactlyBurstThenRate(t *testing.T) {
	type step struct {
		advance time.Duration
		send    int
		want    int
	}
	tests := []struct {
		name  string
		rate  Rate
		steps []step
	}{
		{"burst equals rate", Rate{Requests: 10, Burst: 10}, []step{
			{0, 15, 10},                     // the whole burst at once, nothing more
			{100 * time.Millisecond, 3, 1},  // one emission interval later: one more
			{450 * time.Millisecond, 10, 4}, // 4.5 intervals: four (half an interval does not count)
			{10 * time.Second, 20, 10},      // idle long enough: the full burst again
		}},
		{"burst below rate", Rate{Requests: 10, Burst: 5}, []step{
			{0, 8, 5},
			{250 * time.Millisecond, 5, 2},
			{time.Second, 10, 5},
		}},
		{"burst above rate, per minute", Rate{Requests: 60, Period: caddy.Duration(time.Minute), Burst: 100}, []step{
			{0, 120, 100},
			{time.Second, 5, 1},
			{30 * time.Second, 40, 30},
		}},
		{"one per hour", Rate{Requests: 1, Period: caddy.Duration(time.Hour)}, []step{
			{0, 3, 1},
			{59 * time.Minute, 1, 0},
			{time.Minute, 2, 1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newClock(t0)
			g := startGateway(t, &Handler{Policies: []*Policy{perKey(tt.rate)}}, clock)
			for i, s := range tt.steps {
				clock.Advance(s.advance)
				if got := g.admitted(t, liveKey, "/", s.send); got != s.want {
					t.Fatalf("step %d (+%s, %d sent): admitted %d, want %d", i, s.advance, s.send, got, s.want)
				}
			}
		})
	}
}

func TestHeadersOnEveryResponse(t *testing.T) {
	clock := newClock(time.Date(2030, 4, 10, 0, 0, 0, 0, time.UTC))
	g := startGateway(t, &Handler{
		Policies: []*Policy{
			perKey(Rate{Requests: 10, Burst: 3}),
			{Name: "per-org", Key: "{http.auth.api_key.org_id}", Rate: Rate{Requests: 1000}},
		},
		Quotas: []*Quota{{Name: "monthly", Key: "{http.auth.api_key.org_id}", Limit: 1_000_000}},
	}, clock)

	wantPolicy := `"per-key";q=10;w=1;gatehouse-burst=3, "per-org";q=1000;w=1, "monthly";q=1000000;w=2592000`
	tests := []struct {
		name        string
		status      int
		rateLimit   string
		retryAfter  string
		errorCode   string
		messageHave []string
	}{
		// The per-key burst of 3 is the scarcest: it is the one reported.
		{"first", 200, `"per-key";r=2;t=1`, "", "", nil},
		{"second", 200, `"per-key";r=1;t=1`, "", "", nil},
		{"third", 200, `"per-key";r=0;t=1`, "", "", nil},
		{"refused", 429, `"per-key";r=0;t=1`, "1", "rate_limited", []string{"'per-key'", "10 requests per second"}},
	}
	for _, tt := range tests {
		r := g.get(t, liveKey, "/v1/customers")
		if r.status != tt.status {
			t.Fatalf("%s: status %d, want %d: %s", tt.name, r.status, tt.status, r.body)
		}
		if got := r.header.Get("RateLimit-Policy"); got != wantPolicy {
			t.Errorf("%s: RateLimit-Policy = %s\nwant %s", tt.name, got, wantPolicy)
		}
		if got := r.header.Get("RateLimit"); got != tt.rateLimit {
			t.Errorf("%s: RateLimit = %s, want %s", tt.name, got, tt.rateLimit)
		}
		if got := r.header.Get("Retry-After"); got != tt.retryAfter {
			t.Errorf("%s: Retry-After = %q, want %q", tt.name, got, tt.retryAfter)
		}
		if tt.errorCode == "" {
			continue
		}
		if ct := r.header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: Content-Type = %q", tt.name, ct)
		}
		e := r.errorObject(t)
		if e["type"] != "rate_limit_error" || e["code"] != tt.errorCode {
			t.Errorf("%s: error %s/%s, want rate_limit_error/%s", tt.name, e["type"], e["code"], tt.errorCode)
		}
		for _, s := range tt.messageHave {
			if !contains(e["message"], s) {
				t.Errorf("%s: message %q lacks %q", tt.name, e["message"], s)
			}
		}
		if !strings.HasSuffix(e["doc_url"], "#"+tt.errorCode) {
			t.Errorf("%s: doc_url = %q", tt.name, e["doc_url"])
		}
		if id := r.header.Get("Request-Id"); id == "" || e["request_id"] != id {
			t.Errorf("%s: request_id %q, Request-Id header %q", tt.name, e["request_id"], id)
		}
	}
}

func TestRefusalDoesNotConsumeOtherPolicies(t *testing.T) {
	clock := newClock(t0)
	hourly := func(burst int) Rate { return Rate{Requests: 1, Period: caddy.Duration(time.Hour), Burst: burst} }
	g := startGateway(t, &Handler{
		Policies: []*Policy{
			perKey(hourly(3)),
			{Name: "per-org", Key: "{http.auth.api_key.org_id}", Rate: hourly(4)},
		},
		Quotas: []*Quota{{Name: "daily", Key: "{http.auth.api_key.org_id}", Limit: 4, Period: PeriodDay}},
	}, clock)

	// Key 1 gets its burst of 3; its 7 refusals must not touch the
	// organisation's GCRA budget of 4 nor its daily quota of 4.
	if got := g.admitted(t, liveKey, "/", 10); got != 3 {
		t.Fatalf("key 1 admitted %d, want 3", got)
	}
	if got := g.admitted(t, liveKey2, "/", 10); got != 1 {
		t.Fatalf("key 2 admitted %d, want the 1 left of the organisation's 4", got)
	}
	r := g.get(t, caller{org: "org_a", key: "key_live3", env: "live"}, "/")
	if r.status != 429 {
		t.Fatalf("key 3: status %d, want 429 (organisation exhausted)", r.status)
	}
	// Both per-org (free again in 1 h) and daily (at midnight) refuse; the
	// quota frees up last, so it is the one named.
	if e := r.errorObject(t); e["code"] != "quota_exceeded" {
		t.Errorf("code = %s, want quota_exceeded: %s", e["code"], e["message"])
	}
	used, err := g.rdb.HGet(context.Background(),
		keyspace.Counter(g.prefix, "org_a", "live", "daily", "org_a"), "n").Int()
	if err != nil || used != 4 {
		t.Errorf("daily quota counter = %d (%v), want 4", used, err)
	}
}

func TestSandboxAndLiveHaveSeparateDefaults(t *testing.T) {
	clock := newClock(t0)
	g := startGateway(t, &Handler{
		Policies: []*Policy{{
			Name: "per-key", Key: "{http.auth.api_key.key_id}",
			Rate:        Rate{Requests: 100},
			SandboxRate: &Rate{Requests: 25},
		}},
		Quotas: []*Quota{{Name: "monthly", Key: "{http.auth.api_key.org_id}", Limit: 1000, SandboxLimit: 50}},
	}, clock)
	tests := []struct {
		caller     caller
		admitted   int
		wantPolicy string
	}{
		{liveKey, 100, `"per-key";q=100;w=1, "monthly";q=1000;w=2678400`},
		{sandboxKey, 25, `"per-key";q=25;w=1, "monthly";q=50;w=2678400`},
	}
	for _, tt := range tests {
		t.Run(tt.caller.env, func(t *testing.T) {
			if got := g.get(t, tt.caller, "/").header.Get("RateLimit-Policy"); got != tt.wantPolicy {
				t.Errorf("RateLimit-Policy = %s, want %s", got, tt.wantPolicy)
			}
			if got := 1 + g.admitted(t, tt.caller, "/", 150); got != tt.admitted {
				t.Errorf("admitted %d, want %d", got, tt.admitted)
			}
		})
	}
	// The same organisation's quota is counted per environment.
	used := func(env string) int {
		n, _ := g.rdb.HGet(context.Background(), keyspace.Counter(g.prefix, "org_a", env, "monthly", "org_a"), "n").Int()
		return n
	}
	if used("live") != 100 || used("sandbox") != 25 {
		t.Errorf("quota used live %d sandbox %d, want 100 and 25", used("live"), used("sandbox"))
	}
}

func TestOverridesApplyOnTheNextRequest(t *testing.T) {
	clock := newClock(t0)
	g := startGateway(t, &Handler{
		Policies: []*Policy{
			perKey(Rate{Requests: 100}),
			{Name: "per-org", Key: "{http.auth.api_key.org_id}", Rate: Rate{Requests: 1000}},
		},
		Quotas: []*Quota{{Name: "monthly", Key: "{http.auth.api_key.org_id}", Limit: 1000}},
	}, clock)
	ctx := context.Background()
	hash := keyspace.Overrides(g.prefix, "org_a")
	set := func(field string, o keyspace.Override) {
		t.Helper()
		if err := g.rdb.HSet(ctx, hash, field, keyspace.Encode(o)).Err(); err != nil {
			t.Fatal(err)
		}
	}

	if got := g.get(t, liveKey, "/").header.Get("RateLimit-Policy"); !strings.HasPrefix(got, `"per-key";q=100;w=1,`) {
		t.Fatalf("before override: %s", got)
	}
	// The organisation's plan: 3 per 10 s per key, and a per-key exception.
	set(keyspace.Field("live", "per-key", ""), keyspace.Override{Quota: 3, Window: 10})
	set(keyspace.Field("live", "per-key", liveKey2.key), keyspace.Override{Quota: 5, Window: 10, Burst: 1})
	set(keyspace.Field("live", "monthly", ""), keyspace.Override{Quota: 7, Window: 1})
	clock.Advance(time.Minute) // let the first request's state drain

	tests := []struct {
		caller     caller
		wantPolicy string
		admitted   int
	}{
		{liveKey, `"per-key";q=3;w=10, "per-org";q=1000;w=1, "monthly";q=7;w=2678400`, 3},
		{liveKey2, `"per-key";q=5;w=10;gatehouse-burst=1, "per-org";q=1000;w=1, "monthly";q=7;w=2678400`, 1},
		// Sandbox has its own fields: the live overrides do not apply.
		{sandboxKey, `"per-key";q=100;w=1, "per-org";q=1000;w=1, "monthly";q=1000;w=2678400`, 10},
	}
	for _, tt := range tests {
		first := g.get(t, tt.caller, "/")
		if got := first.header.Get("RateLimit-Policy"); got != tt.wantPolicy {
			t.Errorf("%s: RateLimit-Policy = %s\nwant %s", tt.caller.key, got, tt.wantPolicy)
		}
		if got := 1 + g.admitted(t, tt.caller, "/", 9); got != tt.admitted {
			t.Errorf("%s: admitted %d, want %d", tt.caller.key, got, tt.admitted)
		}
	}

	// The monthly override of 7 now binds the organisation (1 + 3 + 1 live
	// requests so far, the first one before the override).
	clock.Advance(time.Hour)
	if got := g.admitted(t, liveKey, "/", 5); got != 2 {
		t.Errorf("after the quota override: admitted %d, want 2", got)
	}
	// Deleting the overrides restores the configured limits on the next
	// request. The key's state holds 6.7 s of debt from 3 per 10 s; it is
	// capped at one full burst of the restored 100/s, so the key recovers at
	// the new rate at once instead of waiting the debt out.
	if err := g.rdb.Del(ctx, hash).Err(); err != nil {
		t.Fatal(err)
	}
	r := g.get(t, liveKey, "/")
	if got := r.header.Get("RateLimit-Policy"); !strings.HasPrefix(got, `"per-key";q=100;w=1,`) {
		t.Errorf("after deleting overrides: RateLimit-Policy = %s", got)
	}
	clock.Advance(time.Second)
	if got := g.admitted(t, liveKey, "/", 120); got != 100 {
		t.Errorf("a second after deleting the overrides: admitted %d, want the full burst of 100", got)
	}
}

// An override out of keyspace.CheckBounds — which the control plane refuses,
// so only a hand-written or foreign value — is ignored: the configured limit
// applies, where a quota of 2^63-1 used to come back as a negative
// RateLimit-Policy.
func TestOverridesOutOfBoundsAreIgnored(t *testing.T) {
	for _, o := range []keyspace.Override{
		{Quota: 1<<63 - 1, Window: 1},
		{Quota: keyspace.MaxCount + 1, Window: 1},
		{Quota: 1, Window: 1<<63 - 1},
		{Quota: 1, Window: 1, Burst: 1<<63 - 1},
		{Quota: 1, Window: keyspace.MaxWindow, Burst: 2},
	} {
		clock := newClock(t0)
		g := startGateway(t, &Handler{
			Policies: []*Policy{perKey(Rate{Requests: 100})},
			Quotas:   []*Quota{{Name: "monthly", Key: "{http.auth.api_key.org_id}", Limit: 1000}},
		}, clock)
		hash := keyspace.Overrides(g.prefix, "org_a")
		for _, f := range []string{keyspace.Field("live", "per-key", ""), keyspace.Field("live", "monthly", "")} {
			if err := g.rdb.HSet(context.Background(), hash, f, keyspace.Encode(o)).Err(); err != nil {
				t.Fatal(err)
			}
		}
		r := g.get(t, liveKey, "/")
		if got, want := r.header.Get("RateLimit-Policy"), `"per-key";q=100;w=1, "monthly";q=1000;w=2678400`; r.status != 200 || got != want {
			t.Errorf("override %q: %d RateLimit-Policy = %s, want %s", keyspace.Encode(o), r.status, got, want)
		}
	}
}

func TestQuotaResetsAtThePeriodBoundary(t *testing.T) {
	tests := []struct {
		period    string
		boundary  time.Time
		wantW     int64
		wantReset string
	}{
		{PeriodMonth, time.Date(2032, 3, 1, 0, 0, 0, 0, time.UTC), 29 * 86400, "2032-03-01T00:00:00Z"}, // leap February
		{PeriodMonth, time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC), 31 * 86400, "2031-01-01T00:00:00Z"},
		{PeriodDay, time.Date(2030, 7, 5, 0, 0, 0, 0, time.UTC), 86400, "2030-07-05T00:00:00Z"},
		{PeriodHour, time.Date(2030, 7, 4, 13, 0, 0, 0, time.UTC), 3600, "2030-07-04T13:00:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.period+" "+tt.wantReset, func(t *testing.T) {
			clock := newClock(tt.boundary.Add(-1500 * time.Millisecond))
			g := startGateway(t, &Handler{Quotas: []*Quota{{
				Name: "q", Key: "{http.auth.api_key.org_id}", Limit: 3, Period: tt.period,
			}}}, clock)
			if got := g.admitted(t, liveKey, "/", 3); got != 3 {
				t.Fatalf("admitted %d of the quota of 3", got)
			}
			r := g.get(t, liveKey, "/")
			if r.status != 429 {
				t.Fatalf("4th request: status %d", r.status)
			}
			e := r.errorObject(t)
			if e["code"] != "quota_exceeded" || !contains(e["message"], "resets at "+tt.wantReset) {
				t.Errorf("error %s: %s", e["code"], e["message"])
			}
			if got := r.header.Get("Retry-After"); got != "2" {
				t.Errorf("Retry-After = %s, want 2 (1.5 s, rounded up)", got)
			}
			wantPolicy := `"q";q=3;w=` + strconv.FormatInt(tt.wantW, 10)
			if got := r.header.Get("RateLimit-Policy"); got != wantPolicy {
				t.Errorf("RateLimit-Policy = %s, want %s", got, wantPolicy)
			}
			if got := r.header.Get("RateLimit"); got != `"q";r=0;t=2` {
				t.Errorf("RateLimit = %s", got)
			}

			clock.Advance(time.Second) // still 0.5 s before the boundary
			if got := g.admitted(t, liveKey, "/", 1); got != 0 {
				t.Fatalf("admitted before the boundary")
			}
			clock.Advance(500 * time.Millisecond) // exactly on it
			if got := g.admitted(t, liveKey, "/", 5); got != 3 {
				t.Fatalf("new period admitted %d, want 3", got)
			}
		})
	}
}

func TestRedisDown(t *testing.T) {
	down := "redis://127.0.0.1:1/0" // nothing listens on port 1
	t.Run("fail open lets requests through and counts them", func(t *testing.T) {
		g := startGateway(t, &Handler{Redis: down, Policies: []*Policy{perKey(Rate{Requests: 1})}}, nil)
		// The collectors live for the process: count from here.
		errorsBefore := counter(t, "caddy_gatehouse_ratelimit_redis_errors_total", nil)
		decisionsBefore := counter(t, "caddy_gatehouse_ratelimit_decisions_total", map[string]string{"policy": "per-key", "outcome": "error"})
		start := time.Now()
		for range 5 {
			r := g.get(t, liveKey, "/")
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if r.header.Get("RateLimit") != "" {
				t.Errorf("RateLimit header without a decision: %s", r.header.Get("RateLimit"))
			}
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("5 requests took %s with Redis down; timeouts must bound them", d)
		}
		if n := counter(t, "caddy_gatehouse_ratelimit_redis_errors_total", nil) - errorsBefore; n != 5 {
			t.Errorf("redis errors = %v, want 5", n)
		}
		if n := counter(t, "caddy_gatehouse_ratelimit_decisions_total",
			map[string]string{"policy": "per-key", "outcome": "error"}) - decisionsBefore; n != 5 {
			t.Errorf("error decisions = %v, want 5", n)
		}
	})
	t.Run("fail closed answers 503", func(t *testing.T) {
		g := startGateway(t, &Handler{Redis: down, FailClosed: true, Policies: []*Policy{perKey(Rate{Requests: 1})}}, nil)
		errorsBefore := counter(t, "caddy_gatehouse_ratelimit_redis_errors_total", nil)
		r := g.get(t, liveKey, "/")
		if r.status != http.StatusServiceUnavailable {
			t.Fatalf("status %d, want 503", r.status)
		}
		if e := r.errorObject(t); e["type"] != "api_error" || e["code"] != "rate_limit_unavailable" {
			t.Errorf("error %s/%s", e["type"], e["code"])
		}
		if got := r.header.Get("Retry-After"); got != "1" {
			t.Errorf("Retry-After = %q, want 1", got)
		}
		if n := counter(t, "caddy_gatehouse_ratelimit_redis_errors_total", nil) - errorsBefore; n != 1 {
			t.Errorf("redis errors = %v, want 1", n)
		}
	})
}

func TestMetrics(t *testing.T) {
	g := startGateway(t, &Handler{
		Policies: []*Policy{perKey(Rate{Requests: 1, Period: caddy.Duration(time.Hour), Burst: 2})},
		Quotas:   []*Quota{{Name: "monthly", Key: "{http.auth.api_key.org_id}", Limit: 100}},
	}, newClock(t0))
	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"caddy_gatehouse_ratelimit_decisions_total", map[string]string{"policy": "per-key", "outcome": "allowed"}, 2},
		{"caddy_gatehouse_ratelimit_decisions_total", map[string]string{"policy": "per-key", "outcome": "limited"}, 3},
		{"caddy_gatehouse_ratelimit_decisions_total", map[string]string{"policy": "monthly", "outcome": "allowed"}, 2},
		{"caddy_gatehouse_ratelimit_decisions_total", map[string]string{"policy": "monthly", "outcome": "limited"}, 0},
		{"caddy_gatehouse_quota_consumed_total", map[string]string{"policy": "monthly"}, 2},
	}
	// The collectors live for the process (counts survive reloads): count
	// what these requests add.
	before := make([]float64, len(tests))
	for i, tt := range tests {
		before[i] = counter(t, tt.name, tt.labels)
	}
	g.admitted(t, liveKey, "/", 5)
	for i, tt := range tests {
		if got := counter(t, tt.name, tt.labels) - before[i]; got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
}

func TestPoliciesApplyOnlyWhereTheyMatch(t *testing.T) {
	g := startGateway(t, &Handler{Policies: []*Policy{
		perKey(Rate{Requests: 100}),
		{Name: "per-ip", Key: "{http.vars.client_ip}", Rate: Rate{Requests: 50}},
		{
			Name: "customers", Key: "{http.auth.api_key.org_id}", Rate: Rate{Requests: 20},
			MatchRaw: caddyhttp.RawMatcherSets{{"path": []byte(`["/v1/customers*"]`)}},
		},
	}}, newClock(t0))
	tests := []struct {
		name   string
		caller caller
		path   string
		want   string
	}{
		{"unauthenticated: only per-ip", caller{}, "/v1/customers", `"per-ip";q=50;w=1`},
		{"authenticated elsewhere", liveKey, "/v1/charges", `"per-key";q=100;w=1, "per-ip";q=50;w=1`},
		{"authenticated on the route", liveKey, "/v1/customers/cus_1", `"per-key";q=100;w=1, "per-ip";q=50;w=1, "customers";q=20;w=1`},
	}
	for _, tt := range tests {
		r := g.get(t, tt.caller, tt.path)
		if got := r.header.Get("RateLimit-Policy"); r.status != 200 || got != tt.want {
			t.Errorf("%s: %d RateLimit-Policy = %s, want %s", tt.name, r.status, got, tt.want)
		}
	}
	// The route's budget of 20 is shared by every key of the organisation.
	if got := g.admitted(t, liveKey2, "/v1/customers", 30); got != 19 {
		t.Errorf("route admitted %d more, want the 19 left", got)
	}
	if got := g.admitted(t, liveKey2, "/v1/charges", 5); got != 5 {
		t.Errorf("other routes admitted %d, want 5", got)
	}
}

func TestEveryKeyExpires(t *testing.T) {
	clock := newClock(t0)
	g := startGateway(t, &Handler{
		Policies: []*Policy{
			// Slow rates: the buckets' TTLs run on Redis's real clock, and
			// must outlive a slow test machine between request and check.
			perKey(Rate{Requests: 10, Period: caddy.Duration(time.Minute)}),
			{Name: "per-ip", Key: "{http.vars.client_ip}", Rate: Rate{Requests: 5, Period: caddy.Duration(time.Minute)}},
		},
		Quotas: []*Quota{{Name: "hourly", Key: "{http.auth.api_key.org_id}", Limit: 100, Period: PeriodHour}},
	}, clock)
	g.admitted(t, liveKey, "/", 3)
	g.admitted(t, caller{}, "/", 3) // unauthenticated: keys tagged by IP

	keys := g.keys(t)
	// Per-IP state of a GCRA policy lives no longer than it takes to drain:
	// at most burst × interval = 1 minute here.
	wantMax := map[string]time.Duration{
		keyspace.Bucket(g.prefix, "ip:127.0.0.1", "live", "per-ip", "127.0.0.1"): time.Minute,
		keyspace.Bucket(g.prefix, "org_a", "live", "per-ip", "127.0.0.1"):        time.Minute,
		keyspace.Bucket(g.prefix, "org_a", "live", "per-key", liveKey.key):       time.Minute,
		keyspace.Counter(g.prefix, "org_a", "live", "hourly", "org_a"):           time.Hour,
	}
	for _, k := range keys {
		ttl, err := g.rdb.PTTL(context.Background(), k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if ttl <= 0 {
			t.Errorf("%s has no TTL (%s): state would accumulate", k, ttl)
		}
		if max, ok := wantMax[k]; ok && ttl > max {
			t.Errorf("%s TTL %s, want at most %s", k, ttl, max)
		}
		delete(wantMax, k)
	}
	for k := range wantMax {
		t.Errorf("expected key %s missing; have %v", k, keys)
	}
}

// A key naming a placeholder that can never be set would turn its limit
// off without a word (an empty key skips the limit): refused at load, in
// JSON as in a Caddyfile; real names pass.
func TestKeysNamingNoPlaceholderAreRefused(t *testing.T) {
	policy := func(key string) *Handler {
		return &Handler{Policies: []*Policy{{Name: "p", Key: key, Rate: Rate{Requests: 1}}}}
	}
	// Caddyfile shorthands with a dot ({header.X}, {query.x}) are no
	// placeholders either: the policy would be skipped on every request.
	// An unclosed one is text: every key of an organisation would share
	// one per-key limit.
	for _, bad := range []string{"{client_ip}", "{http.auth.api_key.keyid}", "org:{http.auth.api_key.org}", "{header.X-Tenant}", "{query.tenant}",
		"{http.auth.api_key.key_id", "{http.auth.api_key.org_id}:{http.request.header.X-Tenant"} {
		if err := policy(bad).Validate(); err == nil || !strings.Contains(err.Error(), "key:") {
			t.Errorf("key %q: %v", bad, err)
		}
	}
	for _, ok := range []string{"{http.vars.client_ip}", "{http.auth.api_key.key_id}", "{http.auth.api_key.org_id}:{http.request.header.X-Tenant}", "global"} {
		if err := policy(ok).Validate(); err != nil {
			t.Errorf("key %q refused: %v", ok, err)
		}
	}
}

// Counts survive a config reload: the new config's registry exports the
// same collectors, as the other modules' do.
func TestMetricsSurviveAReload(t *testing.T) {
	first := newMetrics(prometheus.NewRegistry())
	c := first.decisions.WithLabelValues("reload-test", "allowed")
	c.Add(3)
	reg := prometheus.NewRegistry()
	newMetrics(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "caddy_gatehouse_ratelimit_decisions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) == 2 && m.GetLabel()[0].GetValue() == "allowed" && m.GetLabel()[1].GetValue() == "reload-test" {
				if m.GetCounter().GetValue() < 3 {
					t.Fatalf("after the reload the count is %v", m.GetCounter().GetValue())
				}
				return
			}
		}
	}
	t.Fatal("the reloaded config's registry lacks the count")
}

// A JSON config the Caddyfile could not produce is refused at load with a
// message, never a panic: a null entry, a timeout too short for any Redis
// call to be sent, a match with no matchers (it would match every request).
func TestJSONConfigRefusals(t *testing.T) {
	for name, tc := range map[string]struct {
		handler string
		want    string
	}{
		"null policy":       {`{"handler":"rate_limit","policies":[null]}`, "policy 1 is null"},
		"null quota":        {`{"handler":"rate_limit","quotas":[null]}`, "quota 1 is null"},
		"short timeout":     {`{"handler":"rate_limit","timeout":1000000,"policies":[{"name":"p","key":"k","rate":{"requests":1}}]}`, "is under 10ms"},
		"empty match":       {`{"handler":"rate_limit","policies":[{"name":"p","key":"k","rate":{"requests":1},"match":[{}]}]}`, "policy p: match: no matcher given"},
		"empty quota match": {`{"handler":"rate_limit","quotas":[{"name":"q","key":"k","limit":1,"match":[{"path":["/v1/*"]},{}]}]}`, "quota q: match: no matcher given"},
	} {
		t.Run(name, func(t *testing.T) {
			var cfg caddy.Config
			raw := `{"admin":{"disabled":true},"apps":{"http":{"servers":{"s":{"listen":["127.0.0.1:0"],"routes":[{"handle":[` + tc.handler + `]}]}}}}}`
			if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
				t.Fatal(err)
			}
			if err := caddy.Validate(&cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("caddy.Validate: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// A key's own override applies to limits counted per key only. On the
// per-organisation policy (`controlplane limits set --key … --policy
// per-org`), the organisation's one bucket was read with two sets of
// parameters: the script's debt cap then forgave the organisation's debt on
// every request of the other key, and at one instant the organisation got
// 465 requests (and more with every round) through a 10/s limit.
func TestKeyOverridesLeaveSharedLimitsAlone(t *testing.T) {
	clock := newClock(t0) // the clock never moves
	g := startGateway(t, &Handler{Policies: []*Policy{
		{Name: "per-org", Key: "{http.auth.api_key.org_id}", Rate: Rate{Requests: 10}},
	}}, clock)
	ctx := context.Background()
	if err := g.rdb.HSet(ctx, keyspace.Overrides(g.prefix, "org_a"),
		keyspace.Field("live", "per-org", liveKey.key),
		keyspace.Encode(keyspace.Override{Quota: 100, Window: 10})).Err(); err != nil {
		t.Fatal(err)
	}
	total := 0
	for range 5 {
		total += g.admitted(t, liveKey, "/", 100)
		total += g.admitted(t, liveKey2, "/", 10)
	}
	if total != 10 {
		t.Errorf("the organisation got %d requests at one instant through its 10/s per-org policy, want 10", total)
	}
}
