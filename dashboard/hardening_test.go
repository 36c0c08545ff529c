package dashboard

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/gatehouse/gatehouse/controlplane/accounts"
	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/controlplane/server"
	"github.com/gatehouse/gatehouse/internal/config"
)

// browserURL is what a browser makes of a Location value: the WHATWG URL
// parser removes every ASCII tab and newline, and reads "\" as "/" in
// http(s) URLs.
func browserURL(loc string) string {
	loc = strings.NewReplacer("\t", "", "\n", "", "\r", "").Replace(loc)
	return strings.ReplaceAll(loc, `\`, "/")
}

// raw sends one request with the browser's cookies and neither follows nor
// parses the answer (Go's client refuses a Location with a control
// character; browsers do not).
func (b *browser) raw(method, path, form string, header ...string) *http.Response {
	b.e.t.Helper()
	req, _ := http.NewRequest(method, b.e.srv.URL+path, strings.NewReader(form))
	if form != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	for _, c := range b.c.Jar.Cookies(req.URL) {
		req.AddCookie(c)
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		b.e.t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// The redirect after sign-in stays on this site, whatever next says:
// "/<TAB>/evil.example" is "//evil.example" to a browser.
func TestSignInRedirectStaysOnSite(t *testing.T) {
	e := newEnv(t)
	b := e.signup("redir@example.com", "Redirects")
	for _, next := range []string{"/\t/evil.example/phish", "/\t\\evil.example/phish", "/\n/evil.example",
		"/\\evil.example", "//evil.example", "https://evil.example/", "/%09/evil.example"} {
		p := b.raw("GET", "/login?next="+urlQueryEscape(next), "")
		if p.StatusCode != http.StatusSeeOther {
			t.Fatalf("GET /login signed in: %d", p.StatusCode)
		}
		if loc := browserURL(p.Header.Get("Location")); !strings.HasPrefix(loc, "/") || strings.HasPrefix(loc, "//") {
			t.Errorf("GET /login?next=%q sends the browser to %q", next, p.Header.Get("Location"))
		}
	}
	if p := b.raw("GET", "/login?next="+urlQueryEscape("/keys?x=1"), ""); p.Header.Get("Location") != "/keys?x=1" {
		t.Errorf("a path on this site: redirected to %q", p.Header.Get("Location"))
	}
	// Signing in with the hidden next field is held to the same rule.
	c := e.browser()
	c.get("/login")
	form := url.Values{"email": {"redir@example.com"}, "password": {"correct horse battery"},
		"next": {"/\t/evil.example/phish"}, csrfField: {c.csrf}}
	p := c.raw("POST", "/login", form.Encode())
	if p.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in: %d", p.StatusCode)
	}
	if loc := browserURL(p.Header.Get("Location")); strings.HasPrefix(loc, "//") {
		t.Errorf("POST /login with next sends the browser to %q", p.Header.Get("Location"))
	}
}

// The export links of a filtered audit page export what the page shows.
func TestAuditExportLinksKeepTheFilters(t *testing.T) {
	e := newEnv(t)
	b := e.signup("export@example.com", "Exporters")
	if p := b.post("/keys", "kind", "secret", "name", "k", "expires_in", ""); p.status != 200 {
		t.Fatalf("create key: %d", p.status)
	}
	p := b.get("/audit?action=api_key.*")
	for _, format := range []string{"csv", "json"} {
		m := regexp.MustCompile(`href="(/audit/export\?[^"]*)"`).FindAllStringSubmatch(p.body, -1)
		var link string
		for _, x := range m {
			if l := html.UnescapeString(x[1]); strings.Contains(l, "format="+format) {
				link = l
			}
		}
		if link == "" {
			t.Fatalf("no %s export link", format)
		}
		got := b.get(link)
		if got.status != 200 || !strings.Contains(got.body, "api_key.created") {
			t.Fatalf("%s: %d %s", link, got.status, got.body)
		}
		if strings.Contains(got.body, "organization.created") || strings.Contains(got.body, "membership.created") {
			t.Errorf("%s, linked from a page filtered to api_key.*, exports other entries:\n%s", link, got.body)
		}
	}
}

// An invitation link is a bearer credential: whoever holds it joins the
// organisation. The control plane's access log never records it.
func TestInvitationTokenStaysOutOfTheAccessLog(t *testing.T) {
	e := newEnv(t)
	b := e.signup("inviter@example.com", "Inviters")
	p := b.post("/members/invitations", "email", "newbie@example.com", "role", "admin")
	m := regexp.MustCompile(`/invitations/([A-Za-z0-9_-]{43})`).FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no invitation link: %d", p.status)
	}
	token := m[1]

	core, logs := observer.New(zapcore.InfoLevel)
	srv := httptest.NewServer(server.New(server.Config{Logger: zap.New(core), Dashboard: e.d,
		IdentitySecret: []byte("0123456789abcdef0123456789abcdef")}).Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/invitations/" + token)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("invitation page: %d", resp.StatusCode)
	}
	if logs.Len() == 0 {
		t.Fatal("no access log line: the test would show nothing")
	}
	for _, entry := range logs.All() {
		for k, v := range entry.ContextMap() {
			if s, ok := v.(string); ok && strings.Contains(s, token) {
				t.Errorf("log line %q, field %s = %q, holds the invitation token", entry.Message, k, s)
			}
		}
	}
}

// The control plane is reached directly unless TRUSTED_PROXIES says
// otherwise, so X-Forwarded-For is the client's own writing: a guesser
// sending a new one with every attempt is still throttled.
func TestSignInThrottleIgnoresForgedForwardedFor(t *testing.T) {
	e := newEnv(t)
	e.signup("victim@example.com", "Victims")
	b := e.browser()
	b.get("/login")
	try := func(i int, password string) int {
		form := url.Values{"email": {"victim@example.com"}, "password": {password}, csrfField: {b.csrf}}
		return b.raw("POST", "/login", form.Encode(), "X-Forwarded-For", "198.51.100."+strconv.Itoa(i)).StatusCode
	}
	for i := 1; i <= loginFailuresPerKey; i++ {
		if got := try(i, "wrong guess "+strconv.Itoa(i)); got != http.StatusUnauthorized {
			t.Fatalf("wrong password %d: %d", i, got)
		}
	}
	if got := try(100, "wrong guess again"); got != http.StatusTooManyRequests {
		t.Errorf("after %d failures from one connection address, each claiming another X-Forwarded-For: %d, want 429",
			loginFailuresPerKey, got)
	}
	if got := try(101, "correct horse battery"); got == http.StatusSeeOther {
		t.Error("the right password signs in at once after the failures")
	}
}

// A host is given a whole IPv6 /64: the sign-in throttle counts its
// addresses as one, or a guesser taking a new address every few tries was
// never slowed (60 wrong passwords in a row, then the right one signed in).
func TestSignInThrottleCountsAnIPv6PrefixAsOne(t *testing.T) {
	e := newEnv(t)
	e.signup("victim@example.com", "Victims")
	try := func(addr, password string) int {
		tok := strings.Repeat("A", 43)
		form := url.Values{"email": {"victim@example.com"}, "password": {password}, csrfField: {tok}}
		req := httptest.NewRequest("POST", "/login", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(&http.Cookie{Name: preSessionCookie, Value: tok})
		req.RemoteAddr = addr
		w := httptest.NewRecorder()
		e.d.ServeHTTP(w, req)
		return w.Code
	}
	for i := 1; i <= loginFailuresPerKey; i++ {
		if got := try(fmt.Sprintf("[2001:db8:1:2::%x]:40000", i), "wrong guess"); got != http.StatusUnauthorized {
			t.Fatalf("wrong password %d: %d", i, got)
		}
	}
	if got := try("[2001:db8:1:2::ffff]:40000", "correct horse battery"); got != http.StatusTooManyRequests {
		t.Errorf("after %d failures from one /64, each from another address, the right password: %d, want 429", loginFailuresPerKey, got)
	}
	if got := try("[2001:db8:1:3::1]:40000", "correct horse battery"); got != http.StatusSeeOther {
		t.Errorf("from another /64: %d, want 303 (signed in)", got)
	}
}

// An email no account can have is refused without touching the throttle:
// one past what its index holds (about 2.7 kB) was a 500.
func TestSignInWithAnImpossibleEmail(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.get("/login")
	noise := make([]byte, 3000) // incompressible: Postgres would shrink a repeated one below the index's limit
	_, _ = rand.Read(noise)
	email := base64.RawURLEncoding.EncodeToString(noise) + "@example.com"
	if p := b.post("/login", "email", email, "password", "whatever password"); p.status != http.StatusUnauthorized {
		t.Fatalf("sign-in with a 4 kB email: %d, want 401", p.status)
	}
}

// Behind a trusted proxy, the client is the right-most address in
// X-Forwarded-For that is not a trusted proxy.
func TestClientIPBehindTrustedProxies(t *testing.T) {
	d := &Dashboard{cfg: Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("::ffff:198.51.100.0/120")}}}
	tests := []struct{ remote, xff, want string }{
		{"192.0.2.1:5000", "", "192.0.2.1"},
		{"192.0.2.1:5000", "203.0.113.9", "192.0.2.1"}, // not a trusted peer: its header is ignored
		{"10.1.2.3:5000", "", "10.1.2.3"},
		{"10.1.2.3:5000", "203.0.113.9", "203.0.113.9"},
		{"10.1.2.3:5000", "6.6.6.6, 203.0.113.9, 10.9.9.9", "203.0.113.9"}, // the client wrote 6.6.6.6
		{"10.1.2.3:5000", "203.0.113.9, garbage", "10.1.2.3"},
		{"[::ffff:10.1.2.3]:5000", "203.0.113.9", "203.0.113.9"},
		// Some proxies write a port, or brackets.
		{"10.1.2.3:5000", "203.0.113.9:51234", "203.0.113.9"},
		{"10.1.2.3:5000", "[2001:db8::9]:443", "2001:db8::9"},
		{"10.1.2.3:5000", "[2001:db8::9]", "2001:db8::9"},
		{"10.1.2.3:5000", " 2001:db8::9 ", "2001:db8::9"},
		{"198.51.100.1:5000", "203.0.113.9", "203.0.113.9"}, // a range written 4-in-6
	}
	for _, tt := range tests {
		r := httptest.NewRequest("POST", "/login", nil)
		r.RemoteAddr = tt.remote
		if tt.xff != "" {
			r.Header.Set("X-Forwarded-For", tt.xff)
		}
		if got := d.clientIP(r); got != tt.want {
			t.Errorf("peer %s, X-Forwarded-For %q: %s, want %s", tt.remote, tt.xff, got, tt.want)
		}
	}
}

// A form acts in the organisation and environment it was shown in: the
// sandbox keys page's form, submitted after another tab switched the
// session to live, creates nothing rather than a live key.
func TestFormsActWhereTheyWereShown(t *testing.T) {
	e := newEnv(t)
	tab := e.signup("tabs@example.com", "Tabs")
	if p := tab.get("/keys"); !strings.Contains(p.body, "Create sandbox key") {
		t.Fatal("sandbox keys page")
	}
	shown := tab.csrf
	// Another tab (same cookies) switches to live.
	if p := tab.post("/session/environment", "environment", "live", "back", "/keys"); p.status != http.StatusSeeOther {
		t.Fatalf("switch: %d", p.status)
	}
	p := tab.post("/keys", "kind", "secret", "name", "test key", "expires_in", "", csrfField, shown)
	if strings.Contains(p.body, "sk_live_") || p.status != http.StatusConflict {
		t.Errorf("the sandbox page's form, after a switch to live: %d (a live key: %v)", p.status, strings.Contains(p.body, "sk_live_"))
	}
	// Reloaded, the page's form works in live.
	tab.get("/keys")
	if p := tab.post("/keys", "kind", "secret", "name", "live key", "expires_in", ""); !strings.Contains(p.body, "sk_live_") {
		t.Errorf("the live page's form: %d", p.status)
	}
	// Switching back needs no fresh page: a stale page may always switch.
	if p := tab.post("/session/environment", "environment", "sandbox", "back", "/keys", csrfField, shown); p.status != http.StatusSeeOther {
		t.Errorf("switching from a stale page: %d", p.status)
	}
	// Members belong to the organisation, not an environment: a members
	// page shown in sandbox still invites after a switch to live.
	tab.get("/members")
	members := tab.csrf
	tab.post("/session/environment", "environment", "live", "back", "/members")
	if p := tab.post("/members/invitations", "email", "new@example.com", "role", "developer", csrfField, members); p.status != http.StatusOK {
		t.Errorf("inviting from a members page shown in the other environment: %d", p.status)
	}
}

// While Postgres cannot be reached, a page says so with a 503 and
// Retry-After, not a 500 "Something went wrong" to report to support.
func TestPagesSayWhenTheDatabaseIsUnreachable(t *testing.T) {
	e := newEnv(t)
	b := e.signup("ops@example.com", "Ops")
	if r := b.get("/keys"); r.status != 200 {
		t.Fatalf("keys page: %d", r.status)
	}
	ctx := context.Background()
	var db string
	if err := e.pool.QueryRow(ctx, `SELECT current_database()`).Scan(&db); err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.Connect(ctx, config.String("DATABASE_URL", config.DefaultDatabaseURL))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, `ALTER DATABASE `+db+` WITH ALLOW_CONNECTIONS false`); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = $1 AND pid <> pg_backend_pid()`, db); err != nil {
		t.Fatal(err)
	}
	for range 2 { // a connection the server ended, then a refused one
		r := b.get("/keys")
		if r.status != http.StatusServiceUnavailable || !strings.Contains(r.body, "cannot be reached") || r.header.Get("Retry-After") == "" {
			t.Fatalf("with the database unreachable: %d, Retry-After %q, body %.300q", r.status, r.header.Get("Retry-After"), r.body)
		}
	}
}

// An invitation carries its inviter's authority: once the admin who made it
// is removed, or demoted below what the role needs, the link they kept
// (it is shown to them once) no longer lets anyone join with that role.
func TestInvitationDiesWithItsInvitersAuthority(t *testing.T) {
	e := newEnv(t)
	owner := e.signup("owner@example.com", "Org")
	org := e.orgOf(owner)
	admin := e.member(org, "admin@example.com", accounts.RoleAdmin)
	adminID := ""
	ms, err := e.accts.ListMembers(context.Background(), org)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Email == "admin@example.com" {
			adminID = m.ID
		}
	}
	invite := func(email string) string {
		admin.get("/members")
		p := admin.post("/members/invitations", "email", email, "role", "admin")
		m := regexp.MustCompile(`(/invitations/[A-Za-z0-9_-]{43})<`).FindStringSubmatch(p.body)
		if p.status != 200 || m == nil {
			t.Fatalf("invite %s: %d, no link", email, p.status)
		}
		return m[1]
	}
	demoted, removed := invite("alt1@example.com"), invite("alt2@example.com")
	cli := audit.Actor{Type: audit.ActorCLI, ID: "test"}

	// Demoted to viewer: the invitations made as an admin no longer work.
	if _, err := e.accts.ChangeRole(context.Background(), cli, org, adminID, accounts.RoleViewer); err != nil {
		t.Fatal(err)
	}
	guest := e.browser()
	if p := guest.get(demoted); p.status != http.StatusGone {
		t.Errorf("invitation page after the inviter's demotion: %d, want 410", p.status)
	}
	guest.get("/login") // a form's token, whatever the invitation page showed
	if p := guest.post(demoted, "password", "a fine new password"); p.status != http.StatusGone {
		t.Errorf("accepting after the inviter's demotion: %d, want 410", p.status)
	}

	// Removed: nor do theirs.
	if err := e.accts.RemoveMember(context.Background(), cli, org, adminID); err != nil {
		t.Fatal(err)
	}
	guest = e.browser()
	guest.get("/login")
	if p := guest.post(removed, "password", "a fine new password"); p.status != http.StatusGone {
		t.Errorf("accepting after the inviter's removal: %d, want 410", p.status)
	}
	ms, _ = e.accts.ListMembers(context.Background(), org)
	for _, m := range ms {
		if strings.HasPrefix(m.Email, "alt") {
			t.Errorf("%s joined as %s through a former admin's invitation", m.Email, m.Role)
		}
	}

	// An owner's invitation still works (the check is not a blanket refusal).
	owner.get("/members")
	p := owner.post("/members/invitations", "email", "fine@example.com", "role", "admin")
	link := regexp.MustCompile(`(/invitations/[A-Za-z0-9_-]{43})<`).FindStringSubmatch(p.body)[1]
	guest = e.browser()
	guest.get(link)
	if p := guest.post(link, "password", "a fine new password"); p.status != http.StatusSeeOther {
		t.Fatalf("owner's invitation: %d %s", p.status, p.body)
	}
}

// An {id} in a route's path that is no id of the route's kind (a mangled
// link: %ff, %00) is a 404 on every route, as a well-formed id of another
// organisation is; the members routes passed it to Postgres, which refused
// it, and answered 500.
func TestRoutesRefuseIDsOfAnotherKind(t *testing.T) {
	e := newEnv(t)
	owner := e.signup("owner@example.com", "Org")
	fx := e.fixtures(owner)
	for _, rt := range e.d.Routes() {
		if rt.Object == "" {
			continue
		}
		other := fx["api_key"] // well formed, of another kind
		if rt.Object == "api_key" {
			other = fx["webhook_endpoint"]
		}
		for _, bad := range []string{"%ff", "%00", "x", other} {
			path := strings.Replace(rt.Pattern, "{id}", bad, 1)
			var p response
			if rt.Method == "GET" {
				p = owner.get(path)
			} else {
				owner.get("/")
				p = owner.post(path, formFor[rt.Pattern]...)
			}
			if p.status != http.StatusNotFound {
				t.Errorf("%s %s: %d, want 404", rt.Method, path, p.status)
			}
		}
	}
}

// Someone invited twice (the first link was lost) joins with one link and
// is later removed: the other link must not let them back in. Becoming a
// member spends the organisation's other pending invitations to that
// address, however the person joined.
func TestRemovedMemberCannotRejoinThroughAnotherInvitation(t *testing.T) {
	e := newEnv(t)
	owner := e.signup("owner@example.com", "Org")
	org := e.orgOf(owner)
	invite := func() string {
		owner.get("/members")
		p := owner.post("/members/invitations", "email", "Temp@example.com", "role", "admin")
		m := regexp.MustCompile(`(/invitations/[A-Za-z0-9_-]{43})<`).FindStringSubmatch(p.body)
		if p.status != 200 || m == nil {
			t.Fatalf("invite: %d", p.status)
		}
		return m[1]
	}
	first, second := invite(), invite()
	guest := e.browser()
	guest.get(second)
	if p := guest.post(second, "password", "a fine new password"); p.status != http.StatusSeeOther {
		t.Fatalf("accept: %d", p.status)
	}
	if p := e.browser().get(first); p.status != http.StatusGone {
		t.Errorf("the other invitation after joining: %d, want 410", p.status)
	}
	var id string
	if err := e.pool.QueryRow(context.Background(), `SELECT id FROM users WHERE email = 'Temp@example.com'`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	owner.get("/members")
	if p := owner.post("/members/"+id+"/remove", "confirm", "yes"); p.status != http.StatusSeeOther {
		t.Fatalf("remove: %d %s", p.status, p.body)
	}
	back := e.browser()
	back.get(first)
	back.post(first, "password", "a fine new password")
	ms, err := e.accts.ListMembers(context.Background(), org)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.ID == id {
			t.Fatalf("the removed member is back, as %s, through the older invitation", m.Role)
		}
	}
}
