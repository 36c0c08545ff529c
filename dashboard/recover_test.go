package dashboard

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/controlplane/audit"
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
	b.get("/webhooks/new")
	p := b.post("/webhooks", "url", "http://127.0.0.1:9/hook", "events", "*")
	we := regexp.MustCompile(`we_[0-9A-Za-z]{22}`).FindString(p.body)
	if p.status != http.StatusOK || we == "" {
		t.Fatalf("create endpoint: %d", p.status)
	}
	for _, window := range []string{"1h", "24h", "72h", "168h"} {
		if p := b.post("/webhooks/"+we+"/recover", "window", window); p.status != http.StatusSeeOther {
			t.Fatalf("recover the last %s: %d %s", window, p.status, regexp.MustCompile(`<p class="lead">[^<]*`).FindString(p.body))
		}
	}
}
