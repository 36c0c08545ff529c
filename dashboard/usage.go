package dashboard

import (
	"context"
	"fmt"
	"html/template"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/gatehouse/gatehouse/caddymodule/ratelimit/keyspace"
	"github.com/gatehouse/gatehouse/controlplane/ingest"
	"github.com/gatehouse/gatehouse/controlplane/keys"
	"github.com/gatehouse/gatehouse/controlplane/requestlogs"
	"github.com/gatehouse/gatehouse/internal/apikey"
)

// overviewStats are the last 24 hours at a glance.
type overviewStats struct {
	Requests, Errors4xx, Errors5xx, RateLimited int64
	P50MS, P95MS                                float64
	Deliveries, DeliveriesFailed                int64
	Attempts, AttemptsFailed                    int64
}

func (o overviewStats) ErrorRate() string { return rate(o.Errors4xx+o.Errors5xx, o.Requests) }
func (o overviewStats) ServerErrorRate() string {
	return rate(o.Errors5xx, o.Requests)
}
func (o overviewStats) WebhookFailureRate() string { return rate(o.AttemptsFailed, o.Attempts) }

func rate(a, b int64) string {
	if b == 0 {
		return "—"
	}
	return strconv.FormatFloat(float64(a)*100/float64(b), 'f', 1, 64) + "%"
}

func (d *Dashboard) overview(w http.ResponseWriter, r *http.Request, s *Session) error {
	ctx := r.Context()
	now := d.now()
	// The tiles count what the hourly chart draws: from the start of the
	// hour 23 hours ago (24 buckets, the last one partial).
	since := now.Truncate(time.Hour).Add(-23 * time.Hour)
	var st overviewStats
	var p50, p95 *float64
	err := d.cfg.DB.QueryRow(ctx, `
		SELECT count(*), count(*) FILTER (WHERE status BETWEEN 400 AND 499), count(*) FILTER (WHERE status >= 500),
		       count(*) FILTER (WHERE `+ingest.RefusedByLimitsSQL+`),
		       percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_us) / 1000,
		       percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_us) / 1000
		FROM request_logs WHERE organization_id = $1 AND livemode = $2 AND created_at >= $3`,
		s.OrgID, s.Livemode, since).Scan(&st.Requests, &st.Errors4xx, &st.Errors5xx, &st.RateLimited, &p50, &p95)
	if err != nil {
		return fmt.Errorf("summarising requests: %w", err)
	}
	if p50 != nil {
		st.P50MS, st.P95MS = *p50, *p95
	}
	err = d.cfg.DB.QueryRow(ctx, `
		SELECT count(*), count(*) FILTER (WHERE status_code IS NULL OR status_code < 200 OR status_code > 299)
		FROM webhook_attempts WHERE organization_id = $1 AND livemode = $2 AND created_at >= $3`,
		s.OrgID, s.Livemode, since).Scan(&st.Attempts, &st.AttemptsFailed)
	if err != nil {
		return fmt.Errorf("summarising webhook attempts: %w", err)
	}
	err = d.cfg.DB.QueryRow(ctx, `
		SELECT count(*), count(*) FILTER (WHERE status IN ('failed', 'dead'))
		FROM webhook_deliveries WHERE organization_id = $1 AND livemode = $2 AND created_at >= $3`,
		s.OrgID, s.Livemode, since).Scan(&st.Deliveries, &st.DeliveriesFailed)
	if err != nil {
		return fmt.Errorf("summarising webhook deliveries: %w", err)
	}

	// Requests per hour by status class.
	start := since
	labels := make([]string, 24)
	tips := make([]string, 24)
	for i := range labels {
		h := start.Add(time.Duration(i) * time.Hour).UTC()
		labels[i] = h.Format("15h")
		tips[i] = h.Format("Jan 2 15:00 UTC")
	}
	classes, err := d.byClass(ctx, s, "hour", start, now, 24, func(t time.Time) int { return int(t.Sub(start) / time.Hour) })
	if err != nil {
		return err
	}
	recent, _, err := requestlogs.List(ctx, d.cfg.DB, s.OrgID, s.Livemode, requestlogs.Query{Limit: 8, StatusClass: 0,
		CreatedGTE: &since})
	if err != nil {
		return err
	}
	var failed []requestlogs.Object
	for _, c := range []int{5, 4} {
		l, _, err := requestlogs.List(ctx, d.cfg.DB, s.OrgID, s.Livemode, requestlogs.Query{Limit: 5, StatusClass: c, CreatedGTE: &since})
		if err != nil {
			return err
		}
		failed = append(failed, l...)
	}
	sort.Slice(failed, func(i, j int) bool { return failed[i].CreatedAt.After(failed[j].CreatedAt) })
	if len(failed) > 5 {
		failed = failed[:5]
	}
	eps, err := d.listEndpoints(ctx, s)
	if err != nil {
		return err
	}
	var failing []Endpoint
	for _, e := range eps {
		if e.FailingSince != nil || e.Status == "disabled" {
			failing = append(failing, e)
		}
	}
	var keyCount int
	if list, err := d.cfg.Keys.List(ctx, s.OrgID, apikey.Environment(s.Env())); err == nil {
		for _, k := range list {
			if k.Status(now) == keys.StatusActive {
				keyCount++
			}
		}
	}
	d.render(w, r, s, http.StatusOK, "overview.html", "Overview", "overview", map[string]any{
		"Stats": st, "Chart": stackedBars("Requests per hour in the last 24 hours, by status class", labels, tips, classes, 3),
		"Classes": classes, "Recent": recent, "Failed": failed, "Failing": failing, "ActiveKeys": keyCount,
		"Since": since.UTC().Format("Jan 2 15:04 UTC"),
	})
	return nil
}

// byClass counts requests per bucket (hour or day) and status class.
func (d *Dashboard) byClass(ctx context.Context, s *Session, unit string, from, to time.Time, n int,
	index func(time.Time) int) ([]series, error) {
	rows, err := d.cfg.DB.Query(ctx, `
		SELECT date_trunc('`+unit+`', created_at AT TIME ZONE 'UTC') AS bucket, status / 100 AS class, count(*)
		FROM request_logs WHERE organization_id = $1 AND livemode = $2 AND created_at >= $3 AND created_at < $4
		GROUP BY 1, 2`, s.OrgID, s.Livemode, from, to)
	if err != nil {
		return nil, fmt.Errorf("counting requests: %w", err)
	}
	out := []series{
		{Name: "2xx", Color: classColors["2xx"], Values: make([]int64, n)},
		{Name: "3xx", Color: classColors["3xx"], Values: make([]int64, n)},
		{Name: "4xx", Color: classColors["4xx"], Values: make([]int64, n)},
		{Name: "5xx", Color: classColors["5xx"], Values: make([]int64, n)},
	}
	for rows.Next() {
		var bucket time.Time
		var class int
		var count int64
		if err := rows.Scan(&bucket, &class, &count); err != nil {
			rows.Close()
			return nil, err
		}
		i := index(time.Date(bucket.Year(), bucket.Month(), bucket.Day(), bucket.Hour(), 0, 0, 0, time.UTC))
		if i < 0 || i >= n || class < 2 || class > 5 {
			continue
		}
		out[class-2].Values[i] += count
	}
	rows.Close()
	return out, rows.Err()
}

// logsFrom is the first day of a range from start whose request logs are
// still kept, when retention has dropped earlier ones (else zero).
func (d *Dashboard) logsFrom(start, now time.Time) time.Time {
	if d.cfg.LogRetention <= 0 {
		return time.Time{}
	}
	if first := ingest.FirstKeptDay(now, d.cfg.LogRetention); first.After(start) {
		return first
	}
	return time.Time{}
}

var usageRanges = []choice{{"7", "Last 7 days"}, {"30", "Last 30 days"}, {"90", "Last 90 days"}}

// quotaUse is one quota's consumption this period.
type quotaUse struct {
	Name        string
	Per         string // what the meter counts: the organisation, or its busiest API key
	PeriodLabel string
	Matched     bool // the quota counts only matching requests
	Used, Limit int64
	Overridden  bool
	// KeyLimits names the API keys whose own override replaces the
	// organisation's limit of a quota counted per organisation: the
	// gateway checks their requests against it, on the same counter.
	KeyLimits    string
	PeriodEnd    time.Time
	Meter        template.HTML
	PercentLabel string
}

// quotaSection is the usage page's quota meters, and a note when some or
// all of them cannot be shown.
type quotaSection struct {
	Meters []quotaUse
	Note   string
}

// quotaReadTimeout bounds the usage page's wait for Redis.
const quotaReadTimeout = 2 * time.Second

var periodLabels = map[string]string{
	keyspace.PeriodMonth: "calendar month", keyspace.PeriodDay: "UTC day", keyspace.PeriodHour: "hour",
}

func (d *Dashboard) usagePage(w http.ResponseWriter, r *http.Request, s *Session) error {
	ctx := r.Context()
	now := d.now().UTC()
	days := 30
	if v := r.URL.Query().Get("days"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || (n != 7 && n != 30 && n != 90) {
			return errBadRequest("Choose 7, 30 or 90 days.")
		}
		days = n
	}
	today := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	start := today.AddDate(0, 0, -(days - 1))
	labels := make([]string, days)
	for i := range labels {
		labels[i] = start.AddDate(0, 0, i).Format("Jan 2")
	}
	dayIndex := func(t time.Time) int { return int(t.Sub(start).Hours() / 24) }
	every := 1
	if days > 14 {
		every = days / 10
	}

	classes, err := d.byClass(ctx, s, "day", start, today.AddDate(0, 0, 1), days, dayIndex)
	if err != nil {
		return err
	}

	// Requests per day per key, and refusals by the limits per day, from
	// the metered usage (kept for good, unlike the request logs).
	rows, err := d.cfg.DB.Query(ctx, `SELECT api_key_id, metric, day, quantity FROM usage_records
		WHERE organization_id = $1 AND livemode = $2 AND metric IN ($5, $6) AND day >= $3 AND day <= $4`,
		s.OrgID, s.Livemode, start, today, ingest.MetricRequests, ingest.MetricRateLimited)
	if err != nil {
		return fmt.Errorf("reading usage: %w", err)
	}
	perKey := map[string][]int64{}
	totals := map[string]int64{}
	meteredLimited := make([]int64, days)
	for rows.Next() {
		var key, metric string
		var day time.Time
		var q int64
		if err := rows.Scan(&key, &metric, &day, &q); err != nil {
			rows.Close()
			return err
		}
		i := dayIndex(day)
		if i < 0 || i >= days {
			continue
		}
		if metric == ingest.MetricRateLimited {
			meteredLimited[i] += q
			continue
		}
		if perKey[key] == nil {
			perKey[key] = make([]int64, days)
		}
		perKey[key][i] += q
		totals[key] += q
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	keyNames, err := d.keyLabels(ctx, s)
	if err != nil {
		keyNames = map[string]string{} // the chart still draws, with key ids
	}
	keyIDs := make([]string, 0, len(perKey))
	for k := range perKey {
		keyIDs = append(keyIDs, k)
	}
	sort.Slice(keyIDs, func(i, j int) bool { return totals[keyIDs[i]] > totals[keyIDs[j]] })
	var keySeries []series
	type keyTotal struct {
		ID, Name, Color string
		Total           int64
	}
	var keyTotals []keyTotal
	for i, k := range keyIDs {
		name := keyNames[k]
		if name == "" {
			name = k
			if k == "" {
				name = "(no key)"
			}
		}
		// The busiest keys are drawn, one colour each; the rest are in
		// the table only (no colour, so the legend leaves them out rather
		// than name them in a drawn key's colour).
		c := ""
		if i < len(palette) {
			c = palette[i]
			keySeries = append(keySeries, series{Name: name, Color: c, Values: perKey[k]})
		}
		keyTotals = append(keyTotals, keyTotal{ID: k, Name: name, Color: c, Total: totals[k]})
	}

	limitSeries, limitedTotal, err := d.rateLimitHits(ctx, s, start, days, meteredLimited)
	if err != nil {
		return err
	}

	quotas, err := d.quotaUse(ctx, s, now)
	if err != nil {
		return err
	}
	data := map[string]any{
		"Days": days, "Ranges": usageRanges, "Classes": classes, "Labels": labels, "LogsFrom": d.logsFrom(start, now),
		"ClassChart": stackedBars(fmt.Sprintf("Requests per day over the last %d days, by status class", days), labels, nil, classes, every),
		"KeyTotals":  keyTotals, "Quotas": quotas, "LimitedTotal": limitedTotal,
	}
	if len(keySeries) > 0 {
		data["KeyChart"] = lines(fmt.Sprintf("Requests per day per API key over the last %d days", days), labels, keySeries, every)
	}
	if len(limitSeries) > 0 {
		data["LimitChart"] = stackedBars("Rate-limited requests per day", labels, nil, limitSeries, every)
		data["LimitSeries"] = limitSeries
	}
	d.render(w, r, s, http.StatusOK, "usage.html", "Usage", "usage", data)
	return nil
}

// rateLimitHits are the requests the limits refused per day of the days
// from start, by the limit that refused (from the request logs), and their
// total. meteredLimited, the metered refusals per day, adds what the logs
// no longer name (REQUEST_LOG_RETENTION), so the total is GET /v1/usage's.
func (d *Dashboard) rateLimitHits(ctx context.Context, s *Session, start time.Time, days int, meteredLimited []int64) ([]series, int64, error) {
	rows, err := d.cfg.DB.Query(ctx, `
		SELECT date_trunc('day', created_at AT TIME ZONE 'UTC'),
		       CASE WHEN rate_limit = 'error' THEN 'Redis unavailable (fail_closed)' ELSE rate_limit END, count(*)
		FROM request_logs WHERE organization_id = $1 AND livemode = $2 AND created_at >= $3
		  AND `+ingest.RefusedByLimitsSQL+`
		GROUP BY 1, 2`, s.OrgID, s.Livemode, start)
	if err != nil {
		return nil, 0, fmt.Errorf("counting rate-limit hits: %w", err)
	}
	limited := map[string][]int64{}
	var limitedTotal int64
	for rows.Next() {
		var day time.Time
		var name string
		var n int64
		if err := rows.Scan(&day, &name, &n); err != nil {
			rows.Close()
			return nil, 0, err
		}
		if limited[name] == nil {
			limited[name] = make([]int64, days)
		}
		day = time.Date(day.Year(), day.Month(), day.Day(), 0, 0, 0, 0, time.UTC)
		if i := int(day.Sub(start).Hours() / 24); i >= 0 && i < days {
			limited[name][i] += n
		}
		limitedTotal += n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	// The request logs that name the limits are dropped after
	// REQUEST_LOG_RETENTION; refusals metered beyond what a day's logs
	// still hold are shown as such, so the total is what GET /v1/usage
	// reports for the range.
	const expiredName = "(request logs no longer kept)"
	for i, n := range meteredLimited {
		var logged int64
		for _, v := range limited {
			logged += v[i]
		}
		if n > logged {
			if limited[expiredName] == nil {
				limited[expiredName] = make([]int64, days)
			}
			limited[expiredName][i] = n - logged
			limitedTotal += n - logged
		}
	}
	var limitSeries []series
	names := make([]string, 0, len(limited))
	for n := range limited {
		names = append(names, n)
	}
	sort.Strings(names)
	for i, n := range names {
		limitSeries = append(limitSeries, series{Name: n, Color: palette[(i+1)%len(palette)], Values: limited[n]})
	}
	return limitSeries, limitedTotal, nil
}

// quotaUse reads, for each quota the gateways publish, the organisation's
// use of it this period from the gateway's own counters, against the limit
// in force (the organisation's or the key's override when it has one). A
// quota counted per API key shows the key closest to its limit. Quotas
// counted per something else (a client IP) are named but not metered.
func (d *Dashboard) quotaUse(ctx context.Context, s *Session, now time.Time) (quotaSection, error) {
	if d.cfg.Quotas == nil {
		return quotaSection{}, nil
	}
	unavailable := quotaSection{Note: "Quota use cannot be read right now: Redis, which holds the gateway's counters, did not answer."}
	// The page waits this long for Redis at most, not the client's retries.
	rctx, cancel := context.WithTimeout(ctx, quotaReadTimeout)
	defer cancel()
	specs, err := d.cfg.Quotas.Quotas(rctx, now)
	if err != nil {
		d.log.Warn("dashboard: reading quotas", zap.Error(err))
		return unavailable, nil
	}
	if len(specs) == 0 {
		return quotaSection{Note: "The gateway enforces no request quota (none was published in the last " +
			keyspace.StaleAfter.String() + ")."}, nil
	}
	overrides, err := d.quotaOverrides(ctx, s)
	if err != nil {
		return quotaSection{}, err
	}
	var keys []keyRef
	var out quotaSection
	var other []string
	for _, q := range specs {
		limit := q.Sandbox
		if s.Livemode {
			limit = q.Live
		}
		o, overridden := overrides[[2]string{"", q.Name}]
		if overridden {
			limit = o
		}
		u := quotaUse{Name: q.Name, PeriodLabel: periodLabels[q.Period], Matched: q.Matched, Limit: limit, Overridden: overridden}
		_, u.PeriodEnd = q.Window(now)
		switch q.Per {
		case keyspace.PerOrganization:
			used, err := d.cfg.Quotas.QuotaUsed(rctx, s.OrgID, s.Livemode, q, []string{s.OrgID}, now)
			if err != nil {
				d.log.Warn("dashboard: reading quota counters", zap.Error(err))
				return unavailable, nil
			}
			u.Per, u.Used = "per organisation", used[0]
			var own []string
			for k, l := range overrides {
				if k[0] != "" && k[1] == q.Name {
					own = append(own, fmt.Sprintf("%s (%s)", k[0], comma(l)))
				}
			}
			sort.Strings(own)
			u.KeyLimits = strings.Join(own, ", ")
		case keyspace.PerAPIKey:
			if keys == nil {
				if keys, err = d.quotaKeys(ctx, s, now); err != nil {
					return quotaSection{}, err
				}
			}
			if len(keys) == 0 {
				continue
			}
			ids := make([]string, len(keys))
			for i, k := range keys {
				ids[i] = k.ID
			}
			used, err := d.cfg.Quotas.QuotaUsed(rctx, s.OrgID, s.Livemode, q, ids, now)
			if err != nil {
				d.log.Warn("dashboard: reading quota counters", zap.Error(err))
				return unavailable, nil
			}
			// The busiest key: the largest share of its own limit.
			best, bestLimit, bestOverridden := -1, limit, u.Overridden
			for i, k := range keys {
				l, o := limit, u.Overridden
				if kl, ok := overrides[[2]string{k.ID, q.Name}]; ok {
					l, o = kl, true
				}
				if best < 0 || float64(used[i])/float64(l) > float64(used[best])/float64(bestLimit) {
					best, bestLimit, bestOverridden = i, l, o
				}
			}
			u.Per = "busiest API key: " + keys[best].Label
			u.Used, u.Limit, u.Overridden = used[best], bestLimit, bestOverridden
		default:
			other = append(other, q.Name)
			continue
		}
		u.PercentLabel = rate(u.Used, u.Limit)
		u.Meter = meter(fmt.Sprintf("%s quota: %s of %s requests used", q.Name, comma(u.Used), comma(u.Limit)), u.Used, u.Limit)
		out.Meters = append(out.Meters, u)
	}
	if len(other) > 0 {
		out.Note = "Also enforced, counted per client rather than per organisation or API key: " + strings.Join(other, ", ") + "."
	}
	return out, nil
}

// quotaOverrides are the organisation's overrides in this environment that
// the gateway applies (one out of keyspace.CheckBounds's bounds, saved
// before the control plane checked them, it ignores), by (API key id or ""
// for the organisation's own, policy).
func (d *Dashboard) quotaOverrides(ctx context.Context, s *Session) (map[[2]string]int64, error) {
	rows, err := d.cfg.DB.Query(ctx, `SELECT api_key_id, policy, quota, window_seconds, coalesce(burst, 0)
		FROM limit_overrides WHERE organization_id = $1 AND livemode = $2`, s.OrgID, s.Livemode)
	if err != nil {
		return nil, fmt.Errorf("reading quota overrides: %w", err)
	}
	out := map[[2]string]int64{}
	var key, policy string
	var quota, window, burst int64
	_, err = pgx.ForEachRow(rows, []any{&key, &policy, &quota, &window, &burst}, func() error {
		if keyspace.CheckBounds(quota, window, burst) == nil {
			out[[2]string{key, policy}] = quota
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading quota overrides: %w", err)
	}
	return out, nil
}

// keyRef is an API key as a quota meter names it.
type keyRef struct{ ID, Label string }

// quotaKeys are the organisation's keys in this environment that can have
// counted requests this month: not revoked before it began.
func (d *Dashboard) quotaKeys(ctx context.Context, s *Session, now time.Time) ([]keyRef, error) {
	start, _ := keyspace.QuotaSpec{Period: keyspace.PeriodMonth}.Window(now)
	list, err := d.cfg.Keys.List(ctx, s.OrgID, apikey.Environment(s.Env()))
	if err != nil {
		return nil, err
	}
	out := []keyRef{}
	for _, k := range list {
		if k.RevokedAt != nil && k.RevokedAt.Before(start) {
			continue
		}
		label := k.ID
		if k.Name != "" {
			label = k.Name + " (" + k.ID + ")"
		}
		out = append(out, keyRef{ID: k.ID, Label: label})
	}
	return out, nil
}
