package dashboard

import (
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/apiversion"
)

// A key form refused for any reason comes back with everything typed in
// it, the IP allowlist included: retyping a list of networks is where
// mistakes creep in, and an empty allowlist silently allows every address.
func TestKeyFormKeepsTheAllowlistOnError(t *testing.T) {
	e := newEnv(t)
	b := e.signup("keyform@example.com", "KeyForm")
	for _, tc := range []struct {
		name string
		form []string
	}{
		{"restricted key without scopes", []string{"kind", "restricted", "expires_in", ""}},
		{"unknown expiry", []string{"kind", "secret", "expires_in", "1m"}},
		{"name too long", []string{"kind", "secret", "expires_in", "", "name", strings.Repeat("n", 500)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b.get("/keys")
			p := b.post("/keys", append(tc.form, "ip_allowlist", "203.0.113.0/24, 198.51.100.0/24")...)
			if p.status != http.StatusBadRequest {
				t.Fatalf("status %d, want 400", p.status)
			}
			if !strings.Contains(p.body, `name="ip_allowlist" value="203.0.113.0/24, 198.51.100.0/24"`) {
				t.Fatal("the re-shown form lost the IP allowlist")
			}
		})
	}
}

// A refused invitation comes back with the role that was chosen: the form
// used to fall back to developer, so fixing a typo in the email and
// submitting again invited the person with another role than intended.
func TestInvitationFormKeepsTheRoleOnError(t *testing.T) {
	e := newEnv(t)
	b := e.signup("inviteform@example.com", "InviteForm")
	selected := func(body string) string {
		m := regexp.MustCompile(`<option value="([a-z]+)" selected>`).FindAllStringSubmatch(
			body[strings.Index(body, `id="inv-role"`):], -1)
		if len(m) == 0 {
			return ""
		}
		return m[0][1]
	}
	if got := selected(b.get("/members").body); got != "developer" {
		t.Fatalf("a fresh form selects %q, want developer", got)
	}
	for _, tc := range []struct {
		name, email, role string
		status            int
		want              string
	}{
		{"bad email keeps viewer", "not an email", "viewer", http.StatusBadRequest, "viewer"},
		{"bad email keeps admin", "nobody", "admin", http.StatusBadRequest, "admin"},
		{"unknown role falls back to developer", "x@example.com", "root", http.StatusBadRequest, "developer"},
		{"after an invitation, developer again", "new@example.com", "viewer", http.StatusOK, "developer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b.get("/members")
			p := b.post("/members/invitations", "email", tc.email, "role", tc.role)
			if p.status != tc.status {
				t.Fatalf("status %d, want %d", p.status, tc.status)
			}
			if got := selected(p.body); got != tc.want {
				t.Fatalf("the form selects %q, want %q", got, tc.want)
			}
		})
	}
}

// A refused new webhook endpoint comes back with the payload API version
// that was chosen: the select fell back to "the organisation's version",
// so fixing the URL and submitting again created an endpoint that receives
// payloads in another shape, and the version cannot be changed afterwards.
func TestEndpointFormKeepsTheAPIVersionOnError(t *testing.T) {
	e := newEnv(t)
	b := e.signup("endpointform@example.com", "EndpointForm")
	b.get("/webhooks/new")
	version := apiversion.Supported[0]
	p := b.post("/webhooks", "url", "http://10.0.0.1/hook", "events", "*", "api_version", version)
	if p.status != http.StatusBadRequest {
		t.Fatalf("status %d, want 400", p.status)
	}
	if !strings.Contains(p.body, `<option value="`+version+`" selected>`) {
		t.Fatalf("the re-shown form lost the API version %s", version)
	}
}

// The logs page's method filter keeps the current method selected, so that
// submitting the form again (another status, the next page of a search)
// keeps filtering by it: opening /logs?method=HEAD showed "Any", and the
// next submission dropped the filter.
func TestLogsMethodFilterKeepsTheMethod(t *testing.T) {
	e := newEnv(t)
	b := e.signup("logsmethod@example.com", "LogsMethod")
	selected := func(body string) []string {
		sel := body[strings.Index(body, `id="f-method"`):]
		sel = sel[:strings.Index(sel, "</select>")]
		var out []string
		for _, m := range regexp.MustCompile(`<option( value="")?( selected)?>([^<]*)</option>`).FindAllStringSubmatch(sel, -1) {
			if m[2] != "" {
				out = append(out, m[3])
			}
		}
		if out == nil {
			return []string{"Any"} // the first option, as the browser shows it
		}
		return out
	}
	for _, tc := range []struct {
		name, query string
		want        []string
	}{
		{"any", "", []string{"Any"}},
		{"GET", "GET", []string{"GET"}},
		{"HEAD", "HEAD", []string{"HEAD"}},
		{"OPTIONS, lowercase", "options", []string{"OPTIONS"}},
		{"another valid method", "PROPFIND", []string{"PROPFIND"}},
		{"not a method", "get%2F1", []string{"Any"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := b.get("/logs?method=" + tc.query)
			if p.status != http.StatusOK {
				t.Fatalf("status %d", p.status)
			}
			if got := selected(p.body); !slices.Equal(got, tc.want) {
				t.Fatalf("the method select has %q selected, want %q", got, tc.want)
			}
		})
	}
}
