package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gatehouse/gatehouse/caddymodule/ratelimit/keyspace"
	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/controlplane/ingest"
	"github.com/gatehouse/gatehouse/controlplane/keys"
	"github.com/gatehouse/gatehouse/controlplane/limits"
	"github.com/gatehouse/gatehouse/internal/apikey"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

// TestQuotaMeters: the usage page meters the quotas the gateway publishes,
// from the gateway's own counters, against the limit in force — not a
// configuration of its own.
func TestQuotaMeters(t *testing.T) {
	e := newEnv(t)
	rdb, prefix := testenv.Redis(t)
	// The real time: the session cookie's expiry, set from the dashboard's
	// clock, is judged by the client's. The windows and the expected
	// resets follow from it.
	now := time.Now().UTC()
	today := now.Truncate(24 * time.Hour)
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	// dash serves a dashboard over q at the same address, so that the
	// browser's session carries over.
	var current atomic.Pointer[Dashboard]
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { current.Load().ServeHTTP(w, r) }))
	t.Cleanup(e.srv.Close)
	dash := func(q QuotaMeter) {
		d, err := New(Config{DB: e.pool, Accounts: e.accts, Keys: e.keys, Audit: audit.NewLog(e.pool), Webhooks: e.hooks,
			Quotas: q, Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		current.Store(d)
	}
	lim := limits.New(e.pool, rdb, prefix)
	dash(lim)
	b := e.signup("quotas@example.com", "Quotas")
	org := e.orgOf(b)
	ctx := context.Background()
	actor := audit.Actor{Type: audit.ActorCLI, ID: "test"}

	// quotas renders the quota card as text.
	quotas := func() string {
		t.Helper()
		p := b.get("/usage")
		if p.status != http.StatusOK {
			t.Fatalf("usage: %d", p.status)
		}
		card := regexp.MustCompile(`(?s)<section class="card" id="quotas">.*?</section>`).FindString(p.body)
		text := strings.Join(strings.Fields(regexp.MustCompile(`<[^>]+>`).ReplaceAllString(card, " ")), " ")
		return strings.ReplaceAll(text, " :", ":")
	}
	if got := quotas(); !strings.Contains(got, "The gateway enforces no request quota") {
		t.Fatalf("nothing published: %q", got)
	}

	publish := func(specs ...keyspace.QuotaSpec) {
		for _, q := range specs {
			if q.PublishedAt.IsZero() {
				q.PublishedAt = now.Add(-time.Minute)
			}
			b, _ := json.Marshal(q)
			if err := rdb.HSet(ctx, keyspace.Published(prefix), q.Name, b).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(
		keyspace.QuotaSpec{Name: "monthly", Live: 1000, Sandbox: 100, Period: keyspace.PeriodMonth, Per: keyspace.PerOrganization},
		keyspace.QuotaSpec{Name: "daily-per-key", Live: 50, Sandbox: 50, Period: keyspace.PeriodDay, Per: keyspace.PerAPIKey, Matched: true},
		keyspace.QuotaSpec{Name: "hourly-per-ip", Live: 10, Sandbox: 10, Period: keyspace.PeriodHour, Per: keyspace.PerOther},
		// A quota of a configuration that stopped running ten minutes ago.
		keyspace.QuotaSpec{Name: "retired", Live: 5, Sandbox: 5, Period: keyspace.PeriodMonth, Per: keyspace.PerOrganization,
			PublishedAt: now.Add(-10 * time.Minute)},
	)
	count := func(quota, value string, window time.Time, n int) {
		err := rdb.HSet(ctx, keyspace.Counter(prefix, org, keyspace.Sandbox, quota, value),
			keyspace.CounterWindow, window.Unix(), keyspace.CounterUsed, n).Err()
		if err != nil {
			t.Fatal(err)
		}
	}
	newKey := func(name string) string {
		k, err := e.keys.Create(ctx, actor, org, apikey.Sandbox, keys.CreateParams{Kind: apikey.Secret, Name: name})
		if err != nil {
			t.Fatal(err)
		}
		return k.Key.ID
	}
	quiet, busy, stale := newKey("quiet"), newKey("busy"), newKey("yesterday")
	count("monthly", org, month, 37)
	count("daily-per-key", quiet, today, 5)
	count("daily-per-key", busy, today, 20)
	count("daily-per-key", stale, today.AddDate(0, 0, -1), 49) // yesterday's: reset by the next request

	got := quotas()
	for _, want := range []string{
		"monthly (per organisation, per calendar month): 37 of 100 requests (37.0%) · resets " + month.AddDate(0, 1, 0).Format(time.DateOnly),
		"daily-per-key (busiest API key: busy (" + busy + "), per UTC day, matching requests only): 20 of 50 requests (40.0%) · resets " + today.AddDate(0, 0, 1).Format(time.DateOnly),
		"counted per client rather than per organisation or API key: hourly-per-ip.",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("quotas card lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "retired") {
		t.Errorf("a quota no gateway publishes any more is shown:\n%s", got)
	}

	// The organisation's plan lowers its monthly quota; a key's own
	// override makes the quiet key the busiest relative to its limit.
	for _, o := range []limits.Override{
		{OrganizationID: org, Policy: "monthly", Quota: 40, WindowSeconds: 1},
		{OrganizationID: org, APIKeyID: quiet, Policy: "daily-per-key", Quota: 6, WindowSeconds: 1},
		// The script checks this key's requests against its own limit on
		// the organisation's counter: the meter says so.
		{OrganizationID: org, APIKeyID: busy, Policy: "monthly", Quota: 1000, WindowSeconds: 1},
	} {
		if _, err := lim.Set(ctx, actor, o); err != nil {
			t.Fatal(err)
		}
	}
	got = quotas()
	for _, want := range []string{
		"monthly (per organisation, per calendar month): 37 of 40 requests (92.5%) plan override",
		"daily-per-key (busiest API key: quiet (" + quiet + "), per UTC day, matching requests only): 5 of 6 requests (83.3%) plan override",
		"Requests with these keys are held to their own limit instead, on the same count: " + busy + " (1,000).",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("with overrides, quotas card lacks %q:\n%s", want, got)
		}
	}

	// An override saved before the control plane checked bounds is ignored
	// by the gateway, and so by the meter.
	if _, err := e.pool.Exec(ctx, `UPDATE limit_overrides SET quota = $1
		WHERE organization_id = $2 AND api_key_id = '' AND policy = 'monthly'`, int64(keyspace.MaxCount)+1, org); err != nil {
		t.Fatal(err)
	}
	if got := quotas(); !strings.Contains(got, "monthly (per organisation, per calendar month): 37 of 100 requests (37.0%) · resets") {
		t.Errorf("an override out of bounds is metered against:\n%s", got)
	}

	// Redis down: the page still renders, and says why there are no meters.
	dash(limits.New(e.pool, redis.NewClient(&redis.Options{Addr: testenv.FreeAddr(t), MaxRetries: -1}), prefix))
	if got := quotas(); !strings.Contains(got, "Quota use cannot be read right now") {
		t.Errorf("redis down: %q", got)
	}
}

// Refusals of limits failing closed while Redis is away (503
// rate_limit_unavailable) count as rate-limit hits, as /v1/usage meters
// them (requestlogs.RefusedByLimitsSQL), on the overview and usage pages.
func TestFailClosedRefusalsAreRateLimitHits(t *testing.T) {
	e := newEnv(t)
	b := e.signup("failclosed@example.com", "Fail closed")
	org := e.orgOf(b)
	ctx := context.Background()
	now := time.Now()
	if _, err := ingest.NewPartitions(e.pool, 24*time.Hour, 1, nil).Ensure(ctx, now); err != nil {
		t.Fatal(err)
	}
	for i, row := range []struct {
		status          int
		rateLimit, code string
	}{{503, "error", "rate_limit_unavailable"}, {503, "error", "rate_limit_unavailable"}, {429, "limited:per-key", "rate_limited"},
		{200, "allowed", ""}, {200, "error", ""}} { // the last: Redis away, the limits failed open
		if _, err := e.pool.Exec(ctx, `INSERT INTO request_logs (request_id, created_at, organization_id, livemode,
			method, path, status, duration_us, rate_limit, error_code) VALUES ($1, $2, $3, false, 'GET', '/v1/customers', $4, 100, $5, $6)`,
			ids.NewAt(ids.Request, now.Add(-time.Duration(i)*time.Minute)), now.Add(-time.Duration(i)*time.Minute), org, row.status, row.rateLimit, row.code); err != nil {
			t.Fatal(err)
		}
	}
	tile := regexp.MustCompile(`Rate-limited</p><p class="v">([0-9,]+)<`).FindStringSubmatch(b.get("/").body)
	if tile == nil || tile[1] != "3" {
		t.Errorf("overview Rate-limited tile = %v, want 3", tile)
	}
	if p := b.get("/usage"); !strings.Contains(p.body, "3 requests were refused by a rate limit or quota") {
		t.Errorf("usage page does not count the fail-closed refusals")
	}
}

// The usage page offers 90 days while request logs are kept 30 by default:
// refusals older than the logs came from metered usage, as GET /v1/usage
// reports them, and the page says which days its log-drawn chart no longer
// covers. (It said "No request was rate-limited in this range" of a day
// /v1/usage counted 25.)
func TestUsagePageCountsRefusalsPastTheLogsRetention(t *testing.T) {
	e := newEnv(t)
	e.d.cfg.LogRetention = ingest.DefaultRetention
	b := e.signup("ninety@example.com", "Ninety Days")
	org := e.orgOf(b)
	ctx := context.Background()
	k, err := e.keys.Create(ctx, audit.Actor{Type: audit.ActorCLI, ID: "t"}, org, apikey.Sandbox, keys.CreateParams{Kind: apikey.Secret, Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	old, recent := time.Now().UTC().AddDate(0, 0, -45), time.Now().UTC().Add(-time.Hour)
	parts := ingest.NewPartitions(e.pool, ingest.DefaultRetention, ingest.DefaultDaysAhead, nil)
	// What the ingester stored and metered: 45 days ago 40 requests, 25 of
	// them refused by the per-key limit; an hour ago 3 refused of 4.
	for _, day := range []struct {
		at             time.Time
		total, refused int
	}{{old, 40, 25}, {recent, 4, 3}} {
		if _, err := parts.Ensure(ctx, day.at); err != nil {
			t.Fatal(err)
		}
		for i := range day.total {
			rl, status := "allowed", 200
			if i < day.refused {
				rl, status = "limited:per-key", 429
			}
			ts := day.at.Add(time.Duration(i) * time.Millisecond)
			if _, err := e.pool.Exec(ctx, `INSERT INTO request_logs (request_id, created_at, organization_id, livemode, api_key_id,
				method, path, status, duration_us, rate_limit) VALUES ($1, $2, $3, false, $4, 'GET', '/v1/customers', $5, 100, $6)`,
				ids.NewAt(ids.Request, ts), ts, org, k.Key.ID, status, rl); err != nil {
				t.Fatal(err)
			}
		}
		for metric, n := range map[string]int{ingest.MetricRequests: day.total - day.refused, ingest.MetricRateLimited: day.refused} {
			if _, err := e.pool.Exec(ctx, `INSERT INTO usage_records (organization_id, livemode, api_key_id, metric, day, quantity)
				VALUES ($1, false, $2, $3, $4, $5)`, org, k.Key.ID, metric, day.at.Format(time.DateOnly), n); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Retention runs (hourly in the control plane): the old day's logs go.
	if _, dropped, err := parts.Maintain(ctx); err != nil || len(dropped) == 0 {
		t.Fatalf("maintain: dropped %v, %v", dropped, err)
	}

	p := b.get("/usage?days=90")
	if !strings.Contains(p.body, "28 requests were refused by a rate limit or quota in this range") ||
		!strings.Contains(p.body, "(request logs no longer kept)") || !strings.Contains(p.body, "limited:per-key") {
		t.Errorf("90 days: the rate-limit hits are not the 28 metered, 25 of them past the logs' retention")
	}
	first := ingest.FirstKeptDay(time.Now(), ingest.DefaultRetention).Format("Jan 2")
	if !strings.Contains(p.body, "retention has dropped before "+first) {
		t.Errorf("90 days: the page does not say its status chart stops at %s", first)
	}
	p = b.get("/usage?days=7")
	if !strings.Contains(p.body, "3 requests were refused") || strings.Contains(p.body, "no longer kept") || strings.Contains(p.body, "retention has dropped") {
		t.Errorf("7 days, all of them in the logs: the page speaks of the logs' retention")
	}
}

// The overview's tiles count what its hourly chart draws: at 10:30, a
// request at 10:45 yesterday is in neither, one at 11:15 yesterday in both.
func TestOverviewTilesMatchTheChartsWindow(t *testing.T) {
	e := newEnv(t)
	now := time.Now().UTC().Truncate(time.Hour).Add(30 * time.Minute)
	d, err := New(Config{DB: e.pool, Accounts: e.accts, Keys: e.keys, Audit: audit.NewLog(e.pool), Webhooks: e.hooks,
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(d)
	t.Cleanup(e.srv.Close)
	b := e.signup("window@example.com", "Window")
	org := e.orgOf(b)
	ctx := context.Background()
	for _, at := range []time.Time{now.Add(-24*time.Hour + 15*time.Minute), now.Add(-23*time.Hour + 45*time.Minute)} {
		if _, err := ingest.NewPartitions(e.pool, 24*time.Hour, 1, func() time.Time { return at }).Ensure(ctx, at); err != nil {
			t.Fatal(err)
		}
		if _, err := e.pool.Exec(ctx, `INSERT INTO request_logs (request_id, created_at, organization_id, livemode,
			method, path, status, duration_us) VALUES ($1, $2, $3, false, 'GET', '/v1/customers', 200, 100)`,
			ids.NewAt(ids.Request, at), at, org); err != nil {
			t.Fatal(err)
		}
	}
	tile := regexp.MustCompile(`<p class="k">Requests</p><p class="v">([0-9,]+)<`).FindStringSubmatch(b.get("/").body)
	if tile == nil || tile[1] != "1" {
		t.Errorf("Requests tile = %v, want 1 (the chart starts at %s)", tile, now.Truncate(time.Hour).Add(-23*time.Hour))
	}
}

// With more keys than the chart draws, the legend names only the drawn
// ones (each in its own colour); the others are in the table.
func TestKeyLegendNamesOnlyDrawnKeys(t *testing.T) {
	e := newEnv(t)
	b := e.signup("legend@example.com", "Legend")
	org := e.orgOf(b)
	day := time.Now().UTC().Truncate(24 * time.Hour)
	for i := range 9 {
		if _, err := e.pool.Exec(context.Background(), `INSERT INTO usage_records (organization_id, livemode, api_key_id, metric, day, quantity)
			VALUES ($1, false, $2, 'requests', $3, $4)`, org, fmt.Sprintf("key_legend%d", i), day, 100-i); err != nil {
			t.Fatal(err)
		}
	}
	body := b.get("/usage").body
	card := regexp.MustCompile(`(?s)<h2>Requests per day per API key</h2>.*?</section>`).FindString(body)
	legend := regexp.MustCompile(`(?s)<ul class="legend".*?</ul>`).FindString(card)
	if items, lines := strings.Count(legend, "<li>"), strings.Count(card, "<polyline"); items != lines || lines != 8 {
		t.Errorf("legend %d entries for %d lines drawn, want 8 and 8", items, lines)
	}
	if !strings.Contains(card, "key_legend8") {
		t.Error("the ninth key is missing from the table")
	}
}
