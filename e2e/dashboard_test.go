package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gatehouse/gatehouse/internal/whsign"
)

// The dashboard in a real headless Chromium against the whole stack: a
// person signs up, creates a key, calls the API through the gateway, finds
// the request in the logs and its trace, registers an endpoint on a local
// receiver, sees the delivery fail and retries it once the receiver is
// fixed. Every page is saved as a screenshot under e2e/artifacts/.

// chromiumPath is Debian's chromium unless CHROMIUM says otherwise.
func chromiumPath(t *testing.T) string {
	t.Helper()
	p := os.Getenv("CHROMIUM")
	if p == "" {
		p = "/usr/bin/chromium"
	}
	if _, err := exec.LookPath(p); err != nil {
		t.Fatalf("headless Chromium not found at %s (apt-get install chromium, or set CHROMIUM): %v", p, err)
	}
	return p
}

// dashBrowser drives one Chromium tab and saves screenshots.
type dashBrowser struct {
	t        *testing.T
	ctx      context.Context
	base     string
	dir      string
	n        int
	mu       sync.Mutex
	problems []string // console errors and CSP violations
}

func newDashBrowser(t *testing.T, base string) *dashBrowser {
	t.Helper()
	dir := filepath.Join(Root(), "e2e", "artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	old, _ := filepath.Glob(filepath.Join(dir, "dashboard-*.png"))
	for _, f := range old {
		_ = os.Remove(f)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	b := &dashBrowser{t: t, ctx: ctx, base: base, dir: dir}
	// Start the browser on this context first: a timeout on the first
	// call's context would stop the whole browser.
	if _, err := chromedp.Run(ctx, chromedp.Location()); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	console := chromedp.Console(ctx)
	go func() {
		for m, err := range console {
			if err != nil {
				return
			}
			if m.Type != chromedp.ConsoleError && !m.IsException() {
				continue
			}
			// A refused page (404, 403) is logged as a failed resource
			// load; the pages that provoke one on purpose are fine.
			if strings.Contains(m.Text, "status of 4") {
				continue
			}
			b.mu.Lock()
			b.problems = append(b.problems, m.String())
			b.mu.Unlock()
		}
	}()
	return b
}

func (b *dashBrowser) run(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 45*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.shot("failure-" + strings.ReplaceAll(what, " ", "-"))
		b.t.Fatalf("%s: %v", what, err)
	}
}

// leaveBy clicks what loads a new page (a form's button, a link) and
// waits until the page it was clicked on is gone. Waiting only for what the
// new page shows can match the old page, and an action taken on it then
// races the navigation.
func leaveBy(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(
		chromedp.Evaluate[chromedp.Void](`document.body.dataset.left = "1"`),
		chromedp.Click(chromedp.CSS(sel)),
		chromedp.WaitNotPresent(chromedp.CSS("body[data-left]")),
	)
}

// shot saves a full-page screenshot, numbered in the order taken.
func (b *dashBrowser) shot(name string) {
	b.t.Helper()
	// Long pages (the API reference) get their first screen: a full page
	// of 14,000 pixels is unreadable as a picture.
	height, _ := chromedp.Run(b.ctx, chromedp.Evaluate[float64](`document.documentElement.scrollHeight`))
	shoot := chromedp.FullScreenshot(100)
	if height > 4000 {
		shoot = chromedp.CaptureScreenshot()
	}
	buf, err := chromedp.Run(b.ctx, shoot)
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	b.n++
	p := filepath.Join(b.dir, fmt.Sprintf("dashboard-%02d-%s.png", b.n, name))
	if err := os.WriteFile(p, buf, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// open navigates and waits for the page's main landmark.
func (b *dashBrowser) open(path, shot string) string {
	b.t.Helper()
	b.run("open "+path, chromedp.Navigate(b.base+path), chromedp.WaitVisible(chromedp.CSS("main")))
	html := b.get("html", chromedp.OuterHTML(chromedp.CSS("html")))
	if shot != "" {
		b.shot(shot)
	}
	return html
}

// until reloads path until its HTML contains want.
func (b *dashBrowser) until(path, want string, within time.Duration) string {
	b.t.Helper()
	deadline := time.Now().Add(within)
	for {
		html := b.open(path, "")
		if strings.Contains(html, want) {
			return html
		}
		if time.Now().After(deadline) {
			b.shot("timeout")
			b.t.Fatalf("%s did not show %q within %s", path, want, within)
		}
		time.Sleep(700 * time.Millisecond)
	}
}

func (b *dashBrowser) text(sel string) string {
	b.t.Helper()
	b.run("wait for "+sel, chromedp.WaitVisible(chromedp.CSS(sel)))
	return strings.TrimSpace(b.get(sel, chromedp.Text(chromedp.CSS(sel))))
}

// get runs an action that reads a string.
func (b *dashBrowser) get(what string, a chromedp.Action[string]) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 45*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatalf("reading %s: %v", what, err)
	}
	return v
}

// fakeTimers replaces the page's setTimeout and clearTimeout with a clock
// that runs its timers only when told (fakeTimers.runAll), counting the
// timers set (fakeTimers.set).
const fakeTimers = `window.fakeTimers = (function () {
	var pending = new Map(), next = 0, clock = {set: 0};
	window.setTimeout = function (f) { clock.set++; pending.set(++next, f); return next; };
	window.clearTimeout = function (id) { pending.delete(id); };
	clock.runAll = function () {
		var due = Array.from(pending.values());
		pending.clear();
		due.forEach(function (f) { f(); });
	};
	return clock;
})()`

// copyShown waits until the page has set n timers, that is until n copy
// clicks have shown "Copied" (the clipboard answers asynchronously). The
// poll has no timeout of its own, which would set a timer of the page.
func copyShown(n int) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](fmt.Sprintf("window.fakeTimers.set >= %d", n), chromedp.WithPollingTimeout(0))
}

// receiver is a local webhook endpoint whose answer can be changed.
type receiver struct {
	srv    *httptest.Server
	status atomic.Int32
	mu     sync.Mutex
	got    []*http.Request
	bodies [][]byte
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{}
	r.status.Store(500)
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, req)
		r.bodies = append(r.bodies, body)
		r.mu.Unlock()
		code := int(r.status.Load())
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"received":true,"answer":%d}`, code)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func TestDashboardInBrowser(t *testing.T) {
	b := newDashBrowser(t, stack.Control.URL())
	rcv := newReceiver(t)
	run := time.Now().UnixNano()
	email := fmt.Sprintf("ada+%d@example.com", run)
	orgName := fmt.Sprintf("Analytical Engines %d", run)

	// Signed out: the dashboard sends people to sign in.
	b.open("/", "login")
	b.open("/signup", "signup")
	b.run("sign up",
		chromedp.SendKeys(chromedp.CSS("#organization"), orgName),
		chromedp.SendKeys(chromedp.CSS("#email"), email),
		chromedp.SendKeys(chromedp.CSS("#password"), "correct horse battery"),
		leaveBy("form[action='/signup'] button[type=submit]"),
		chromedp.WaitVisible(chromedp.CSS(".banner")),
	)
	b.shot("overview-empty")
	if !strings.Contains(b.text(".banner"), "Test mode") {
		t.Fatal("no test-mode banner after sign-up")
	}
	jsOn, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`document.documentElement.classList.contains("js")`))
	if err != nil || !jsOn {
		t.Fatal("app.js did not run (CSP or path problem)")
	}

	// Create a sandbox secret key; it is shown once.
	b.open("/keys", "keys-empty")
	b.run("create key",
		chromedp.SendKeys(chromedp.CSS("#key-name"), "e2e"),
		leaveBy("form[action='/keys'] button[type=submit]"),
		chromedp.WaitVisible(chromedp.CSS("#secret")),
	)
	b.shot("key-created")
	key := b.text("#secret")
	// The page's timers are faked, so the 1.5 s the button reads "Copied"
	// pass when the test says. A second click while it reads "Copied"
	// must still end with its label: it once kept "Copied" for good.
	const copyBtn = "button[data-copy=secret]"
	b.run("fake the page's timers", chromedp.Evaluate[chromedp.Void](fakeTimers))
	b.run("copy key", chromedp.Click(chromedp.CSS(copyBtn)), copyShown(1))
	if copied := b.text(copyBtn); copied != "Copied" {
		t.Errorf("the copy button says %q after a click", copied)
	}
	b.run("copy key again", chromedp.Click(chromedp.CSS(copyBtn)), copyShown(2))
	b.run("let 1.5 s pass", chromedp.Evaluate[chromedp.Void](`window.fakeTimers.runAll()`))
	if label := b.text(copyBtn); label != "Copy" {
		t.Errorf("the copy button says %q once 1.5 s have passed after two clicks, want Copy", label)
	}
	if !strings.HasPrefix(key, "sk_test_") {
		t.Fatalf("shown key %q", key)
	}

	// Register an endpoint on the local receiver, which fails at first.
	b.open("/webhooks", "webhooks-empty")
	b.open("/webhooks/new", "webhook-new")
	b.run("add endpoint",
		chromedp.SendKeys(chromedp.CSS("#url"), rcv.srv.URL+"/hooks"),
		chromedp.SendKeys(chromedp.CSS("#description"), "local receiver"),
		leaveBy("form button[type=submit].primary"),
		chromedp.WaitVisible(chromedp.CSS("#whsec")),
	)
	b.shot("webhook-created")
	secret := b.text("#whsec")
	if !strings.HasPrefix(secret, "whsec_") {
		t.Fatalf("shown secret %q", secret)
	}
	// The page that shows the new secret is the answer to the POST; the
	// endpoint's own page is /webhooks/{id}.
	weID := regexp.MustCompile(`we_[0-9A-Za-z]{22}`).FindString(b.get("html", chromedp.OuterHTML(chromedp.CSS("main"))))
	endpointURL := b.base + "/webhooks/" + weID

	// Call the API through the gateway with the new key.
	created := call(t, "POST", "/v1/customers", key, "application/json", `{"email":"grace@example.com","name":"Grace Hopper"}`,
		"Idempotency-Key", "e2e-dashboard-1")
	if created.Status != 200 {
		t.Fatalf("create customer: %d %s", created.Status, created.Raw)
	}
	rid := created.Header.Get("Request-Id")
	if missing := call(t, "GET", "/v1/customers/cus_doesnotexist", key, "", ""); missing.Status != 404 {
		t.Fatalf("missing customer: %d", missing.Status)
	}

	// Find the request in the logs by its id, as support would. The
	// request-log ingester writes it a few seconds after the request; the
	// API is asked too, so that a slow ingester is told apart from a
	// dashboard that does not show what was ingested.
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		r := call(t, "GET", "/v1/request-logs/"+rid, key, "", "")
		if r.Status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the request-log ingester did not store %s within 90s: %d %s", rid, r.Status, r.Raw)
		}
	}
	b.until("/logs", rid, 10*time.Second)
	b.shot("logs")
	// Search as a person would. Chrome can report a node it just found as
	// gone while the freshly loaded page settles (DevTools error -32000);
	// that is the browser's race, not the page's, so the search is retried
	// on a reloaded page, a bounded number of times.
	search := []chromedp.Action[chromedp.Void]{
		chromedp.WaitVisible(chromedp.CSS("#f-rid")),
		chromedp.SendKeys(chromedp.CSS("#f-rid"), rid),
		leaveBy("form.filters button[type=submit]"),
		leaveBy(`a[href="/logs/` + rid + `"]`),
		chromedp.WaitVisible(chromedp.CSS("ol.trace, #rid")),
	}
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(b.ctx, 45*time.Second)
		err := chromedp.Do(ctx, search...)
		cancel()
		if err == nil {
			break
		}
		if attempt == 3 || !strings.Contains(err.Error(), "-32000") {
			b.shot("failure-search-request-id")
			t.Fatalf("search request id: %v", err)
		}
		b.open("/logs", "")
	}
	// The trace fills in as the event is ingested and delivered. Right after
	// the stack starts, the Kafka consumer groups may still be joining
	// (stale members of an earlier run hold them until their session
	// times out), hence the generous wait.
	b.until("/logs/"+rid, "/deliveries/whd_", 150*time.Second)
	html := b.until("/logs/"+rid, "Attempt ", 60*time.Second)
	b.shot("log-trace")
	for _, want := range []string{"customer.created", "e2e-dashboard-1", "Authorization"} {
		if !strings.Contains(html, want) {
			t.Errorf("request page lacks %q", want)
		}
	}
	if strings.Contains(html, key) {
		t.Fatal("the request page shows the API key")
	}
	whd := regexp.MustCompile(`/deliveries/(whd_[0-9A-Za-z]{22})`).FindStringSubmatch(html)[1]

	// The delivery failed with the receiver's 500; fix the receiver, retry.
	b.until("/deliveries/"+whd, `<span class="code s5">500</span>`, 60*time.Second)
	b.shot("delivery-failed")
	rcv.status.Store(204)
	b.run("retry",
		leaveBy("form[action='/deliveries/"+whd+"/retry'] button"),
		chromedp.WaitVisible(chromedp.CSS(".flash")),
	)
	b.shot("delivery-retry-queued")
	html = b.until("/deliveries/"+whd, "pill d-succeeded", 60*time.Second)
	b.shot("delivery-succeeded")
	if !strings.Contains(html, "manual") {
		t.Error("the retried attempt is not marked manual")
	}
	// What the receiver got verifies with the secret the dashboard showed.
	rcv.mu.Lock()
	last, body := rcv.got[len(rcv.got)-1], rcv.bodies[len(rcv.bodies)-1]
	rcv.mu.Unlock()
	if err := whsign.Verify(secret, last.Header, body, 0, time.Now()); err != nil {
		t.Fatalf("delivered webhook does not verify with the dashboard's secret: %v", err)
	}
	if last.Header.Get("webhook-id") != whd || !strings.Contains(string(body), `"customer.created"`) {
		t.Fatalf("delivered %s: %s", last.Header.Get("webhook-id"), body)
	}

	// Every other page, as a user would browse them.
	b.open(strings.TrimPrefix(endpointURL, b.base), "webhook-endpoint")
	b.run("reveal secret",
		leaveBy("form[action$='/reveal'] button"),
		chromedp.WaitVisible(chromedp.CSS("#whsec-0")),
	)
	b.shot("webhook-secret-revealed")
	if got := b.text("#whsec-0"); got != secret {
		t.Fatalf("revealed %q, created %q", got, secret)
	}
	b.run("send test event",
		leaveBy("form[action$='/test'] button"),
		chromedp.WaitVisible(chromedp.CSS(".flash")),
	)
	b.until(strings.TrimPrefix(endpointURL, b.base), "webhook_endpoint.test", 30*time.Second)
	b.open(strings.TrimPrefix(endpointURL, b.base)+"/edit", "webhook-edit")
	b.open(strings.TrimPrefix(endpointURL, b.base)+"?confirm=delete", "webhook-delete-confirm")
	b.open("/deliveries", "deliveries")
	b.open("/deliveries?status=succeeded", "deliveries-succeeded")
	evHTML := b.open("/events", "events")
	evt := regexp.MustCompile(`/events/(evt_[0-9A-Za-z]{22})`).FindStringSubmatch(evHTML)[1]
	b.open("/events/"+evt, "event")
	b.open("/logs?status=4xx", "logs-4xx")
	b.until("/", "/logs/req_", 30*time.Second)
	b.shot("overview")
	b.open("/usage", "usage")
	// The quota meter is the gateway's own counter of the Caddyfile's
	// monthly quota, which the requests above went through.
	if got := b.text("#quotas"); !regexp.MustCompile(`monthly \(per organisation, per calendar month\)\s*: [1-9][0-9,]* of 1,000,000 requests`).MatchString(got) {
		t.Errorf("usage page quotas: %q", got)
	}
	b.open("/audit", "audit")
	b.open("/members", "members")
	b.run("invite",
		chromedp.SendKeys(chromedp.CSS("#inv-email"), "viewer@example.com"),
		leaveBy("form[action='/members/invitations'] button"),
		chromedp.WaitVisible(chromedp.CSS("#invite-link")),
	)
	b.shot("members-invited")
	// A member added with the CLI gets another role from the members page.
	var orgs struct{ Data []struct{ ID, Name string } }
	if err := stack.CLIJSON(b.ctx, &orgs, "orgs", "list"); err != nil {
		t.Fatal(err)
	}
	orgID := ""
	for _, o := range orgs.Data {
		if o.Name == orgName {
			orgID = o.ID
		}
	}
	var dev struct{ ID string }
	if err := stack.CLIJSON(b.ctx, &dev, "users", "create", "--org", orgID, "--email", "dev+"+email,
		"--password", "correct horse battery", "--role", "developer"); err != nil {
		t.Fatal(err)
	}
	b.open("/members", "members-two")
	b.run("change role",
		chromedp.SetValue(chromedp.CSS("#role-"+dev.ID), "viewer"),
		leaveBy("form[action='/members/"+dev.ID+"/role'] button"),
		chromedp.WaitVisible(chromedp.CSS(".flash")),
	)
	if flash := b.text(".flash"); !strings.Contains(flash, "is now viewer") {
		t.Fatalf("after changing a role the page says %q", flash)
	}
	b.shot("members-role-changed")
	keysHTML := b.open("/keys", "keys")
	keyID := regexp.MustCompile(`/keys/(key_[0-9A-Za-z]{22})`).FindStringSubmatch(keysHTML)[1]
	b.open("/keys/"+keyID, "key")
	b.open("/keys/"+keyID+"?confirm=revoke", "key-revoke-confirm")
	b.open("/docs", "docs")
	b.open("/docs/quickstart", "docs-quickstart")
	b.open("/docs/api", "docs-api")
	b.open("/docs/errors#rate_limited", "docs-errors")
	b.open("/docs/webhooks", "docs-webhooks")
	b.open("/logs/req_000000000000000000000000", "not-found")

	// Live mode: no test banner, no sandbox data.
	b.run("switch to live",
		leaveBy(".env button[value=live]"),
		chromedp.WaitVisible(chromedp.CSS("body.live main")),
	)
	liveHTML := b.open("/logs", "logs-live")
	if strings.Contains(liveHTML, rid) || strings.Contains(liveHTML, "Test mode") {
		t.Fatal("live mode shows sandbox requests or the test banner")
	}
	b.run("sign out",
		leaveBy("form[action='/logout'] button"),
		chromedp.WaitVisible(chromedp.CSS("form[action='/login']")),
	)
	b.shot("signed-out")

	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		t.Errorf("browser reported: %s", p)
	}
}
