package webhooks

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/ssrf"
)

// splitHorizon is the platform's own resolver: it knows internal names
// (service discovery, split-horizon DNS) that no public resolver answers.
type splitHorizon struct{}

func (splitHorizon) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if host == "billing-db.internal" {
		return []netip.Addr{netip.MustParseAddr("10.20.30.40")}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// A tenant must not be able to use endpoint creation as an oracle of the
// platform's internal DNS: the refusal of a name that resolves to a
// private address names the kind of address, not the address (as the
// resolver's own address is kept out of these errors).
func TestRefusalKeepsTheResolvedAddressOut(t *testing.T) {
	e := newEnvWithPolicy(t, ssrf.Policy{Resolver: splitHorizon{}})
	r := e.post(orgA, "/v1/webhook-endpoints", `{"url":"https://billing-db.internal/hook","enabled_events":["*"]}`)
	msg := r.assertError(t, wantError{status: http.StatusBadRequest, code: "url_invalid", param: "url"})
	if strings.Contains(msg, "10.20.30.40") || !strings.Contains(msg, "RFC 1918") {
		t.Fatalf("the refusal tells the tenant what the platform's internal DNS answers: %q", msg)
	}
}
