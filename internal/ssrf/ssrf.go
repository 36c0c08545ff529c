// Package ssrf keeps webhook deliveries away from the platform's own network
// (DESIGN §8): only globally routable addresses are reachable unless an
// operator allowlists a range (`make run` allowlists loopback).
//
// There are two guards. CheckURL runs when an endpoint is created or updated
// and gives the user an immediate, explainable refusal. Dialer is the one
// that matters for security: its Control hook sees the address the kernel is
// about to connect to, after DNS resolution, so a hostname that resolved to a
// public address at creation and to 127.0.0.1 later (DNS rebinding) is still
// refused.
package ssrf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Sentinel errors; every error returned by this package wraps one of them.
var (
	// ErrInvalidURL: the URL is malformed, has a scheme other than http(s),
	// userinfo, a bad port, or an ambiguous spelling of an address.
	ErrInvalidURL = errors.New("invalid webhook url")
	// ErrForbidden: the URL's host is, or resolves to, an address that is
	// not globally routable and not allowlisted.
	ErrForbidden = errors.New("webhook url points to a forbidden address")
	// ErrResolve: the host name could not be resolved.
	ErrResolve = errors.New("webhook url host does not resolve")
)

// Resolver resolves host names; *net.Resolver satisfies it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Policy says which destinations are acceptable.
type Policy struct {
	// Allow lists ranges that are reachable even though they are not
	// global, e.g. 127.0.0.0/8 and ::1/128 for a local demo. Empty by default.
	Allow []netip.Prefix
	// RequireHTTPS refuses http:// URLs (production live mode).
	RequireHTTPS bool
	// Resolver resolves host names in CheckURL; nil means net.DefaultResolver.
	Resolver Resolver
}

// CheckURL parses raw as a webhook destination and refuses it unless it is an
// http(s) URL without userinfo whose host, and every address the host
// resolves to, is allowed by p. Hosts are normalised the way Go's HTTP client
// dials them (IDNA mapping, trailing dot, case), and numeric spellings that
// some resolvers accept (2130706433, 0177.0.0.1, 0x7f.1, 127.1) are decoded
// and checked rather than passed to DNS.
func CheckURL(ctx context.Context, raw string, p Policy) error {
	host, _, err := parseURL(raw, p)
	if err != nil {
		return err
	}
	if a, ok := literalAddr(host); ok {
		return p.checkAddr(a, host)
	}
	if inet, ok, ambiguous := parseInetAton(host); ok {
		if err := p.checkAddr(inet, host); err != nil {
			return err
		}
		if ambiguous {
			return fmt.Errorf("%w: host %q is a non-canonical IPv4 address; write it as %s", ErrInvalidURL, host, inet)
		}
		return nil
	}
	if isLocalhostName(host) {
		// RFC 6761: these names are loopback by definition, whatever DNS says.
		for _, a := range []netip.Addr{netip.AddrFrom4([4]byte{127, 0, 0, 1}), netip.IPv6Loopback()} {
			if err := p.checkAddr(a, host); err != nil {
				return err
			}
		}
		return nil
	}
	var r Resolver = net.DefaultResolver
	if p.Resolver != nil {
		r = p.Resolver
	}
	addrs, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return fmt.Errorf("%w: %s: %s", ErrResolve, host, lookupFailure(err))
	}
	if len(addrs) == 0 {
		return fmt.Errorf("%w: %s: no addresses", ErrResolve, host)
	}
	for _, a := range addrs {
		if err := p.checkAddr(a, host); err != nil {
			return err
		}
	}
	return nil
}

// lookupFailure says why a lookup failed without net.DNSError's "lookup
// <name> on <server>": the refusal goes back to the API caller, and the
// server is the platform's internal resolver.
func lookupFailure(err error) string {
	if de, ok := errors.AsType[*net.DNSError](err); ok {
		return de.Err
	}
	return err.Error()
}

// Dialer returns a dialer whose Control hook refuses any connection to an
// address p does not allow. It runs after DNS resolution, for every address
// tried, so it defeats DNS rebinding and anything CheckURL did not see.
// Use it as the DialContext of the delivery client's Transport (and give
// that Transport no Proxy, so the check applies to the real destination).
func Dialer(p Policy) *net.Dialer {
	return &net.Dialer{
		Timeout:   10 * time.Second,
		KeepAlive: 30 * time.Second,
		Control: func(network, address string, _ syscall.RawConn) error {
			switch network {
			case "tcp4", "tcp6":
			default:
				return fmt.Errorf("%w: network %s", ErrForbidden, network)
			}
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: unparseable dial address %q", ErrForbidden, address)
			}
			return p.checkAddr(ap.Addr(), "")
		},
	}
}

// Allowed reports whether p allows connecting to a.
func (p Policy) Allowed(a netip.Addr) bool { return p.checkAddr(a, "") == nil }

func (p Policy) checkAddr(a netip.Addr, host string) error {
	a = a.WithZone("")
	u := a.Unmap()
	for _, pr := range p.Allow {
		if pr.Contains(a) || pr.Contains(u) {
			return nil
		}
	}
	if reason := forbiddenReason(a); reason != "" {
		// Refusals reach the tenant (the API's answer, an attempt's
		// error): what the platform's resolver answered for a name (an
		// internal or split-horizon one, a public name pointed inside)
		// stays inside; the kind of address is reason enough.
		switch host {
		case a.String():
			return fmt.Errorf("%w: %s is a non-public address (%s)", ErrForbidden, a, reason)
		case "":
			return fmt.Errorf("%w: the host resolved to a non-public address (%s)", ErrForbidden, reason)
		}
		return fmt.Errorf("%w: %s resolves to a non-public address (%s)", ErrForbidden, host, reason)
	}
	return nil
}

// parseURL validates the URL's shape and returns its normalised host (no
// brackets, lower case, no trailing dot, ASCII) and port.
func parseURL(raw string, p Policy) (host string, port int, err error) {
	if len(raw) > 2048 {
		return "", 0, fmt.Errorf("%w: longer than 2048 characters", ErrInvalidURL)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", 0, fmt.Errorf("%w: %v", ErrInvalidURL, err)
	}
	scheme := strings.ToLower(u.Scheme)
	switch scheme {
	case "https":
		port = 443
	case "http":
		if p.RequireHTTPS {
			return "", 0, fmt.Errorf("%w: https is required", ErrInvalidURL)
		}
		port = 80
	default:
		return "", 0, fmt.Errorf("%w: scheme must be https or http", ErrInvalidURL)
	}
	if u.Opaque != "" {
		return "", 0, fmt.Errorf("%w: not an absolute http(s) URL", ErrInvalidURL)
	}
	if u.User != nil {
		return "", 0, fmt.Errorf("%w: credentials in the URL are not allowed", ErrInvalidURL)
	}
	if ps := u.Port(); ps != "" {
		n, err := strconv.Atoi(ps)
		if err != nil || n < 1 || n > 65535 {
			return "", 0, fmt.Errorf("%w: bad port %q", ErrInvalidURL, ps)
		}
		port = n
	} else if strings.HasSuffix(u.Host, ":") {
		return "", 0, fmt.Errorf("%w: empty port", ErrInvalidURL)
	}
	host, err = NormalizeHost(u.Hostname())
	if err != nil {
		return "", 0, err
	}
	return host, port, nil
}

// NormalizeHost turns a URL host (without port or brackets) into the name or
// address Go's HTTP client would dial: IDNA-mapped to ASCII (so "ｌｏｃａｌｈｏｓｔ"
// and "①②⑦.0.0.1" are seen for what they are), lower case, one trailing
// dot removed.
func NormalizeHost(h string) (string, error) {
	if h == "" {
		return "", fmt.Errorf("%w: missing host", ErrInvalidURL)
	}
	if !utf8.ValidString(h) {
		return "", fmt.Errorf("%w: host is not valid UTF-8", ErrInvalidURL)
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return strings.ToLower(h), nil
	}
	if !isASCII(h) {
		a, err := idna.Lookup.ToASCII(h)
		if err != nil {
			return "", fmt.Errorf("%w: host %q: %v", ErrInvalidURL, h, err)
		}
		h = a
	}
	h = strings.ToLower(h)
	h = strings.TrimSuffix(h, ".")
	if h == "" || strings.HasSuffix(h, ".") || strings.HasPrefix(h, ".") || strings.Contains(h, "..") {
		return "", fmt.Errorf("%w: malformed host", ErrInvalidURL)
	}
	if len(h) > 253 {
		return "", fmt.Errorf("%w: host longer than 253 characters", ErrInvalidURL)
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return "", fmt.Errorf("%w: host contains %q", ErrInvalidURL, c)
		}
	}
	return h, nil
}

// literalAddr parses h as an IP literal in canonical notation (dotted quad
// or IPv6, zone allowed).
func literalAddr(h string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(h)
	return a, err == nil
}

func isLocalhostName(h string) bool {
	return h == "localhost" || strings.HasSuffix(h, ".localhost") ||
		h == "localhost.localdomain" || h == "ip6-localhost" || h == "ip6-loopback"
}

// parseInetAton decodes the legacy IPv4 spellings accepted by inet_aton (and
// thus by glibc's getaddrinfo and browsers' URL parsers): one to four parts,
// each decimal, octal (leading 0) or hex (0x), the last part filling the
// remaining bytes. ok is false if h is not such a spelling; ambiguous is true
// if it is not the canonical dotted quad.
func parseInetAton(h string) (a netip.Addr, ok, ambiguous bool) {
	parts := strings.Split(h, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false, false
	}
	vals := make([]uint64, len(parts))
	for i, s := range parts {
		if s == "" {
			return netip.Addr{}, false, false
		}
		base := 10
		switch {
		case len(s) > 1 && (s[:2] == "0x" || s[:2] == "0X"):
			base, s = 16, s[2:]
			if s == "" {
				s = "0" // "0x" alone is 0 to inet_aton
			}
		case len(s) > 1 && s[0] == '0':
			base, s = 8, s[1:]
		}
		v, err := strconv.ParseUint(s, base, 64)
		if err != nil {
			return netip.Addr{}, false, false
		}
		vals[i] = v
	}
	var n uint64
	last := len(vals) - 1
	for i, v := range vals[:last] {
		if v > 255 {
			return netip.Addr{}, false, false
		}
		n |= v << (8 * (3 - i))
	}
	if vals[last] >= 1<<(8*(4-last)) {
		return netip.Addr{}, false, false
	}
	n |= vals[last]
	a = netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
	return a, true, a.String() != h
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// ParseAllowlist parses WEBHOOK_ALLOW_CIDRS: comma- or space-separated CIDR
// prefixes or single addresses ("127.0.0.0/8, ::1"). The special word
// "loopback" stands for 127.0.0.0/8 and ::1/128.
func ParseAllowlist(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' }) {
		if strings.EqualFold(f, "loopback") {
			out = append(out, netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"))
			continue
		}
		if strings.Contains(f, "/") {
			p, err := netip.ParsePrefix(f)
			if err != nil {
				return nil, fmt.Errorf("allowlist entry %q: %w", f, err)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("allowlist entry %q: %w", f, err)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
