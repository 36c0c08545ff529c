package dashboard

import (
	"context"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/controlplane/ingest"
	"github.com/gatehouse/gatehouse/internal/ids"
)

// Switching between sandbox and live keeps the page's range and filters
// (they mean the same in either environment) and drops what names one
// environment's objects (ids, cursors): /usage?days=90 landed on 30 days,
// /logs?status=5xx on every request.
func TestSwitchingEnvironmentKeepsTheRangeAndFilters(t *testing.T) {
	e := newEnv(t)
	b := e.signup("journey-env@example.com", "Journey Env")
	backRe := regexp.MustCompile(`name="back" value="([^"]*)"`)
	env := "live"
	for _, c := range []struct{ page, want, keep string }{
		{"/usage?days=90", "/usage?days=90", `<option value="90" selected>`},
		{"/logs?status=5xx&key=key_0000000000000000000000&after=req_0000000000000000000000", "/logs?status=5xx", `name="status" value="5xx"`},
		{"/logs/req_0000000000000000000000?status=5xx", "/logs", ""},
	} {
		m := backRe.FindStringSubmatch(b.get(c.page).body)
		if m == nil {
			t.Fatalf("%s: no environment switch", c.page)
		}
		p := b.post("/session/environment", "environment", env, "back", html.UnescapeString(m[1]))
		if to := p.header.Get("Location"); p.status != http.StatusSeeOther || to != c.want {
			t.Errorf("switching to %s on %s: %d to %q, want %q", env, c.page, p.status, to, c.want)
		} else if !strings.Contains(b.get(to).body, c.keep) {
			t.Errorf("%s does not show %s", to, c.keep)
		}
		env = map[string]string{"live": "sandbox", "sandbox": "live"}[env]
	}
}

// The trace of a replayed request is the execution it replays: a customer
// whose client timed out and retried hands support the retry's request id,
// and its page said no event was emitted (wait a few seconds) while the
// original's customer.created and its delivery existed.
func TestReplayTraceIsTheOriginalExecutions(t *testing.T) {
	e := newEnv(t)
	b, tn, we := e.withEndpoint("journey-replay@example.com", "Journey Replay")
	org := tn.OrganizationID
	ctx := context.Background()
	actor := audit.Actor{Type: audit.ActorCLI, ID: "test"}
	whd, err := e.hooks.TestEndpoint(ctx, actor, tn, we) // an event with a delivery, made the original's below
	if err != nil {
		t.Fatal(err)
	}
	var evt string
	if err := e.pool.QueryRow(ctx, `SELECT event_id FROM webhook_deliveries WHERE id = $1`, whd).Scan(&evt); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, err := ingest.NewPartitions(e.pool, 24*time.Hour, 1, nil).Ensure(ctx, now); err != nil {
		t.Fatal(err)
	}
	orig, replay := ids.NewAt(ids.Request, now.Add(-2*time.Second)), ids.NewAt(ids.Request, now)
	for _, r := range []struct {
		id       string
		at       time.Time
		replayed bool
		headers  map[string]string
	}{{orig, now.Add(-2 * time.Second), false, nil}, {replay, now, true, map[string]string{"Original-Request-Id": orig}}} {
		if _, err := e.pool.Exec(ctx, `INSERT INTO request_logs (request_id, created_at, organization_id, livemode,
			method, path, status, duration_us, idempotency_key, idempotent_replayed, response_headers)
			VALUES ($1, $2, $3, false, 'POST', '/v1/customers', 200, 1234, 'order-42', $4, $5)`,
			r.id, r.at, org, r.replayed, r.headers); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.pool.Exec(ctx, `UPDATE events SET type = 'customer.created', request_id = $1, idempotency_key = 'order-42'
		WHERE id = $2`, orig, evt); err != nil {
		t.Fatal(err)
	}
	page := html.UnescapeString(b.get("/logs/" + replay).body)
	trace := page[strings.Index(page, "<h2>Trace</h2>"):]
	if strings.Contains(trace, "This request emitted no events") || !strings.Contains(trace, evt) || !strings.Contains(trace, whd) ||
		!strings.Contains(trace, "replayed from") {
		t.Errorf("the replay's trace does not lead to the event %s and delivery %s of the execution it replays", evt, whd)
	}
}

// The endpoints list says how many of an endpoint's deliveries of the last
// 24 hours are failing and links the number to the deliveries list, which
// must show as many: it showed every failing one (live retries go on for
// three days), 3 where the list said 1.
func TestEndpointsFailingCountMatchesItsList(t *testing.T) {
	e := newEnv(t)
	b, tn, we := e.withEndpoint("journey-failing@example.com", "Journey Failing")
	ctx := context.Background()
	actor := audit.Actor{Type: audit.ActorCLI, ID: "test"}
	// Three deliveries still failing (retries scheduled): one from an hour
	// ago, two from 30 hours ago.
	for i, age := range []time.Duration{time.Hour, 30 * time.Hour, 30 * time.Hour} {
		whd, err := e.hooks.TestEndpoint(ctx, actor, tn, we)
		if err != nil {
			t.Fatal(err)
		}
		at := time.Now().Add(-age).Add(time.Duration(i) * time.Second)
		if _, err := e.pool.Exec(ctx, `UPDATE webhook_deliveries SET status = 'failed', attempts = 3, last_status_code = 500,
			manual_pending = false, next_attempt_at = now() + interval '1 hour', created_at = $2 WHERE id = $1`, whd, at); err != nil {
			t.Fatal(err)
		}
	}
	list := b.get("/webhooks").body
	m := regexp.MustCompile(`<a href="(/deliveries\?endpoint=` + we + `&amp;status=failed[^"]*)">(\d+) failing</a>`).FindStringSubmatch(list)
	if m == nil {
		t.Fatalf("the endpoints list shows no failing count linked to the failing deliveries")
	}
	linked := b.get(html.UnescapeString(m[1])).body
	rows := strings.Count(linked, `<td><a href="/deliveries/whd_`)
	if m[2] != "1" || rows != 1 {
		t.Errorf("the endpoints list says %q failing, the list its number links to shows %d failing deliveries", m[2], rows)
	}
}

// withEndpoint signs up an organisation with one webhook endpoint, to an
// address nothing listens on.
func (e *env) withEndpoint(email, name string) (*browser, Tenant, string) {
	e.t.Helper()
	b := e.signup(email, name)
	tn := Tenant{OrganizationID: e.orgOf(b)}
	we, _, err := e.hooks.CreateEndpoint(context.Background(), audit.Actor{Type: audit.ActorCLI, ID: "test"}, tn,
		EndpointParams{URL: ptr("http://127.0.0.1:9/hook"), EnabledEvents: []string{"*"}})
	if err != nil {
		e.t.Fatal(err)
	}
	return b, tn, we
}

// The environment switch must send the browser back to a page of this
// site. A link to /%5Cevil.example renders the dashboard's not-found page,
// whose switch carries that path as its back field; switching then answered
// Location: /\evil.example, which browsers read as //evil.example.
func TestSwitchingEnvironmentStaysOnSite(t *testing.T) {
	e := newEnv(t)
	b := e.signup("switch-onsite@example.com", "Switch On Site")
	backRe := regexp.MustCompile(`name="back" value="([^"]*)"`)
	back := "/%5Cevil.example"
	if m := backRe.FindStringSubmatch(b.get("/%5Cevil.example").body); m != nil {
		back = html.UnescapeString(m[1])
	}
	for _, ref := range []string{back, "/%5Cevil.example?days=90", "/%5C%5Cevil.example"} {
		p := b.post("/session/environment", "environment", "live", "back", ref)
		to := p.header.Get("Location")
		u, err := url.Parse(strings.ReplaceAll(to, `\`, "/")) // as a browser reads it
		if p.status != http.StatusSeeOther || err != nil || u.Host != "" || !strings.HasPrefix(to, "/") || strings.HasPrefix(to, `/\`) {
			t.Errorf("switching with back=%q: %d to %q (a browser goes to host %q)", ref, p.status, to, u.Host)
		}
	}
}
