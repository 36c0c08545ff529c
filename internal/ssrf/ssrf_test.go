package ssrf_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/ssrf"
)

// staticResolver answers from a table, so the tests need no network and
// can make a name resolve to anything (including a rebinding attacker's
// loopback answer).
type staticResolver map[string][]string

func (r staticResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	as, ok := r[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	out := make([]netip.Addr, len(as))
	for i, a := range as {
		out[i] = netip.MustParseAddr(a)
	}
	return out, nil
}

var names = staticResolver{
	"hooks.example.com":     {"93.184.216.34"},
	"v6.example.com":        {"2606:2800:220:1:248:1893:25c8:1946"},
	"dual.example.com":      {"93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"},
	"rebind.example.com":    {"127.0.0.1"},
	"mixed.example.com":     {"93.184.216.34", "10.0.0.7"},
	"metadata.example.com":  {"169.254.169.254"},
	"mapped.example.com":    {"::ffff:192.168.1.1"},
	"xn--bcher-kva.example": {"93.184.216.34"}, // bücher.example
}

func TestCheckURL(t *testing.T) {
	strict := ssrf.Policy{Resolver: names}
	cases := []struct {
		url  string
		want error // nil = allowed
	}{
		// Acceptable destinations.
		{"https://hooks.example.com/webhooks", nil},
		{"http://hooks.example.com:8080/x?y=1", nil},
		{"https://HOOKS.Example.COM./trailing-dot", nil},
		{"https://v6.example.com/", nil},
		{"https://dual.example.com/", nil},
		{"https://93.184.216.34/", nil},
		{"https://[2606:2800:220:1:248:1893:25c8:1946]/", nil},
		{"https://8.8.8.8:443/", nil},
		{"https://[::ffff:8.8.8.8]/", nil},    // mapped public v4
		{"https://[64:ff9b::808:808]/", nil},  // NAT64 of 8.8.8.8
		{"https://bücher.example/", nil},      // IDNA → xn--bcher-kva.example
		{"https://b%C3%BCcher.example/", nil}, // percent-encoded host

		// Malformed or disallowed URL shapes.
		{"ftp://hooks.example.com/", ssrf.ErrInvalidURL},
		{"file:///etc/passwd", ssrf.ErrInvalidURL},
		{"gopher://hooks.example.com/", ssrf.ErrInvalidURL},
		{"hooks.example.com/path", ssrf.ErrInvalidURL},
		{"https:hooks.example.com", ssrf.ErrInvalidURL},
		{"https://user:pass@hooks.example.com/", ssrf.ErrInvalidURL},
		{"https://user@hooks.example.com/", ssrf.ErrInvalidURL},
		{"https://hooks.example.com:0/", ssrf.ErrInvalidURL},
		{"https://hooks.example.com:65536/", ssrf.ErrInvalidURL},
		{"https://hooks.example.com:/", ssrf.ErrInvalidURL},
		{"https:///nohost", ssrf.ErrInvalidURL},
		{"https://exa mple.com/", ssrf.ErrInvalidURL},
		{"https://a..b/", ssrf.ErrInvalidURL},
		{"https://8.8.8.010/", ssrf.ErrInvalidURL}, // octal spelling of a public address: ambiguous
		{"https://134744072/", ssrf.ErrInvalidURL}, // 8.8.8.8 as one number: ambiguous

		// Loopback in every spelling.
		{"http://127.0.0.1/", ssrf.ErrForbidden},
		{"http://127.0.0.1:8083/metrics", ssrf.ErrForbidden},
		{"http://127.255.255.254/", ssrf.ErrForbidden},
		{"http://2130706433/", ssrf.ErrForbidden},   // decimal
		{"http://0177.0.0.1/", ssrf.ErrForbidden},   // octal
		{"http://0x7f.0.0.1/", ssrf.ErrForbidden},   // hex
		{"http://0x7f000001/", ssrf.ErrForbidden},   // hex, one part
		{"http://017700000001/", ssrf.ErrForbidden}, // octal, one part
		{"http://127.1/", ssrf.ErrForbidden},        // short form
		{"http://127.0.1/", ssrf.ErrForbidden},
		{"http://localhost/", ssrf.ErrForbidden},
		{"http://LOCALHOST./", ssrf.ErrForbidden},
		{"http://foo.localhost/", ssrf.ErrForbidden},
		{"http://ｌｏｃａｌｈｏｓｔ/", ssrf.ErrForbidden},        // fullwidth, IDNA-mapped
		{"http://①②⑦.0.0.1/", ssrf.ErrForbidden},        // enclosed digits, IDNA-mapped
		{"http://127%2E0%2E0%2E1/", ssrf.ErrInvalidURL}, // Go refuses ASCII escapes in hosts
		{"http://[::1]/", ssrf.ErrForbidden},
		{"http://[0:0:0:0:0:0:0:1]/", ssrf.ErrForbidden},
		{"http://[::ffff:127.0.0.1]/", ssrf.ErrForbidden},
		{"http://[::ffff:7f00:1]/", ssrf.ErrForbidden},
		{"http://rebind.example.com/", ssrf.ErrForbidden},

		// Unspecified, "this network".
		{"http://0.0.0.0/", ssrf.ErrForbidden},
		{"http://0/", ssrf.ErrForbidden},
		{"http://[::]/", ssrf.ErrForbidden},
		{"http://0.1.2.3/", ssrf.ErrForbidden},

		// Private, CGNAT, link-local, metadata.
		{"http://10.0.0.1/", ssrf.ErrForbidden},
		{"http://172.16.0.1/", ssrf.ErrForbidden},
		{"http://172.31.255.255/", ssrf.ErrForbidden},
		{"http://192.168.0.1/", ssrf.ErrForbidden},
		{"http://100.64.0.1/", ssrf.ErrForbidden},
		{"http://100.127.255.254/", ssrf.ErrForbidden},
		{"http://169.254.169.254/latest/meta-data/", ssrf.ErrForbidden},
		{"http://metadata.example.com/", ssrf.ErrForbidden},
		{"http://0xa9fea9fe/", ssrf.ErrForbidden}, // 169.254.169.254 in hex
		{"http://[fe80::1]/", ssrf.ErrForbidden},
		{"http://[fe80::1%25eth0]/", ssrf.ErrForbidden},
		{"http://[fd00:ec2::254]/", ssrf.ErrForbidden}, // AWS IMDS over IPv6
		{"http://[fc00::1]/", ssrf.ErrForbidden},
		{"http://mixed.example.com/", ssrf.ErrForbidden}, // any bad answer refuses
		{"http://mapped.example.com/", ssrf.ErrForbidden},

		// Embedded IPv4 in IPv6 forms.
		{"http://[::ffff:10.0.0.1]/", ssrf.ErrForbidden},
		{"http://[::ffff:169.254.169.254]/", ssrf.ErrForbidden},
		{"http://[64:ff9b::7f00:1]/", ssrf.ErrForbidden},                      // NAT64 of 127.0.0.1
		{"http://[64:ff9b::a00:1]/", ssrf.ErrForbidden},                       // NAT64 of 10.0.0.1
		{"http://[64:ff9b:1::808:808]/", ssrf.ErrForbidden},                   // local-use NAT64
		{"http://[::127.0.0.1]/", ssrf.ErrForbidden},                          // IPv4-compatible (deprecated)
		{"http://[2002:7f00:1::]/", ssrf.ErrForbidden},                        // 6to4 of 127.0.0.1
		{"http://[2002:808:808::1]/", ssrf.ErrForbidden},                      // 6to4 refused whole
		{"http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", ssrf.ErrForbidden}, // Teredo

		// Multicast, broadcast, reserved, documentation, benchmarking.
		{"http://224.0.0.1/", ssrf.ErrForbidden},
		{"http://239.255.255.250/", ssrf.ErrForbidden},
		{"http://[ff02::1]/", ssrf.ErrForbidden},
		{"http://255.255.255.255/", ssrf.ErrForbidden},
		{"http://240.0.0.1/", ssrf.ErrForbidden},
		{"http://192.0.2.10/", ssrf.ErrForbidden},
		{"http://198.51.100.10/", ssrf.ErrForbidden},
		{"http://203.0.113.10/", ssrf.ErrForbidden},
		{"http://198.18.0.1/", ssrf.ErrForbidden},
		{"http://198.19.255.255/", ssrf.ErrForbidden},
		{"http://192.0.0.1/", ssrf.ErrForbidden},
		{"http://[2001:db8::1]/", ssrf.ErrForbidden},
		{"http://[3fff::1]/", ssrf.ErrForbidden},
		{"http://[100::1]/", ssrf.ErrForbidden}, // discard-only

		// Names that do not resolve.
		{"https://nxdomain.example.com/", ssrf.ErrResolve},
	}
	for _, tc := range cases {
		t.Run(tc.url, func(t *testing.T) {
			err := ssrf.CheckURL(context.Background(), tc.url, strict)
			if tc.want == nil && err != nil {
				t.Fatalf("CheckURL(%q) = %v, want allowed", tc.url, err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("CheckURL(%q) = %v, want %v", tc.url, err, tc.want)
			}
		})
	}
	if len(cases) < 40 {
		t.Fatalf("only %d cases", len(cases))
	}
}

func TestCheckURLPolicy(t *testing.T) {
	loop, err := ssrf.ParseAllowlist("loopback, 10.1.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		url  string
		p    ssrf.Policy
		want error
	}{
		{"allowlisted loopback", "http://127.0.0.1:9000/", ssrf.Policy{Allow: loop}, nil},
		{"allowlisted localhost name", "http://localhost:9000/", ssrf.Policy{Allow: loop}, nil},
		{"allowlisted mapped loopback", "http://[::ffff:127.0.0.1]/", ssrf.Policy{Allow: loop}, nil},
		{"allowlisted v6 loopback", "http://[::1]/", ssrf.Policy{Allow: loop}, nil},
		{"allowlisted private range", "http://10.1.2.3/", ssrf.Policy{Allow: loop}, nil},
		{"outside the allowlisted range", "http://10.2.0.1/", ssrf.Policy{Allow: loop}, ssrf.ErrForbidden},
		{"metadata stays forbidden", "http://169.254.169.254/", ssrf.Policy{Allow: loop}, ssrf.ErrForbidden},
		{"https required", "http://hooks.example.com/", ssrf.Policy{RequireHTTPS: true, Resolver: names}, ssrf.ErrInvalidURL},
		{"https given", "https://hooks.example.com/", ssrf.Policy{RequireHTTPS: true, Resolver: names}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := ssrf.CheckURL(context.Background(), tc.url, tc.p)
			if tc.want == nil && err != nil {
				t.Fatalf("CheckURL = %v, want allowed", err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("CheckURL = %v, want %v", err, tc.want)
			}
		})
	}
}

// internalResolver fails as the platform's own resolver does: Go's
// DNSError names the DNS server it asked.
type internalResolver struct{}

func (internalResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	return nil, &net.DNSError{Err: "no such host", Name: host, Server: "10.9.8.7:53", IsNotFound: true}
}

// The refusal goes back to the API caller (a 400 url_invalid); it says the
// name does not resolve without naming the platform's internal DNS server.
func TestCheckURLKeepsTheResolverAddressOut(t *testing.T) {
	err := ssrf.CheckURL(context.Background(), "https://missing.example.com/", ssrf.Policy{Resolver: internalResolver{}})
	if !errors.Is(err, ssrf.ErrResolve) || !strings.Contains(err.Error(), "no such host") {
		t.Fatalf("CheckURL = %v, want a resolve error saying no such host", err)
	}
	if strings.Contains(err.Error(), "10.9.8.7") {
		t.Fatalf("CheckURL = %v: names the internal resolver", err)
	}
}

func TestCheckURLHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := ssrf.CheckURL(ctx, "https://hooks.example.com/", ssrf.Policy{Resolver: names})
	if !errors.Is(err, ssrf.ErrResolve) {
		t.Fatalf("cancelled lookup = %v", err)
	}
}

func TestParseAllowlist(t *testing.T) {
	got, err := ssrf.ParseAllowlist(" 127.0.0.0/8,::1  192.168.1.0/24,\t10.0.0.5 ")
	if err != nil {
		t.Fatal(err)
	}
	want := "[127.0.0.0/8 ::1/128 192.168.1.0/24 10.0.0.5/32]"
	if fmt.Sprint(got) != want {
		t.Fatalf("got %v, want %s", got, want)
	}
	if got, _ := ssrf.ParseAllowlist(""); len(got) != 0 {
		t.Fatalf("empty allowlist = %v", got)
	}
	for _, bad := range []string{"10.0.0.0/33", "localhost", "1.2.3"} {
		if _, err := ssrf.ParseAllowlist(bad); err == nil {
			t.Errorf("ParseAllowlist(%q) accepted", bad)
		}
	}
}

// client is a delivery-like client: the guard is in the dialer only.
func client(p ssrf.Policy) *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			Proxy:             nil,
			DialContext:       ssrf.Dialer(p).DialContext,
			DisableKeepAlives: true,
		},
	}
}

// TestDialerRefusesAfterResolution bypasses CheckURL entirely: a host name
// that resolves to loopback (as a rebinding attacker's would) is refused at
// connect time, and the same request passes once loopback is allowlisted.
func TestDialerRefusesAfterResolution(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "reached")
	}))
	defer srv.Close()
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	urls := []string{
		srv.URL,                             // 127.0.0.1 literal
		"http://localhost:" + port + "/",    // name → 127.0.0.1 via the system resolver
		"http://[::ffff:127.0.0.1]:" + port, // mapped form
	}
	for _, u := range urls {
		t.Run(u, func(t *testing.T) {
			resp, err := client(ssrf.Policy{}).Get(u)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("GET %s reached the server", u)
			}
			if !errors.Is(err, ssrf.ErrForbidden) {
				t.Fatalf("GET %s = %v, want ErrForbidden", u, err)
			}
			allow, _ := ssrf.ParseAllowlist("loopback")
			resp, err = client(ssrf.Policy{Allow: allow}).Get(u)
			if err != nil {
				t.Fatalf("allowlisted GET %s: %v", u, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "reached" {
				t.Fatalf("allowlisted GET %s = %q", u, b)
			}
		})
	}
}

func TestDialerRefusesPrivateAndMetadata(t *testing.T) {
	d := ssrf.Dialer(ssrf.Policy{})
	for _, addr := range []string{"10.255.255.1:80", "169.254.169.254:80", "[fe80::1]:80", "0.0.0.0:80", "[::]:80"} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := d.DialContext(ctx, "tcp", addr)
		cancel()
		if err == nil {
			c.Close()
			t.Errorf("dial %s succeeded", addr)
			continue
		}
		if !errors.Is(err, ssrf.ErrForbidden) {
			t.Errorf("dial %s = %v, want ErrForbidden", addr, err)
		}
	}
}

// failingResolver keeps the fuzz target off the network.
type failingResolver struct{}

func (failingResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return nil, errors.New("no resolution in fuzzing")
}

func FuzzCheckURL(f *testing.F) {
	for _, s := range []string{
		"https://hooks.example.com/x", "http://127.0.0.1/", "http://2130706433/", "http://0x7f.1/",
		"http://[::ffff:127.0.0.1]/", "http://[64:ff9b::7f00:1]/", "http://①②⑦.0.0.1/", "http://LOCALHOST./",
		"https://8.8.8.8/", "http://0177.0.0.1:99999/", "http://u:p@1.1.1.1/", "http://[fe80::1%25en0]/",
	} {
		f.Add(s)
	}
	p := ssrf.Policy{Resolver: failingResolver{}}
	f.Fuzz(func(t *testing.T, raw string) {
		err := ssrf.CheckURL(context.Background(), raw, p)
		if err == nil {
			// Whatever passed must be something the HTTP client would dial
			// to an allowed address.
			u, perr := url.Parse(raw)
			if perr != nil {
				t.Fatalf("CheckURL accepted %q that url.Parse refuses: %v", raw, perr)
			}
			h, nerr := ssrf.NormalizeHost(u.Hostname())
			if nerr != nil {
				t.Fatalf("accepted host %q does not normalise: %v", u.Hostname(), nerr)
			}
			if a, aerr := netip.ParseAddr(h); aerr == nil && !p.Allowed(a) {
				t.Fatalf("CheckURL accepted %q whose address %s is forbidden", raw, a)
			}
			return
		}
		if !errors.Is(err, ssrf.ErrInvalidURL) && !errors.Is(err, ssrf.ErrForbidden) && !errors.Is(err, ssrf.ErrResolve) {
			t.Fatalf("CheckURL(%q) returned an unclassified error: %v", raw, err)
		}
	})
}
