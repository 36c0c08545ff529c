package ratelimit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/gatehouse/gatehouse/caddymodule/ratelimit/keyspace"
	"github.com/gatehouse/gatehouse/controlplane/cli"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

// provision sets h up outside a Caddy config, against the test Redis.
func provision(t testing.TB, h *Handler, prefix string) *Handler {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	h.KeyPrefix = prefix
	if h.Redis == "" {
		h.Redis = testenv.RedisURL(t)
	}
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Cleanup() })
	return h
}

// newRequest is a request as the api_key handler leaves it.
func newRequest(c caller, clientIP string) *http.Request {
	req := httptest.NewRequest(http.MethodGet, "/v1/customers", nil)
	repl := caddy.NewReplacer()
	req = caddyhttp.PrepareRequest(req, repl, nil, nil)
	caddyhttp.SetVar(req.Context(), caddyhttp.ClientIPVarKey, clientIP)
	if c.org != "" {
		repl.Set(phOrg, c.org)
		repl.Set(phKeyID, c.key)
		repl.Set(phEnvironment, c.env)
	}
	return req
}

var ok = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
	w.WriteHeader(http.StatusOK)
	return nil
})

// serve runs h on req in front of ok and returns the status the client
// would see: a returned error is rendered by request_id in a real chain.
func serve(t testing.TB, h *Handler, req *http.Request) (int, http.Header) {
	rec := httptest.NewRecorder()
	err := h.ServeHTTP(rec, req, ok)
	if err == nil {
		return rec.Code, rec.Header()
	}
	var he caddyhttp.HandlerError
	if !errors.As(err, &he) {
		t.Fatalf("ServeHTTP: %v", err)
	}
	return he.StatusCode, rec.Header()
}

// Two gateway instances sharing Redis, hammered concurrently with real
// Redis TIME, admit exactly the burst between them: the decision is one
// atomic script, not a read-modify-write across round trips.
func TestExactAcrossInstances(t *testing.T) {
	_, prefix := testenv.Redis(t)
	config := func() *Handler {
		return &Handler{
			Policies: []*Policy{
				perKey(Rate{Requests: 40, Period: caddy.Duration(time.Hour)}),
				{Name: "per-ip", Key: "{http.vars.client_ip}", Rate: Rate{Requests: 1000, Period: caddy.Duration(time.Hour)}},
			},
			Quotas: []*Quota{{Name: "monthly", Key: "{http.auth.api_key.org_id}", Limit: 1000}},
		}
	}
	instances := []*Handler{provision(t, config(), prefix), provision(t, config(), prefix)}

	var admitted atomic.Int64
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			if status, _ := serve(t, instances[i%2], newRequest(liveKey, "192.0.2.1")); status == http.StatusOK {
				admitted.Add(1)
			}
		})
	}
	wg.Wait()
	if got := admitted.Load(); got != 40 {
		t.Fatalf("two instances admitted %d requests, want exactly the burst of 40", got)
	}
	// And the quota counted exactly the admitted requests, not the refused.
	if status, _ := serve(t, instances[0], newRequest(liveKey2, "192.0.2.1")); status != http.StatusOK {
		t.Fatalf("another key: status %d", status)
	}
	if n := instances[0].rdb.HGet(context.Background(),
		keyspace.Counter(prefix, "org_a", "live", "monthly", "org_a"), "n").Val(); n != "41" {
		t.Errorf("quota counter = %s, want 41", n)
	}
}

// The script's calendar arithmetic agrees with Go's time package.
func TestCalendarWindows(t *testing.T) {
	rdb, _ := testenv.Redis(t)
	probe := calendarLua + `return {window(tonumber(ARGV[1]), ARGV[2])}`
	instants := []time.Time{
		time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2024, 2, 29, 23, 59, 59, 999999000, time.UTC), // leap day
		time.Date(2025, 2, 28, 12, 0, 0, 0, time.UTC),
		time.Date(2026, 12, 31, 23, 59, 59, 0, time.UTC), // December → January
		time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2100, 2, 15, 0, 0, 0, 0, time.UTC), // not a leap year
		time.Date(2000, 2, 15, 0, 0, 0, 0, time.UTC), // a leap year
		time.Date(2030, 7, 4, 13, 30, 0, 0, time.UTC),
	}
	for d := 0; d < 3*366; d += 7 { // every week of three years, at odd times
		instants = append(instants, time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(d)*24*time.Hour+37*time.Minute+11*time.Second))
	}
	for _, at := range instants {
		for _, period := range []string{PeriodMonth, PeriodDay, PeriodHour} {
			var start, end time.Time
			switch period {
			case PeriodMonth:
				start = time.Date(at.Year(), at.Month(), 1, 0, 0, 0, 0, time.UTC)
				end = start.AddDate(0, 1, 0)
			case PeriodDay:
				start = time.Date(at.Year(), at.Month(), at.Day(), 0, 0, 0, 0, time.UTC)
				end = start.AddDate(0, 0, 1)
			case PeriodHour:
				start = at.Truncate(time.Hour)
				end = start.Add(time.Hour)
			}
			got, err := rdb.Eval(context.Background(), probe, nil, at.UnixMicro(), period[:1]).Int64Slice()
			if err != nil {
				t.Fatal(err)
			}
			if got[0] != start.Unix() || got[1] != int64(end.Sub(start)/time.Second) {
				t.Errorf("%s of %s: got start %s length %ds, want %s %s", period, at,
					time.Unix(got[0], 0).UTC(), got[1], start, end.Sub(start))
			}
		}
	}
}

func TestWarnsAtMostOncePerInterval(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	h := &Handler{WarnInterval: caddy.Duration(10 * time.Second), logger: zap.New(core), warn: new(warner)}
	for range 100 {
		h.warnRedis(errors.New("dial tcp: connection refused"))
	}
	if n := logs.Len(); n != 1 {
		t.Fatalf("%d warnings for 100 failures within the interval, want 1", n)
	}
	h.warn.lastWarn.Add(-int64(11 * time.Second)) // the interval has passed
	h.warnRedis(errors.New("dial tcp: connection refused"))
	entries := logs.All()
	if len(entries) != 2 {
		t.Fatalf("%d warnings after the interval, want 2", len(entries))
	}
	if got := entries[1].ContextMap()["failures"]; got != int64(100) {
		t.Errorf("second warning counts %v failures, want the 100 since the first", got)
	}
}

func TestClosestPolicy(t *testing.T) {
	mk := func(name string, allowed, remaining, burst int, retry time.Duration) decision {
		d := decision{limit: &limit{name: name}}
		d.Allowed, d.Remaining, d.Limit.Burst, d.RetryAfter = allowed, remaining, burst, retry
		return d
	}
	tests := []struct {
		name string
		ds   []decision
		want string
	}{
		// It refuses first: 40 of 250 is the smaller fraction, but the
		// client gets 5 more requests.
		{"fewest requests left", []decision{mk("a", 1, 40, 250, -1), mk("b", 1, 5, 25, -1)}, "b"},
		{"as many left: the smaller fraction", []decision{mk("a", 1, 5, 10, -1), mk("b", 1, 5, 1000, -1)}, "b"},
		{"first on ties", []decision{mk("a", 1, 5, 10, -1), mk("b", 1, 5, 10, -1)}, "a"},
		{"a refusal beats any allowance", []decision{mk("a", 1, 0, 100, -1), mk("b", 0, 0, 10, time.Second)}, "b"},
		{"the refusal that lasts longest", []decision{mk("a", 0, 0, 1, time.Second), mk("b", 0, 0, 10, time.Hour), mk("c", 0, 0, 1, time.Minute)}, "b"},
	}
	for _, tt := range tests {
		if got := tt.ds[closest(tt.ds)].limit.name; got != tt.want {
			t.Errorf("%s: closest = %s, want %s", tt.name, got, tt.want)
		}
	}
}

// The RateLimit field is there so that a client can stop before it is
// throttled: its r is how many requests the gateway admits next. With the
// demo Caddyfile's sandbox limits (25 a second per key, 250 per
// organisation), a key that sent 20 while the organisation's other keys sent
// 190 has 5 left, though the organisation's 40 of 250 is the smaller
// fraction.
func TestRemainingIsWhatTheClientGets(t *testing.T) {
	g := startGateway(t, &Handler{Policies: []*Policy{
		{Name: "per-key", Key: "{http.auth.api_key.key_id}", Rate: Rate{Requests: 100}, SandboxRate: &Rate{Requests: 25}},
		{Name: "per-org", Key: "{http.auth.api_key.org_id}", Rate: Rate{Requests: 1000}, SandboxRate: &Rate{Requests: 250}},
	}}, newClock(t0)) // frozen: nothing refills
	for k := range 10 {
		if n := g.admitted(t, caller{org: "org_a", key: fmt.Sprintf("key_other%d", k), env: "sandbox"}, "/", 19); n != 19 {
			t.Fatalf("another key: %d of 19 admitted", n)
		}
	}
	var last response
	for range 20 {
		last = g.get(t, sandboxKey, "/")
	}
	rl := last.header.Get("RateLimit")
	m := regexp.MustCompile(`;r=(\d+);`).FindStringSubmatch(rl)
	if last.status != 200 || m == nil {
		t.Fatalf("20th request: %d, RateLimit %q", last.status, rl)
	}
	if got := g.admitted(t, sandboxKey, "/", 50); strconv.Itoa(got) != m[1] {
		t.Errorf("RateLimit: %s, and then %d requests were admitted before a 429", rl, got)
	}
}

// TestQuotasArePublishedForTheDashboard: a handler that serves publishes
// the quotas it enforces, with what they are counted per, so the
// dashboard's meters show the configuration that runs rather than one of
// their own.
func TestQuotasArePublishedForTheDashboard(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	h := provision(t, &Handler{Policies: []*Policy{{Name: "per-key", Key: "{http.auth.api_key.key_id}", Rate: Rate{Requests: 10}}}, Quotas: []*Quota{
		{Name: "monthly", Key: "{http.auth.api_key.org_id}", Limit: 1000, SandboxLimit: 100},
		{Name: "daily-per-key", Key: "{http.auth.api_key.key_id}", Limit: 50, Period: PeriodDay,
			MatchRaw: caddyhttp.RawMatcherSets{{"path": []byte(`["/v1/customers*"]`)}}},
		{Name: "hourly-per-ip", Key: "{http.vars.client_ip}", Limit: 10, Period: PeriodHour},
	}}, prefix)
	want := map[string]keyspace.QuotaSpec{
		"monthly":       {Name: "monthly", Live: 1000, Sandbox: 100, Period: "month", Per: keyspace.PerOrganization},
		"daily-per-key": {Name: "daily-per-key", Live: 50, Sandbox: 50, Period: "day", Per: keyspace.PerAPIKey, Matched: true},
		"hourly-per-ip": {Name: "hourly-per-ip", Live: 10, Sandbox: 10, Period: "hour", Per: keyspace.PerOther},
	}
	if n := rdb.Exists(context.Background(), keyspace.Published(prefix)).Val(); n != 0 {
		t.Fatal("quotas published before the handler served a request")
	}
	serve(t, h, newRequest(liveKey, "192.0.2.1"))
	var got map[string]string
	for deadline := time.Now().Add(10 * time.Second); len(got) < len(want); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("published %v, want %d quotas", got, len(want))
		}
		got = rdb.HGetAll(context.Background(), keyspace.Published(prefix)).Val()
	}
	for name, w := range want {
		var spec keyspace.QuotaSpec
		if err := json.Unmarshal([]byte(got[name]), &spec); err != nil {
			t.Fatalf("%s: %q: %v", name, got[name], err)
		}
		if age := time.Since(spec.PublishedAt); age < 0 || age > time.Minute {
			t.Errorf("%s published %s ago", name, age)
		}
		spec.PublishedAt = time.Time{}
		if spec != w {
			t.Errorf("%s: published %+v, want %+v", name, spec, w)
		}
	}
	// Every policy's and quota's name, for the control plane's check of
	// the names overrides give.
	names := rdb.HGetAll(context.Background(), keyspace.PublishedNames(prefix)).Val()
	if len(names) != 4 || names["per-key"] == "" || names["monthly"] == "" || names["daily-per-key"] == "" || names["hourly-per-ip"] == "" {
		t.Errorf("published names %v, want per-key and the three quotas", names)
	}
}

// TestRemainingIsExactForLongIntervals: with a long emission interval (1
// per hour, burst 2), a request admitted 1 µs before the next interval has
// passed reports r=0, since one more at the same instant is refused. The
// script added 1e-9 before flooring, which rounded (I-1)/I up to 1 once the
// interval passed 10^9 µs.
func TestRemainingIsExactForLongIntervals(t *testing.T) {
	_, prefix := testenv.Redis(t)
	h := provision(t, &Handler{Policies: []*Policy{
		perKey(Rate{Requests: 1, Period: caddy.Duration(time.Hour), Burst: 2}),
	}}, prefix)
	now := t0
	h.now = func() time.Time { return now }

	if st, hd := serve(t, h, newRequest(liveKey, "192.0.2.1")); st != 200 {
		t.Fatalf("first: %d %v", st, hd)
	}
	now = now.Add(time.Hour - time.Microsecond)
	st, hd := serve(t, h, newRequest(liveKey, "192.0.2.1"))
	if st != 200 {
		t.Fatalf("second: %d", st)
	}
	rl := hd.Get("RateLimit")
	st3, hd3 := serve(t, h, newRequest(liveKey, "192.0.2.1"))
	t.Logf("second RateLimit: %s; third at the same instant: %d %s", rl, st3, hd3.Get("RateLimit"))
	if st3 == 429 && rl != `"per-key";r=0;t=3601` {
		t.Errorf("RateLimit = %s promises a request that is then refused (want r=0)", rl)
	}
}

// Stacks sharing one Redis keep their limits apart with a key prefix. Set
// in RATE_LIMIT_KEY_PREFIX, it is the prefix of a rate_limit that leaves
// key_prefix out and of the control plane, so that a plan set with
// `controlplane limits set` applies at once. The control plane always
// wrote under the default prefix, which such a gateway never read: the plan
// was accepted without a warning and nothing was limited.
func TestControlPlaneOverridesFollowTheKeyPrefix(t *testing.T) {
	_, dsn := testenv.Pool(t)
	_, prefix := testenv.Redis(t) // this test's own, not keyspace.DefaultPrefix
	t.Setenv("DATABASE_URL", dsn)
	t.Setenv("REDIS_URL", testenv.RedisURL(t))
	t.Setenv(keyspace.PrefixVariable, prefix)
	controlplane := func(args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if code := cli.Run(args, &out, &errOut); code != 0 {
			t.Fatalf("controlplane %v: exit %d: %s", args, code, errOut.String())
		}
		return out.String()
	}
	var org struct{ ID string }
	if err := json.Unmarshal([]byte(controlplane("orgs", "create", "--name", "Acme", "--json")), &org); err != nil {
		t.Fatal(err)
	}
	h := provision(t, &Handler{Policies: []*Policy{
		{Name: "per-org", Key: "{http.auth.api_key.org_id}", Rate: Rate{Requests: 1000}},
	}}, "")
	if h.KeyPrefix != prefix {
		t.Fatalf("key_prefix left out: %q, want %s's %q", h.KeyPrefix, keyspace.PrefixVariable, prefix)
	}
	controlplane("limits", "set", "--org", org.ID, "--env", "live", "--policy", "per-org", "--rate", "2/60s")
	var statuses []int
	for range 3 {
		code, _ := serve(t, h, newRequest(caller{org: org.ID, key: "key_x", env: "live"}, "192.0.2.1"))
		statuses = append(statuses, code)
	}
	if want := []int{200, 200, 429}; !slices.Equal(statuses, want) {
		t.Errorf("under a plan of 2 a minute: %v, want %v", statuses, want)
	}
}
