package dashboard

import (
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/controlplane/webhooks"
	"github.com/gatehouse/gatehouse/internal/ids"
)

// "Recover: last 7 days" is a choice the dashboard offers, so the webhook
// service must never refuse it as older than its 7-day window. The service
// reads its clock a moment after the dashboard does; when a second ticked
// over in between, the since the dashboard computed was refused with
// "recovery reaches back at most 7 days".
func TestRecoverLastSevenDaysAcrossASecond(t *testing.T) {
	e := newEnv(t)
	dashNow := time.Now().UTC().Truncate(time.Second).Add(999 * time.Millisecond)
	e.hooks.Now = func() time.Time { return dashNow.Add(2 * time.Millisecond) } // the next second
	d, err := New(Config{DB: e.pool, Accounts: e.accts, Keys: e.keys, Audit: audit.NewLog(e.pool), Webhooks: e.hooks,
		Now: func() time.Time { return dashNow }})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(d)
	t.Cleanup(e.srv.Close)

	b := e.signup("recover@example.com", "Recover")
	we := b.createEndpoint("http://127.0.0.1:9/hook")
	for _, window := range []string{"1h", "24h", "72h", "168h"} {
		if p := b.post("/webhooks/"+we+"/recover", "window", window); p.status != http.StatusSeeOther {
			t.Fatalf("recover the last %s: %d %s", window, p.status, regexp.MustCompile(`<p class="lead">[^<]*`).FindString(p.body))
		}
	}
}

// A disabled endpoint's page offers no "Recover" form (the service would
// refuse it) but says why; a form shown before the endpoint was disabled
// is refused in the dashboard's words, not the API's.
func TestRecoverOnADisabledEndpoint(t *testing.T) {
	e := newEnv(t)
	b := e.signup("recover-disabled@example.com", "Recover disabled")
	we := b.createEndpoint("http://127.0.0.1:9/hook")
	form := `action="/webhooks/` + we + `/recover"`
	const why = "Enable the endpoint to recover its deliveries"
	if page := b.get("/webhooks/" + we); !strings.Contains(page.body, form) || strings.Contains(page.body, why) {
		t.Fatalf("enabled endpoint: recover form shown %v, explanation shown %v",
			strings.Contains(page.body, form), strings.Contains(page.body, why))
	}

	if p := b.post("/webhooks/" + we + "/disable"); p.status != http.StatusSeeOther {
		t.Fatalf("disable: %d", p.status)
	}
	page := b.get("/webhooks/" + we)
	if strings.Contains(page.body, form) {
		t.Error("disabled endpoint's page shows the recover form")
	}
	if !strings.Contains(page.body, why) {
		t.Errorf("disabled endpoint's page does not say %q", why)
	}

	p := b.post("/webhooks/"+we+"/recover", "window", "24h")
	if p.status != http.StatusBadRequest || !strings.Contains(p.body, why) || strings.Contains(p.body, "disabled=false") {
		t.Errorf("recover a disabled endpoint: %d %s, want 400 saying %q", p.status,
			regexp.MustCompile(`<p class="lead">[^<]*`).FindString(p.body), why)
	}
}

// A recovery that stops at its bound (webhooks.MaxRecover) offers to
// continue, and continuing takes the rest — not the first ones again,
// whose new attempts failed meanwhile.
func TestRecoverContinuesPastItsBound(t *testing.T) {
	e := newEnv(t)
	b := e.signup("recover-more@example.com", "Recover more")
	org := e.orgOf(b)
	we := b.createEndpoint("http://127.0.0.1:9/hook")
	ctx := t.Context()
	if _, err := e.pool.Exec(ctx, `INSERT INTO webhook_deliveries (id, organization_id, livemode, event_id, endpoint_id, status, created_at)
		SELECT 'whd_bulk' || lpad(i::text, 18, '0'), $1, false, 'evt_bulk' || i, $2, 'dead', now() - interval '1 hour'
		FROM generate_series(1, $3::int) AS i`, org, we, webhooks.MaxRecover+1); err != nil {
		t.Fatal(err)
	}
	p := b.post("/webhooks/"+we+"/recover", "window", "24h")
	next := p.header.Get("Location")
	if p.status != http.StatusSeeOther || !strings.Contains(next, "recover_after=whd_bulk") {
		t.Fatalf("first recovery: %d to %q", p.status, next)
	}
	if _, err := e.pool.Exec(ctx, `UPDATE webhook_deliveries SET status = 'dead', manual_pending = false
		WHERE endpoint_id = $1 AND status = 'pending'`, we); err != nil {
		t.Fatal(err)
	}
	page := b.get(next)
	if !strings.Contains(page.body, `id="recover-next"`) || !strings.Contains(page.body, "More remain") {
		t.Fatalf("the endpoint's page offers no way to continue")
	}
	since := regexp.MustCompile(`name="since_unix" value="(\d+)"`).FindStringSubmatch(page.body)
	after := regexp.MustCompile(`name="starting_after" value="(whd_\w+)"`).FindStringSubmatch(page.body)
	if since == nil || after == nil {
		t.Fatal("continue form lacks its fields")
	}
	p = b.post("/webhooks/"+we+"/recover", "since_unix", since[1], "starting_after", after[1])
	if p.status != http.StatusSeeOther || !strings.HasPrefix(p.header.Get("Location"), "/deliveries?endpoint="+we) {
		t.Fatalf("continuing: %d to %q", p.status, p.header.Get("Location"))
	}
	var pending int
	var last string
	if err := e.pool.QueryRow(ctx, `SELECT count(*), coalesce(max(id), '') FROM webhook_deliveries
		WHERE endpoint_id = $1 AND status = 'pending'`, we).Scan(&pending, &last); err != nil {
		t.Fatal(err)
	}
	if pending != 1 || last != fmt.Sprintf("whd_bulk%018d", webhooks.MaxRecover+1) {
		t.Fatalf("continuing requeued %d, the last %s; want only the one left", pending, last)
	}
}

// The delivery page shows the body the endpoint received: rendered in the
// API version it pins (2026-06-01 calls the customer's name full_name),
// not the event's own, which the event page shows.
func TestDeliveryPayloadFollowsTheEndpointsVersion(t *testing.T) {
	e := newEnv(t)
	b := e.signup("payload@example.com", "Payload")
	org := e.orgOf(b)
	we := b.createEndpoint("http://127.0.0.1:9/hook", "api_version", "2026-06-01")
	ctx := t.Context()
	evID, whd := ids.New(ids.Event), ids.New(ids.Delivery)
	if _, err := e.pool.Exec(ctx, `INSERT INTO events (id, organization_id, livemode, type, api_version, data, created_at)
		VALUES ($1, $2, false, 'customer.created', '2026-11-01', '{"object":{"object":"customer","id":"cus_1","name":"Ada"}}', now())`,
		evID, org); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `INSERT INTO webhook_deliveries (id, organization_id, livemode, event_id, endpoint_id, status)
		VALUES ($1, $2, false, $3, $4, 'failed')`, whd, org, evID, we); err != nil {
		t.Fatal(err)
	}
	page := html.UnescapeString(b.get("/deliveries/" + whd).body)
	if !strings.Contains(page, `"full_name": "Ada"`) || !strings.Contains(page, `"api_version": "2026-06-01"`) || strings.Contains(page, `"name": "Ada"`) {
		t.Errorf("the delivery page does not show the body the endpoint received:\n%s", page)
	}
	if page := html.UnescapeString(b.get("/events/" + evID).body); !strings.Contains(page, `"name": "Ada"`) {
		t.Errorf("the event page does not show the event in its own version")
	}
}
