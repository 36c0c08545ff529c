package dashboard

import (
	"context"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/controlplane/accounts"
	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/controlplane/keys"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/secretbox"
	"github.com/gatehouse/gatehouse/internal/ssrf"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

// env is a dashboard over a fresh database, served by httptest.
type env struct {
	t     *testing.T
	pool  *pgxpool.Pool
	d     *Dashboard
	srv   *httptest.Server
	accts *accounts.Service
	keys  *keys.Service
	hooks *SQLWebhooks
}

func newEnv(t *testing.T) *env {
	t.Helper()
	pool, _ := testenv.Pool(t)
	box, err := secretbox.New(config.DefaultMasterKey)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, pool: pool, accts: accounts.New(pool, nil), keys: keys.New(pool, nil)}
	e.hooks = &SQLWebhooks{DB: pool, Box: box, URLPolicy: ssrf.Policy{Allow: []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}}}
	e.d, err = New(Config{DB: pool, Accounts: e.accts, Keys: e.keys, Audit: audit.NewLog(pool), Webhooks: e.hooks, Box: box})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(e.d)
	t.Cleanup(e.srv.Close)
	return e
}

// browser is a cookie-keeping client that remembers the CSRF token of the
// last page it loaded, like a person with a browser.
type browser struct {
	e    *env
	c    *http.Client
	csrf string
}

func (e *env) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{e: e, c: &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

var csrfRe = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)

type response struct {
	status int
	header http.Header
	body   string
}

func (b *browser) do(req *http.Request) response {
	b.e.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.e.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	p := response{status: resp.StatusCode, header: resp.Header, body: string(raw)}
	if m := csrfRe.FindStringSubmatch(p.body); m != nil {
		b.csrf = html.UnescapeString(m[1])
	}
	return p
}

func (b *browser) get(path string) response {
	b.e.t.Helper()
	req, _ := http.NewRequest("GET", b.e.srv.URL+path, nil)
	return b.do(req)
}

// createEndpoint creates a webhook endpoint for every event through the
// dashboard's form (extra fields in kv) and returns its id.
func (b *browser) createEndpoint(url string, kv ...string) string {
	b.e.t.Helper()
	b.get("/webhooks/new")
	p := b.post("/webhooks", append([]string{"url", url, "events", "*"}, kv...)...)
	we := regexp.MustCompile(`we_[0-9A-Za-z]{22}`).FindString(p.body)
	if p.status != http.StatusOK || we == "" {
		b.e.t.Fatalf("create endpoint: %d", p.status)
	}
	return we
}

// post submits a form with the remembered CSRF token unless the form sets
// csrf_token itself ("" leaves it out).
func (b *browser) post(path string, kv ...string) response {
	b.e.t.Helper()
	form := url.Values{}
	withToken := true
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i] == csrfField {
			withToken = false
			if kv[i+1] == "" {
				continue
			}
		}
		form.Add(kv[i], kv[i+1])
	}
	if withToken && b.csrf != "" {
		form.Set(csrfField, b.csrf)
	}
	req, _ := http.NewRequest("POST", b.e.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

// signup creates an organisation and its owner through the sign-up form.
func (e *env) signup(email, org string) *browser {
	e.t.Helper()
	b := e.browser()
	b.get("/signup")
	p := b.post("/signup", "email", email, "password", "correct horse battery", "organization", org)
	if p.status != http.StatusSeeOther {
		e.t.Fatalf("signup: %d %s", p.status, p.body)
	}
	b.get("/")
	return b
}

// member adds a user with role to org and signs them in.
func (e *env) member(org, email string, role accounts.Role) *browser {
	e.t.Helper()
	if _, err := e.accts.AddMember(context.Background(), audit.Actor{Type: audit.ActorCLI, ID: "test"},
		accounts.AddMemberParams{OrganizationID: org, Email: email, Password: "correct horse battery", Role: role}); err != nil {
		e.t.Fatal(err)
	}
	b := e.browser()
	b.get("/login")
	if p := b.post("/login", "email", email, "password", "correct horse battery"); p.status != http.StatusSeeOther {
		e.t.Fatalf("login %s: %d %s", email, p.status, p.body)
	}
	b.get("/")
	return b
}

// orgOf is the organisation the browser's session is in.
func (e *env) orgOf(b *browser) string {
	e.t.Helper()
	u, _ := url.Parse(e.srv.URL)
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == sessionCookie {
			var org string
			if err := e.pool.QueryRow(context.Background(), `SELECT organization_id FROM sessions WHERE token_hash = $1`,
				hashToken(c.Value)).Scan(&org); err != nil {
				e.t.Fatal(err)
			}
			return org
		}
	}
	e.t.Fatal("no session cookie")
	return ""
}
