package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/controlplane/accounts"
	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/controlplane/ingest"
	"github.com/gatehouse/gatehouse/controlplane/keys"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/apikey"
	"github.com/gatehouse/gatehouse/internal/ids"
)

func TestSignupSessionCookieAndLogout(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.get("/signup")
	p := b.post("/signup", "email", "ada@example.com", "password", "correct horse battery", "organization", "Analytical Engines")
	if p.status != http.StatusSeeOther {
		t.Fatalf("signup: %d %s", p.status, p.body)
	}
	var cookie string
	for _, c := range p.header.Values("Set-Cookie") {
		if strings.HasPrefix(c, sessionCookie+"=") {
			cookie = c
		}
	}
	for _, want := range []string{"HttpOnly", "SameSite=Lax", "Path=/"} {
		if !strings.Contains(cookie, want) {
			t.Errorf("session cookie %q lacks %s", cookie, want)
		}
	}
	if strings.Contains(cookie, "Secure") {
		t.Errorf("session cookie %q is Secure over plain http", cookie)
	}
	// The sign-up's audit entries carry the address it came from.
	var n int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM audit_logs WHERE action IN ('organization.created', 'membership.created') AND ip = '127.0.0.1'`).Scan(&n); err != nil || n != 2 {
		t.Errorf("sign-up audit entries with the client's address: %d, %v; want 2", n, err)
	}
	// Only the token's hash is stored.
	token := strings.TrimPrefix(strings.Split(cookie, ";")[0], sessionCookie+"=")
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM sessions WHERE token_hash = $1`, hashToken(token)).Scan(&n); err != nil || n != 1 {
		t.Fatalf("session row by hash: %d %v", n, err)
	}

	home := b.get("/")
	if home.status != 200 || !strings.Contains(home.body, "Test mode") || !strings.Contains(home.body, "Analytical Engines") {
		t.Fatalf("overview: %d, test-mode banner or org missing", home.status)
	}
	// Owner role, sandbox by default; the owner can switch to live.
	if p := b.post("/session/environment", "environment", "live", "back", "/keys"); p.status != http.StatusSeeOther || p.header.Get("Location") != "/keys" {
		t.Fatalf("switch env: %d %s", p.status, p.header.Get("Location"))
	}
	if live := b.get("/keys"); strings.Contains(live.body, "Test mode") || !strings.Contains(live.body, "Create live key") {
		t.Fatal("live mode page still shows the test banner or lacks the live create button")
	}

	if p := b.post("/logout"); p.status != http.StatusSeeOther {
		t.Fatalf("logout: %d", p.status)
	}
	if p := b.get("/keys"); p.status != http.StatusSeeOther || !strings.HasPrefix(p.header.Get("Location"), "/login") {
		t.Fatalf("after logout /keys: %d %s", p.status, p.header.Get("Location"))
	}
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM sessions`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("sessions left after logout: %d %v", n, err)
	}
}

func TestSecureCookieBehindTLSProxy(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.get("/signup")
	form := "email=tls%40example.com&password=correct+horse+battery&organization=TLS&csrf_token=" + b.csrf
	req, _ := http.NewRequest("POST", e.srv.URL+"/signup", strings.NewReader(form))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Forwarded-Proto", "https")
	p := b.do(req)
	if p.status != http.StatusSeeOther {
		t.Fatalf("signup: %d %s", p.status, p.body)
	}
	secure := false
	for _, c := range p.header.Values("Set-Cookie") {
		if strings.HasPrefix(c, sessionCookie+"=") && strings.Contains(c, "Secure") {
			secure = true
		}
	}
	if !secure || p.header.Get("Strict-Transport-Security") == "" {
		t.Fatalf("behind https: secure cookie %v, HSTS %q", secure, p.header.Get("Strict-Transport-Security"))
	}
}

func TestSecurityHeaders(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	for _, path := range []string{"/login", "/docs/errors", "/nope", "/static/app.css"} {
		p := b.get(path)
		csp := p.header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("%s: CSP %q", path, csp)
		}
		for h, want := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"} {
			if got := p.header.Get(h); got != want {
				t.Errorf("%s: %s = %q, want %q", path, h, got, want)
			}
		}
	}
	// No inline script or style anywhere: the CSP would block them.
	for _, path := range []string{"/login", "/signup", "/docs", "/docs/api", "/docs/errors", "/docs/webhooks", "/docs/quickstart"} {
		p := b.get(path)
		if regexp.MustCompile(`<script>|<script [^>]*>[^<]|\sstyle="|<style`).MatchString(p.body) {
			t.Errorf("%s has inline script or style", path)
		}
	}
}

func TestLoginThrottle(t *testing.T) {
	e := newEnv(t)
	e.signup("grace@example.com", "Navy")
	b := e.browser()
	b.get("/login")
	for i := 0; i < loginFailuresPerKey; i++ {
		if p := b.post("/login", "email", "grace@example.com", "password", "wrong password"); p.status != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %d", i+1, p.status)
		}
	}
	// Now even the right password waits: the throttle is checked first.
	p := b.post("/login", "email", "grace@example.com", "password", "correct horse battery")
	if p.status != http.StatusTooManyRequests || p.header.Get("Retry-After") == "" {
		t.Fatalf("after %d failures: %d", loginFailuresPerKey, p.status)
	}
	// Another email from the same address is not locked out.
	e.signup("other@example.com", "Other")
	if p := b.post("/login", "email", "other@example.com", "password", "correct horse battery"); p.status != http.StatusSeeOther {
		t.Fatalf("other email: %d", p.status)
	}
}

// Guesses sent at once count each other: each is recorded before its
// password is checked, so no more than the limit are checked.
func TestLoginThrottleHoldsUnderConcurrency(t *testing.T) {
	e := newEnv(t)
	e.signup("grace@example.com", "Navy")
	b := e.browser()
	b.get("/login")
	form := url.Values{"email": {"grace@example.com"}, "password": {"wrong password"}, csrfField: {b.csrf}}.Encode()
	const guesses = 20
	statuses := make(chan int, guesses)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range guesses {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", e.srv.URL+"/login", strings.NewReader(form))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			<-start
			resp, err := b.c.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			_ = resp.Body.Close()
			statuses <- resp.StatusCode
		})
	}
	close(start)
	wg.Wait()
	close(statuses)
	counts := map[int]int{}
	for st := range statuses {
		counts[st]++
	}
	if counts[http.StatusUnauthorized] != loginFailuresPerKey || counts[http.StatusTooManyRequests] != guesses-loginFailuresPerKey {
		t.Errorf("%d guesses at once: %v; want %d checked (401), the rest refused (429)", guesses, counts, loginFailuresPerKey)
	}
}

// Text Postgres cannot hold (NUL, invalid UTF-8), typed or pasted into any
// form or filter, is a 400 page, not a 500 from the query it reaches.
func TestUnstorableInputIsABadRequest(t *testing.T) {
	e := newEnv(t)
	owner := e.signup("ada@example.com", "Acme")
	anon := e.browser()
	anon.get("/login")
	for _, email := range []string{"a\x00@example.com", "a\xff@example.com"} {
		if p := anon.post("/login", "email", email, "password", "correct horse battery"); p.status != http.StatusBadRequest {
			t.Errorf("sign-in as %q: %d, want 400", email, p.status)
		}
	}
	if p := owner.post("/members/invitations", "email", "b\x00@example.com", "role", "viewer"); p.status != http.StatusBadRequest {
		t.Errorf("invitation with a NUL: %d, want 400", p.status)
	}
	if p := owner.get("/audit?target=%00"); p.status != http.StatusBadRequest {
		t.Errorf("audit filter with a NUL: %d, want 400", p.status)
	}
}

func TestActionRateLimit(t *testing.T) {
	e := newEnv(t)
	e.d.cfg.ActionsPerMinute = 3
	b := e.signup("rl@example.com", "RL")
	b.get("/keys")
	// The limit counts in fixed wall-clock minutes: pin the clock, or a
	// minute turning between the first and the fourth POST resets the count.
	at := time.Now()
	e.d.now = func() time.Time { return at }
	got := 0
	for i := 0; i < 5; i++ {
		p := b.post("/session/environment", "environment", "sandbox")
		if p.status == http.StatusTooManyRequests {
			got = i
			break
		}
	}
	if got != 3 {
		t.Fatalf("rate limited at action %d, want the 4th", got+1)
	}
}

func TestKeysCreateRollRevoke(t *testing.T) {
	e := newEnv(t)
	b := e.signup("keys@example.com", "Keys")
	b.get("/keys")
	p := b.post("/keys", "kind", "restricted", "name", "reporting", "scopes", "logs:read", "scopes", "usage:read", "expires_in", "720h")
	m := regexp.MustCompile(`id="secret" class="secret">(rk_test_[0-9A-Za-z]+)<`).FindStringSubmatch(p.body)
	if p.status != 200 || m == nil {
		t.Fatalf("create: %d, no key shown", p.status)
	}
	if p.header.Get("Cache-Control") != "no-store" {
		t.Fatal("the page showing a secret may be cached")
	}
	org := e.orgOf(b)
	list, _ := e.keys.List(context.Background(), org, apikey.Sandbox)
	if len(list) != 1 || list[0].Kind != apikey.Restricted || strings.Join(list[0].Scopes, ",") != "logs:read,usage:read" || list[0].ExpiresAt == nil {
		t.Fatalf("stored key: %+v", list)
	}
	k := list[0]
	// The audit trail records the address the user acted from.
	var ip string
	if err := e.pool.QueryRow(context.Background(), `SELECT ip FROM audit_logs WHERE organization_id = $1 AND action = 'api_key.created'`, org).Scan(&ip); err != nil || ip != "127.0.0.1" {
		t.Fatalf("audit entry of the key's creation: address %q, %v; want 127.0.0.1", ip, err)
	}
	if again := b.get("/keys"); strings.Contains(again.body, m[1]) {
		t.Fatal("the key is shown again")
	}
	// Roll with a grace period, then revoke the replacement.
	b.get("/keys/" + k.ID)
	if p := b.post("/keys/"+k.ID+"/roll", "expires_in", "1h"); p.status != 200 || !strings.Contains(p.body, "rk_test_") {
		t.Fatalf("roll: %d", p.status)
	}
	old, _ := e.keys.Get(context.Background(), org, apikey.Sandbox, k.ID)
	if old.RolledTo == nil || old.ExpiresAt == nil || time.Until(*old.ExpiresAt) > time.Hour+time.Minute {
		t.Fatalf("rolled key: %+v", old)
	}
	// Rolling with no grace cuts the key off: the page asks first.
	next := *old.RolledTo
	p = b.post("/keys/"+next+"/roll", "expires_in", "0s")
	if loc := p.header.Get("Location"); p.status != http.StatusSeeOther || loc != "/keys/"+next+"?confirm=roll-now" {
		t.Fatalf("roll now without confirmation: %d to %q", p.status, loc)
	}
	if k, _ := e.keys.Get(context.Background(), org, apikey.Sandbox, next); k.RolledTo != nil {
		t.Fatal("rolled before the confirmation")
	}
	if p := b.get("/keys/" + next + "?confirm=roll-now"); !strings.Contains(p.body, "Yes, roll and stop it now") || !strings.Contains(p.body, "api_key_expired") {
		t.Fatal("no confirmation that says what stopping the key now does")
	}
	if p := b.post("/keys/"+next+"/roll", "expires_in", "0s", "confirm", "yes"); p.status != 200 || !strings.Contains(p.body, "rk_test_") {
		t.Fatalf("confirmed roll now: %d", p.status)
	}
	if k, _ := e.keys.Get(context.Background(), org, apikey.Sandbox, next); k.RolledTo == nil || k.Status(time.Now()) != keys.StatusExpired {
		t.Fatalf("confirmed roll now left the key %+v", k)
	}
	if p := b.post("/keys/" + *old.RolledTo + "/revoke"); p.status != http.StatusBadRequest {
		t.Fatalf("revoke without confirmation: %d", p.status)
	}
	if p := b.get("/keys/" + *old.RolledTo + "?confirm=revoke"); !strings.Contains(p.body, "Yes, revoke this key") {
		t.Fatal("no confirmation step")
	}
	if p := b.post("/keys/"+*old.RolledTo+"/revoke", "confirm", "yes"); p.status != http.StatusSeeOther {
		t.Fatalf("revoke: %d %s", p.status, p.body)
	}
	nk, _ := e.keys.Get(context.Background(), org, apikey.Sandbox, *old.RolledTo)
	if nk.Status(time.Now()) != keys.StatusRevoked {
		t.Fatalf("not revoked: %+v", nk)
	}
	// Every change is audited with the user as the actor.
	pg, err := audit.NewLog(e.pool).List(context.Background(), org, audit.Filter{Action: "api_key.", Limit: 10})
	if err != nil || len(pg.Data) != 6 { // created, then created and rolled twice (two rolls), revoked
		t.Fatalf("audit: %d entries, %v", len(pg.Data), err)
	}
	for _, en := range pg.Data {
		if en.Actor.Type != audit.ActorUser || !strings.HasPrefix(en.Actor.ID, "user_") {
			t.Fatalf("actor %+v", en.Actor)
		}
	}
}

func TestDeveloperCannotManageLiveKeys(t *testing.T) {
	e := newEnv(t)
	owner := e.signup("owner@example.com", "Org")
	org := e.orgOf(owner)
	dev := e.member(org, "dev@example.com", accounts.RoleDeveloper)
	if p := dev.post("/keys", "kind", "secret", "expires_in", ""); p.status != 200 || !strings.Contains(p.body, "sk_test_") {
		t.Fatalf("developer sandbox key: %d", p.status)
	}
	dev.post("/session/environment", "environment", "live")
	if p := dev.get("/keys"); strings.Contains(p.body, `action="/keys"`) {
		t.Fatal("developer sees the live create form")
	}
	if p := dev.post("/keys", "kind", "secret", "expires_in", ""); p.status != http.StatusForbidden {
		t.Fatalf("developer live key: %d", p.status)
	}
	live, _ := e.keys.Create(context.Background(), audit.Actor{Type: audit.ActorCLI, ID: "t"}, org, apikey.Live, keys.CreateParams{Kind: apikey.Secret})
	for _, path := range []string{"/keys/" + live.ID + "/roll", "/keys/" + live.ID + "/revoke"} {
		if p := dev.post(path, "expires_in", "0s", "confirm", "yes"); p.status != http.StatusForbidden {
			t.Fatalf("developer %s: %d", path, p.status)
		}
	}
	owner.post("/session/environment", "environment", "live")
	owner.get("/keys") // the live page: a form from the sandbox one would be refused as out of date
	if p := owner.post("/keys", "kind", "secret", "expires_in", ""); p.status != 200 || !strings.Contains(p.body, "sk_live_") {
		t.Fatalf("owner live key: %d", p.status)
	}
}

// TestBodyCaptureSetting: the request log page shows whether bodies are
// kept in the current environment; admins switch it in test mode, only
// owners in live mode, and every change is in the audit trail.
func TestBodyCaptureSetting(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	owner := e.signup("owner@example.com", "Org")
	org := e.orgOf(owner)
	admin := e.member(org, "admin@example.com", accounts.RoleAdmin)
	dev := e.member(org, "dev@example.com", accounts.RoleDeveloper)
	capture := func(env apikey.Environment) bool {
		t.Helper()
		on, err := e.keys.BodyCapture(ctx, org, env)
		if err != nil {
			t.Fatal(err)
		}
		return on
	}

	if p := dev.get("/logs"); !strings.Contains(p.body, "Request logs keep no bodies") || strings.Contains(p.body, `action="/logs/body-capture"`) {
		t.Fatalf("developer's log page: %d, shows the form or not the state", p.status)
	}
	if p := dev.post("/logs/body-capture", "capture", "on"); p.status != http.StatusForbidden || capture(apikey.Sandbox) {
		t.Fatalf("developer turning capture on: %d", p.status)
	}
	if p := admin.get("/logs"); !strings.Contains(p.body, `action="/logs/body-capture"`) {
		t.Fatal("admin's sandbox log page has no body capture form")
	}
	if p := admin.post("/logs/body-capture", "capture", "on"); p.status != http.StatusSeeOther || !capture(apikey.Sandbox) || capture(apikey.Live) {
		t.Fatalf("admin turning sandbox capture on: %d", p.status)
	}
	if p := admin.get("/logs"); !strings.Contains(p.body, "New request logs keep the request and response bodies") {
		t.Fatal("the log page does not say capture is on")
	}
	if p := admin.post("/logs/body-capture", "capture", "maybe"); p.status != http.StatusBadRequest {
		t.Fatalf("capture=maybe: %d", p.status)
	}

	// Live mode: bodies hold customers' data, so owners only.
	admin.post("/session/environment", "environment", "live")
	if p := admin.get("/logs"); strings.Contains(p.body, `action="/logs/body-capture"`) || !strings.Contains(p.body, "Only owners") {
		t.Fatal("admin's live log page offers the form")
	}
	if p := admin.post("/logs/body-capture", "capture", "on"); p.status != http.StatusForbidden || capture(apikey.Live) {
		t.Fatalf("admin turning live capture on: %d", p.status)
	}
	owner.post("/session/environment", "environment", "live")
	owner.get("/logs")
	if p := owner.post("/logs/body-capture", "capture", "on"); p.status != http.StatusSeeOther || !capture(apikey.Live) {
		t.Fatalf("owner turning live capture on: %d", p.status)
	}
	if p := owner.post("/logs/body-capture", "capture", "off"); p.status != http.StatusSeeOther || capture(apikey.Live) || !capture(apikey.Sandbox) {
		t.Fatalf("owner turning live capture off: %d", p.status)
	}

	entries, err := audit.NewLog(e.pool).List(ctx, org, audit.Filter{Action: "organization.updated", Limit: 10})
	if err != nil || len(entries.Data) != 3 {
		t.Fatalf("audit entries = %+v, %v; want 3 (sandbox on, live on, live off)", entries.Data, err)
	}
	// Each environment's audit trail has its own changes only.
	owner.post("/session/environment", "environment", "sandbox")
	if p := owner.get("/audit"); strings.Contains(p.body, "body_capture_live") || !strings.Contains(p.body, "body_capture_sandbox") {
		t.Errorf("the sandbox audit trail shows the live body capture changes, or not the sandbox one")
	}
	if x := owner.get("/audit/export?format=json"); strings.Contains(x.body, "body_capture_live") {
		t.Errorf("the sandbox audit export has the live body capture changes")
	}
}

// The first-request hint names a key of the environment shown.
func TestOverviewHintNamesTheEnvironmentsKey(t *testing.T) {
	e := newEnv(t)
	owner := e.signup("owner@example.com", "Org")
	if p := owner.get("/"); !strings.Contains(p.body, "Bearer sk_test_…") {
		t.Errorf("sandbox overview: no sk_test_ hint")
	}
	owner.post("/session/environment", "environment", "live")
	if p := owner.get("/"); !strings.Contains(p.body, "Bearer sk_live_…") || strings.Contains(p.body, "sk_test_") {
		t.Errorf("live overview: no sk_live_ hint, or an sk_test_ one")
	}
}

// An address no account can have is refused on the invitation form, not
// when the invitee tries to accept.
func TestInvitationToAnInvalidEmailIsRefused(t *testing.T) {
	e := newEnv(t)
	owner := e.signup("owner@example.com", "Org")
	owner.get("/members")
	for _, email := range []string{"bob@", "@example.com", "Bob <bob@example.com>", "bob@@example.com"} {
		p := owner.post("/members/invitations", "email", email, "role", "viewer")
		if p.status != http.StatusBadRequest || strings.Contains(p.body, "/invitations/") {
			t.Errorf("inviting %q: %d", email, p.status)
		}
	}
}

func TestInvitationFlow(t *testing.T) {
	e := newEnv(t)
	owner := e.signup("owner@example.com", "Inviting Org")
	org := e.orgOf(owner)
	owner.get("/members")
	p := owner.post("/members/invitations", "email", "new@example.com", "role", "viewer")
	m := regexp.MustCompile(`(/invitations/[A-Za-z0-9_-]{43})<`).FindStringSubmatch(p.body)
	if p.status != 200 || m == nil {
		t.Fatalf("invite: %d, no link", p.status)
	}
	guest := e.browser()
	if p := guest.get(m[1]); p.status != 200 || !strings.Contains(p.body, "Inviting Org") {
		t.Fatalf("invitation page: %d", p.status)
	}
	if p := guest.post(m[1], "password", "short"); p.status != http.StatusBadRequest {
		t.Fatalf("short password: %d", p.status)
	}
	if p := guest.post(m[1], "password", "a fine new password"); p.status != http.StatusSeeOther {
		t.Fatalf("accept: %d %s", p.status, p.body)
	}
	if e.orgOf(guest) != org {
		t.Fatal("guest is not in the organisation")
	}
	if p := e.browser().get(m[1]); p.status != http.StatusGone {
		t.Fatalf("used invitation: %d", p.status)
	}
	ms, _ := e.accts.ListMembers(context.Background(), org)
	if len(ms) != 2 {
		t.Fatalf("members: %+v", ms)
	}
	// An existing account must prove it is theirs.
	e.signup("existing@example.com", "Elsewhere")
	p = owner.post("/members/invitations", "email", "existing@example.com", "role", "developer")
	link := regexp.MustCompile(`(/invitations/[A-Za-z0-9_-]{43})<`).FindStringSubmatch(p.body)[1]
	other := e.browser()
	other.get(link)
	if p := other.post(link, "password", "not their password"); p.status != http.StatusUnauthorized {
		t.Fatalf("wrong password for existing user: %d", p.status)
	}
	if p := other.post(link, "password", "correct horse battery"); p.status != http.StatusSeeOther {
		t.Fatalf("existing user accepts: %d", p.status)
	}
	// The switcher lists both organisations.
	if p := other.get("/"); !strings.Contains(p.body, "Elsewhere") || !strings.Contains(p.body, "Inviting Org") {
		t.Fatal("switcher lacks an organisation")
	}
	// Admins cannot make owners.
	admin := e.member(org, "admin@example.com", accounts.RoleAdmin)
	admin.get("/members")
	if p := admin.post("/members/invitations", "email", "x@example.com", "role", "owner"); p.status != http.StatusForbidden {
		t.Fatalf("admin invites owner: %d", p.status)
	}
	// Nor undo an owner's invitation of an owner: no Revoke button, and
	// the form posted anyway is refused and leaves the link working.
	p = owner.post("/members/invitations", "email", "co-owner@example.com", "role", "owner")
	ownerLink := regexp.MustCompile(`(/invitations/[A-Za-z0-9_-]{43})<`).FindStringSubmatch(p.body)
	if ownerLink == nil {
		t.Fatalf("owner invites owner: %d", p.status)
	}
	var invID string
	if err := e.pool.QueryRow(context.Background(), `SELECT id FROM invitations WHERE email = 'co-owner@example.com'`).Scan(&invID); err != nil {
		t.Fatal(err)
	}
	revoke := "/members/invitations/" + invID + "/revoke"
	if p := admin.get("/members"); p.status != 200 || strings.Contains(p.body, revoke) {
		t.Fatalf("admin's members page offers to revoke an owner's invitation (%d)", p.status)
	}
	if p := admin.post(revoke); p.status != http.StatusForbidden {
		t.Fatalf("admin revokes an owner invitation: %d", p.status)
	}
	if p := e.browser().get(ownerLink[1]); p.status != 200 {
		t.Fatalf("owner invitation after the admin's refused revoke: %d", p.status)
	}
	if p := owner.get("/members"); !strings.Contains(p.body, revoke) {
		t.Fatal("owner's members page has no Revoke for the owner invitation")
	}
	if p := owner.post(revoke); p.status != http.StatusSeeOther {
		t.Fatalf("owner revokes an owner invitation: %d %s", p.status, p.body)
	}
	if p := e.browser().get(ownerLink[1]); p.status != http.StatusGone {
		t.Fatalf("revoked invitation: %d, want 410", p.status)
	}
}

// Admins and owners change roles and remove members; only owners touch
// owners; an organisation never loses its last owner; a change applies to
// the member's very next request; each one is audited.
func TestMemberRolesAndRemoval(t *testing.T) {
	e := newEnv(t)
	owner := e.signup("owner@example.com", "Team Org")
	org := e.orgOf(owner)
	admin := e.member(org, "admin@example.com", accounts.RoleAdmin)
	dev := e.member(org, "dev@example.com", accounts.RoleDeveloper)
	id := func(email string) string {
		var id string
		if err := e.pool.QueryRow(context.Background(), `SELECT id FROM users WHERE email = $1`, email).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	ownerID, adminID, devID := id("owner@example.com"), id("admin@example.com"), id("dev@example.com")

	if p := dev.get("/webhooks/new"); p.status != 200 {
		t.Fatalf("developer opens a writer page: %d", p.status)
	}
	admin.get("/members")
	// An invitation cannot change a member's role (accepting it would).
	if p := admin.post("/members/invitations", "email", "Owner@example.com", "role", "viewer"); p.status != http.StatusBadRequest ||
		!strings.Contains(p.body, "already a member") {
		t.Fatalf("inviting an existing member: %d", p.status)
	}
	if p := admin.post("/members/"+devID+"/role", "role", "viewer"); p.status != http.StatusSeeOther {
		t.Fatalf("admin makes the developer a viewer: %d %s", p.status, p.body)
	}
	if p := dev.get("/webhooks/new"); p.status != http.StatusForbidden {
		t.Fatalf("demoted to viewer, the next request is still a writer's: %d", p.status)
	}
	if p := admin.post("/members/"+devID+"/role", "role", "owner"); p.status != http.StatusForbidden {
		t.Fatalf("admin makes an owner: %d", p.status)
	}
	if p := admin.post("/members/"+devID+"/role", "role", "superuser"); p.status != http.StatusBadRequest {
		t.Fatalf("unknown role: %d", p.status)
	}
	if p := admin.post("/members/"+ownerID+"/role", "role", "viewer"); p.status != http.StatusForbidden {
		t.Fatalf("admin demotes the owner: %d", p.status)
	}
	if p := admin.post("/members/"+ownerID+"/remove", "confirm", "yes"); p.status != http.StatusForbidden {
		t.Fatalf("admin removes the owner: %d", p.status)
	}

	owner.get("/members")
	if p := owner.post("/members/"+ownerID+"/role", "role", "admin"); p.status != http.StatusConflict || !strings.Contains(p.body, "only owner") {
		t.Fatalf("the last owner demotes themselves: %d", p.status)
	}
	if p := owner.post("/members/"+ownerID+"/remove", "confirm", "yes"); p.status != http.StatusConflict {
		t.Fatalf("the last owner leaves: %d", p.status)
	}
	if p := owner.post("/members/"+adminID+"/role", "role", "owner"); p.status != http.StatusSeeOther {
		t.Fatalf("owner makes the admin an owner: %d %s", p.status, p.body)
	}
	// Two owners now: the first may leave, and is signed out (no other
	// organisation to move to).
	if p := owner.get("/members?remove=" + ownerID); !strings.Contains(p.body, "Yes, leave") {
		t.Fatal("no confirmation before leaving")
	}
	if p := owner.post("/members/" + ownerID + "/remove"); p.status != http.StatusBadRequest {
		t.Fatalf("leaving without confirming: %d", p.status)
	}
	if p := owner.post("/members/"+ownerID+"/remove", "confirm", "yes"); p.status != http.StatusSeeOther {
		t.Fatalf("an owner leaves: %d %s", p.status, p.body)
	}
	if p := owner.get("/"); p.status != http.StatusSeeOther || !strings.HasPrefix(p.header.Get("Location"), "/login") {
		t.Fatalf("after leaving their only organisation: %d %s", p.status, p.header.Get("Location"))
	}
	admin.get("/members")
	if p := admin.post("/members/"+devID+"/remove", "confirm", "yes"); p.status != http.StatusSeeOther {
		t.Fatalf("the new owner removes a member: %d", p.status)
	}
	if p := dev.get("/keys"); p.status != http.StatusSeeOther {
		t.Fatalf("a removed member still reads the organisation: %d", p.status)
	}
	if p := admin.post("/members/"+devID+"/remove", "confirm", "yes"); p.status != http.StatusNotFound {
		t.Fatalf("removing a non-member: %d", p.status)
	}
	ms, _ := e.accts.ListMembers(context.Background(), org)
	if len(ms) != 1 || ms[0].ID != adminID || ms[0].Role != accounts.RoleOwner {
		t.Fatalf("members afterwards: %+v", ms)
	}
	rows, _ := e.pool.Query(context.Background(), `SELECT action || ' ' || target_id FROM audit_logs
		WHERE organization_id = $1 AND action IN ('membership.updated', 'membership.deleted') ORDER BY created_at, id`, org)
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"membership.updated " + devID, "membership.updated " + adminID, "membership.deleted " + ownerID, "membership.deleted " + devID}
	if !slices.Equal(got, want) {
		t.Fatalf("audit rows:\n got %q\nwant %q", got, want)
	}
}

func TestErrorDocsHaveAnAnchorPerCode(t *testing.T) {
	e := newEnv(t)
	p := e.browser().get("/docs/errors")
	for _, c := range apierror.Codes {
		if !strings.Contains(p.body, `id="`+c.Code+`"`) {
			t.Errorf("no anchor for %s", c.Code)
		}
	}
	if p := e.browser().get("/openapi.json"); p.status != 200 || !json.Valid([]byte(p.body)) {
		t.Fatalf("/openapi.json: %d", p.status)
	}
}

func TestAuditExport(t *testing.T) {
	e := newEnv(t)
	b := e.signup("audit@example.com", "Audited, Inc")
	b.post("/keys", "kind", "secret", "name", "=HYPERLINK(\"x\")", "expires_in", "")
	p := b.get("/audit/export?format=csv&action=api_key.*")
	if p.status != 200 || !strings.HasPrefix(p.header.Get("Content-Type"), "text/csv") || !strings.Contains(p.header.Get("Content-Disposition"), "attachment") {
		t.Fatalf("csv: %d %v", p.status, p.header)
	}
	lines := strings.Split(strings.TrimSpace(p.body), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "api_key.created") {
		t.Fatalf("csv lines: %q", lines)
	}
	p = b.get("/audit/export?format=json")
	var out struct {
		Data []audit.Entry `json:"data"`
	}
	if err := json.Unmarshal([]byte(p.body), &out); err != nil || len(out.Data) < 2 {
		t.Fatalf("json: %v %d", err, len(out.Data))
	}
	if p := b.get("/audit?action=api_key.*"); !strings.Contains(p.body, "api_key.created") || strings.Contains(p.body, "organization.created") {
		t.Fatal("audit filter")
	}
}

// TestAuditPageShowsOneEnvironment: each environment's audit page is full
// of its own entries and the organisation-wide ones, even when the newest
// entries of the organisation all belong to the other environment.
func TestAuditPageShowsOneEnvironment(t *testing.T) {
	e := newEnv(t)
	b := e.signup("envs@example.com", "Two Environments")
	org := e.orgOf(b)
	ctx := context.Background()
	live, sandbox := true, false
	record := func(target string, livemode *bool, at time.Time) {
		en := audit.Entry{OrganizationID: org, Livemode: livemode, Actor: audit.Actor{Type: audit.ActorCLI, ID: "t"},
			Action: "api_key.created", TargetType: "api_key", TargetID: target, CreatedAt: at}
		if err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error { return audit.Record(ctx, tx, en) }); err != nil {
			t.Fatal(err)
		}
	}
	// Three sandbox entries, then more live ones than a page holds.
	now := time.Now()
	for i := range 3 {
		record(fmt.Sprintf("key_sandbox%d", i), &sandbox, now.Add(time.Duration(i)*time.Second))
	}
	for i := range 60 {
		record(fmt.Sprintf("key_live%02d", i), &live, now.Add(time.Minute+time.Duration(i)*time.Second))
	}
	rows := func(p response, kind string) int { return strings.Count(p.body, `<code class="small">key_`+kind) }

	p := b.get("/audit")
	if got := rows(p, "sandbox"); p.status != 200 || got != 3 || rows(p, "live") != 0 {
		t.Fatalf("sandbox page: %d, %d sandbox and %d live entries; want 3 and 0", p.status, got, rows(p, "live"))
	}
	if !strings.Contains(p.body, "organization.created") {
		t.Fatal("sandbox page lacks the organisation-wide entries")
	}
	if strings.Contains(p.body, "after=") {
		t.Fatal("sandbox page links to a next page with nothing on it")
	}
	if p := b.get("/audit/export?format=csv"); strings.Count(p.body, "key_sandbox") != 3 || strings.Contains(p.body, "key_live") {
		t.Fatalf("sandbox export:\n%s", p.body)
	}

	b.post("/session/environment", "environment", "live")
	p = b.get("/audit")
	if got := rows(p, "live"); got != 50 || rows(p, "sandbox") != 0 {
		t.Fatalf("live page: %d live and %d sandbox entries; want a full page of 50 live", got, rows(p, "sandbox"))
	}
	next := regexp.MustCompile(`href="(/audit\?after=[^"]+)"`).FindStringSubmatch(p.body)
	if next == nil {
		t.Fatal("live page has no link to the next page")
	}
	p = b.get(html.UnescapeString(next[1]))
	if got := rows(p, "live"); got != 10 || rows(p, "sandbox") != 0 || !strings.Contains(p.body, "organization.created") {
		t.Fatalf("live page 2: %d live and %d sandbox entries; want the last 10 live and the organisation's", got, rows(p, "sandbox"))
	}
}

// fixtures are one object of every kind in an organisation's sandbox.
type fixtures map[string]string

func (e *env) fixtures(b *browser) fixtures {
	e.t.Helper()
	ctx := context.Background()
	org := e.orgOf(b)
	actor := audit.Actor{Type: audit.ActorCLI, ID: "fixtures"}
	t := Tenant{OrganizationID: org}
	k, err := e.keys.Create(ctx, actor, org, apikey.Sandbox, keys.CreateParams{Kind: apikey.Secret})
	if err != nil {
		e.t.Fatal(err)
	}
	we, _, err := e.hooks.CreateEndpoint(ctx, actor, t, EndpointParams{URL: ptr("http://127.0.0.1:9/hook"), EnabledEvents: []string{"*"}})
	if err != nil {
		e.t.Fatal(err)
	}
	whd, err := e.hooks.TestEndpoint(ctx, actor, t, we)
	if err != nil {
		e.t.Fatal(err)
	}
	var evt string
	if err := e.pool.QueryRow(ctx, `SELECT event_id FROM webhook_deliveries WHERE id = $1`, whd).Scan(&evt); err != nil {
		e.t.Fatal(err)
	}
	now := time.Now()
	if _, err := ingest.NewPartitions(e.pool, 24*time.Hour, 1, nil).Ensure(ctx, now); err != nil {
		e.t.Fatal(err)
	}
	req := ids.NewAt(ids.Request, now)
	if _, err := e.pool.Exec(ctx, `INSERT INTO request_logs (request_id, created_at, organization_id, livemode, api_key_id,
		method, path, status, duration_us) VALUES ($1, $2, $3, false, $4, 'POST', '/v1/customers', 200, 1234)`, req, now, org, k.ID); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `UPDATE events SET request_id = $1 WHERE id = $2`, req, evt); err != nil {
		e.t.Fatal(err)
	}
	b.get("/members")
	p := b.post("/members/invitations", "email", "pending@example.com", "role", "viewer")
	if p.status != 200 {
		e.t.Fatalf("fixture invitation: %d", p.status)
	}
	var inv string
	if err := e.pool.QueryRow(ctx, `SELECT id FROM invitations WHERE organization_id = $1`, org).Scan(&inv); err != nil {
		e.t.Fatal(err)
	}
	dev, err := e.accts.AddMember(ctx, actor, accounts.AddMemberParams{OrganizationID: org, Email: "fixture-dev@example.com",
		Password: "correct horse battery", Role: accounts.RoleDeveloper})
	if err != nil {
		e.t.Fatal(err)
	}
	return fixtures{"api_key": k.ID, "webhook_endpoint": we, "webhook_delivery": whd, "event": evt, "request_log": req,
		"invitation": inv, "member": dev.ID}
}

func ptr[T any](v T) *T { return &v }

// formFor is a valid form for each state-changing route, so that a refusal
// can only come from authorisation.
var formFor = map[string][]string{
	"/signup":                          {"email", "x@example.com", "password", "correct horse battery", "organization", "X"},
	"/login":                           {"email", "x@example.com", "password", "correct horse battery"},
	"/session/environment":             {"environment", "live"},
	"/keys":                            {"kind", "secret", "expires_in", ""},
	"/keys/{id}/roll":                  {"expires_in", "1h"},
	"/keys/{id}/revoke":                {"confirm", "yes"},
	"/webhooks":                        {"url", "http://127.0.0.1:9/other", "events", "*"},
	"/webhooks/{id}":                   {"url", "http://127.0.0.1:9/changed", "events", "*"},
	"/webhooks/{id}/delete":            {"confirm", "yes"},
	"/webhooks/{id}/rotate":            {"expires_in", "0s", "confirm", "yes"},
	"/webhooks/{id}/recover":           {"window", "24h"},
	"/members/invitations":             {"email", "y@example.com", "role", "viewer"},
	"/members/invitations/{id}/revoke": {},
	"/members/{id}/role":               {"role", "viewer"},
	"/members/{id}/remove":             {"confirm", "yes"},
}

func routePath(rt Route, fx fixtures) string {
	p := strings.Replace(rt.Pattern, "{$}", "", 1)
	if rt.Object != "" {
		p = strings.Replace(p, "{id}", fx[rt.Object], 1)
	}
	return p
}

// TestAuthorization enumerates every route of the dashboard: a member of
// another organisation gets 404 for this one's objects, a viewer gets 403 on
// every state-changing action, and every POST without a CSRF token is
// refused.
func TestAuthorization(t *testing.T) {
	e := newEnv(t)
	ownerA := e.signup("a@example.com", "Org A")
	fxA := e.fixtures(ownerA)
	orgA := e.orgOf(ownerA)
	viewerA := e.member(orgA, "viewer@example.com", accounts.RoleViewer)
	ownerB := e.signup("b@example.com", "Org B")

	covered := map[string]bool{}
	for _, rt := range e.d.Routes() {
		name := rt.Method + " " + rt.Pattern
		if rt.Object != "" && fxA[rt.Object] == "" {
			t.Errorf("%s: no fixture for object %q", name, rt.Object)
			continue
		}
		p := routePath(rt, fxA)
		switch {
		case rt.Pattern == "/invitations/{token}":
			// Addressed by an unguessable token, not an id: a wrong
			// token is a 404 whoever asks.
			if r := ownerB.get("/invitations/" + strings.Repeat("x", 43)); rt.Method == "GET" && r.status != 404 {
				t.Errorf("%s with a bad token: %d", name, r.status)
			}
			covered[name] = true
			continue
		}

		if rt.Method == "POST" {
			// No CSRF token: refused for everyone, before anything happens.
			for who, b := range map[string]*browser{"owner": ownerA, "viewer": viewerA} {
				if r := b.post(p, append([]string{csrfField, ""}, formFor[rt.Pattern]...)...); r.status != http.StatusForbidden {
					t.Errorf("%s without CSRF token as %s: %d", name, who, r.status)
				}
				if r := b.post(p, append([]string{csrfField, "forged"}, formFor[rt.Pattern]...)...); r.status != http.StatusForbidden {
					t.Errorf("%s with a forged CSRF token as %s: %d", name, who, r.status)
				}
			}
			// A cross-site form post is refused even with a token.
			req, _ := http.NewRequest("POST", e.srv.URL+p, strings.NewReader("csrf_token="+ownerA.csrf))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Sec-Fetch-Site", "cross-site")
			if r := ownerA.do(req); r.status != http.StatusForbidden {
				t.Errorf("%s cross-site: %d", name, r.status)
			}
		}

		if rt.Method == "POST" && (rt.Access == Writer || rt.Access == Admin) {
			viewerA.get("/")
			if r := viewerA.post(p, formFor[rt.Pattern]...); r.status != http.StatusForbidden {
				t.Errorf("%s as viewer: %d, want 403", name, r.status)
			}
		}

		if rt.Object != "" {
			ownerB.get("/")
			var r response
			if rt.Method == "GET" {
				r = ownerB.get(p)
			} else {
				r = ownerB.post(p, formFor[rt.Pattern]...)
			}
			if r.status != http.StatusNotFound {
				t.Errorf("%s for org A's %s as org B's owner: %d, want 404", name, rt.Object, r.status)
			}
			// The same id in A's other environment is not found either.
			if rt.Method == "GET" && rt.Object != "invitation" {
				ownerA.post("/session/environment", "environment", "live")
				if r := ownerA.get(p); r.status != http.StatusNotFound {
					t.Errorf("%s for a sandbox %s in live mode: %d, want 404", name, rt.Object, r.status)
				}
				ownerA.post("/session/environment", "environment", "sandbox")
			}
		}

		if rt.Method == "GET" {
			// Every page renders for the owner and for a viewer.
			for who, b := range map[string]*browser{"owner": ownerA, "viewer": viewerA} {
				r := b.get(p)
				want := 200
				if rt.Access == Writer && who == "viewer" {
					want = 403
				}
				if rt.Pattern == "/signup" || rt.Pattern == "/login" {
					want = http.StatusSeeOther // already signed in
				}
				if rt.Pattern == "/audit/export" {
					r = b.get(p + "?format=csv")
				}
				if r.status != want {
					t.Errorf("%s as %s: %d, want %d", name, who, r.status, want)
				}
			}
			// Signed out, only public pages answer.
			r := e.browser().get(p)
			if rt.Access == Public && r.status != 200 {
				t.Errorf("%s signed out: %d", name, r.status)
			}
			if rt.Access != Public && (r.status != http.StatusSeeOther || !strings.HasPrefix(r.header.Get("Location"), "/login")) {
				t.Errorf("%s signed out: %d %s, want a redirect to /login", name, r.status, r.header.Get("Location"))
			}
		}
		covered[name] = true
	}
	if len(covered) != len(e.d.Routes()) {
		t.Errorf("covered %d of %d routes", len(covered), len(e.d.Routes()))
	}

	// With a token, the owner's changes go through (the refusals above
	// were not a broken form).
	ownerA.get("/webhooks/" + fxA["webhook_endpoint"])
	if r := ownerA.post("/webhooks/" + fxA["webhook_endpoint"] + "/disable"); r.status != http.StatusSeeOther {
		t.Fatalf("owner disables: %d %s", r.status, r.body)
	}
	if r := ownerA.post("/deliveries/" + fxA["webhook_delivery"] + "/retry"); r.status != http.StatusSeeOther {
		t.Fatalf("owner retries: %d %s", r.status, r.body)
	}
}

func TestWebhookPagesAndTrace(t *testing.T) {
	e := newEnv(t)
	b := e.signup("hooks@example.com", "Hooks")
	fx := e.fixtures(b)
	if p := b.get("/logs/" + fx["request_log"]); !strings.Contains(p.body, fx["webhook_delivery"]) || !strings.Contains(p.body, "webhook_endpoint.test") {
		t.Fatalf("trace lacks the event or delivery: %d", p.status)
	}
	if p := b.get("/logs?status=2xx&method=POST&path=/v1/cus&key=" + fx["api_key"]); !strings.Contains(p.body, fx["request_log"]) {
		t.Fatal("filtered logs lack the request")
	}
	if p := b.get("/logs?status=5xx"); strings.Contains(p.body, fx["request_log"]) {
		t.Fatal("5xx filter shows a 200")
	}
	if p := b.get("/logs?request_id=nonsense"); !strings.Contains(p.body, "Request id must look like") {
		t.Fatal("bad request id not explained")
	}
	b.get("/webhooks/new")
	p := b.post("/webhooks", "url", "http://10.0.0.1/hook", "events", "*")
	if p.status != http.StatusBadRequest || !strings.Contains(p.body, "publicly routable") {
		t.Fatalf("private URL: %d", p.status)
	}
	p = b.post("/webhooks", "url", "http://127.0.0.1:9/new", "events", "customer.created", "other_events", "invoice.*")
	// html/template writes a base64 '+' as &#43;: unescape before matching, or
	// a secret starting with '+' (1 in 64) would not be found.
	if p.status != 200 || !regexp.MustCompile(`whsec_[A-Za-z0-9+/=]+`).MatchString(html.UnescapeString(p.body)) {
		t.Fatalf("create endpoint: %d", p.status)
	}
	we := regexp.MustCompile(`we_[0-9A-Za-z]{22}`).FindString(p.body)
	if p := b.post("/webhooks/" + we + "/reveal"); p.status != 200 || !strings.Contains(p.body, "whsec_") {
		t.Fatalf("reveal: %d", p.status)
	}
	pg, _ := audit.NewLog(e.pool).List(context.Background(), e.orgOf(b), audit.Filter{Action: "webhook_endpoint.secret_revealed"})
	if len(pg.Data) != 1 || pg.Data[0].Actor.Type != audit.ActorUser {
		t.Fatalf("reveal not audited: %+v", pg.Data)
	}
	if p := b.post("/webhooks/"+we+"/rotate", "expires_in", "0s"); p.status != http.StatusSeeOther ||
		p.header.Get("Location") != "/webhooks/"+we+"?confirm=rotate-now" {
		t.Fatalf("rotate now without confirmation: %d to %q", p.status, p.header.Get("Location"))
	}
	if p := b.get("/webhooks/" + we + "?confirm=rotate-now"); !strings.Contains(p.body, "Yes, rotate and stop the old secret now") {
		t.Fatal("no confirmation before the old secret stops at once")
	}
	if p := b.post("/webhooks/"+we+"/rotate", "expires_in", "24h"); p.status != 200 || !strings.Contains(p.body, "New signing secret") {
		t.Fatalf("rotate: %d", p.status)
	}
	if p := b.post("/webhooks/" + we + "/reveal"); strings.Count(p.body, `class="secret">whsec_`) != 2 {
		t.Fatal("after a rotation with grace both secrets should be listed")
	}
	if p := b.post("/webhooks/" + we + "/test"); p.status != http.StatusSeeOther || !strings.HasPrefix(p.header.Get("Location"), "/deliveries/whd_") {
		t.Fatalf("test: %d %s", p.status, p.header.Get("Location"))
	}
	if p := b.get("/deliveries?status=pending&endpoint=" + we); strings.Count(p.body, "/deliveries/whd_") != 1 {
		t.Fatal("delivery filter")
	}
	if p := b.post("/webhooks/"+we+"/recover", "window", "24h"); p.status != http.StatusSeeOther {
		t.Fatalf("recover: %d", p.status)
	}
	if p := b.post("/webhooks/"+we, "url", "http://127.0.0.1:9/edited", "events", "*", "description", "edited"); p.status != http.StatusSeeOther {
		t.Fatalf("edit: %d %s", p.status, p.body)
	}
	if p := b.get("/webhooks/" + we); !strings.Contains(p.body, "/edited") {
		t.Fatal("edit not shown")
	}
	if p := b.get("/events?type=webhook_endpoint.*"); strings.Count(p.body, `href="/events/evt_`) != 2 {
		t.Fatal("events list")
	}
	if p := b.get("/events/" + fx["event"]); !strings.Contains(p.body, `&#34;object&#34;: &#34;event&#34;`) {
		t.Fatalf("event payload missing: %d", p.status)
	}
	if p := b.post("/webhooks/"+we+"/delete", "confirm", "yes"); p.status != http.StatusSeeOther {
		t.Fatalf("delete: %d", p.status)
	}
	if p := b.get("/webhooks/" + we); p.status != 404 {
		t.Fatalf("deleted endpoint: %d", p.status)
	}
	if p := b.get("/usage"); p.status != 200 || !strings.Contains(p.body, "<svg class=\"chart\"") {
		t.Fatalf("usage: %d", p.status)
	}
}
