package dashboard

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/controlplane/audit"
)

// Signing out once the session has ended (it expired while the page was
// open, or another tab signed out) takes the user to the sign-in page and
// clears the cookie, rather than refusing with "Your session has ended".
// A cross-site post is still refused.
func TestLogoutAfterTheSessionEnded(t *testing.T) {
	tests := []struct {
		name       string
		end        func(b *browser, clock *atomic.Int64)
		crossSite  bool
		wantStatus int
	}{
		{name: "expired", end: func(_ *browser, clock *atomic.Int64) {
			clock.Add(int64(13 * time.Hour))
		}, wantStatus: http.StatusSeeOther},
		{name: "signed out in another tab", end: func(b *browser, _ *atomic.Int64) {
			b.post("/logout") // the tabs share the cookie
		}, wantStatus: http.StatusSeeOther},
		{name: "expired, cross-site", end: func(_ *browser, clock *atomic.Int64) {
			clock.Add(int64(13 * time.Hour))
		}, crossSite: true, wantStatus: http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			var clock atomic.Int64 // offset from the real time
			d, err := New(Config{DB: e.pool, Accounts: e.accts, Keys: e.keys, Audit: audit.NewLog(e.pool), Webhooks: e.hooks,
				Now: func() time.Time { return time.Now().Add(time.Duration(clock.Load())) }})
			if err != nil {
				t.Fatal(err)
			}
			e.d, e.srv = d, httptest.NewServer(d)
			t.Cleanup(e.srv.Close)

			b := e.signup("bye@example.com", "Bye")
			b.get("/keys")
			tt.end(b, &clock)

			req, _ := http.NewRequest("POST", e.srv.URL+"/logout", strings.NewReader(url.Values{csrfField: {b.csrf}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if tt.crossSite {
				req.Header.Set("Origin", "https://evil.example")
			} else {
				req.Header.Set("Origin", e.srv.URL)
			}
			p := b.do(req)
			if p.status != tt.wantStatus {
				t.Fatalf("sign out: %d, want %d", p.status, tt.wantStatus)
			}
			if tt.wantStatus != http.StatusSeeOther {
				return
			}
			if loc := p.header.Get("Location"); loc != "/login" {
				t.Errorf("sign out redirects to %q, want /login", loc)
			}
			u, _ := url.Parse(e.srv.URL)
			for _, c := range b.c.Jar.Cookies(u) {
				if c.Name == sessionCookie {
					t.Errorf("session cookie kept after signing out")
				}
			}
		})
	}
}
