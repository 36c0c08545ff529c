package dashboard

import (
	"net/http"
	"strings"
	"testing"
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
