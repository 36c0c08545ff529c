package ssrf

import "net/netip"

type rangeInfo struct {
	prefix netip.Prefix
	reason string
}

func mustRanges(pairs ...string) []rangeInfo {
	out := make([]rangeInfo, 0, len(pairs)/2)
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, rangeInfo{netip.MustParsePrefix(pairs[i]), pairs[i+1]})
	}
	return out
}

// IPv4 ranges that are not globally reachable (IANA special-purpose address
// registry, RFC 6890 and successors). 192.0.0.0/24 is refused whole,
// including its two anycast service addresses, which no webhook receiver uses.
var forbidden4 = mustRanges(
	"0.0.0.0/8", "this network / unspecified",
	"10.0.0.0/8", "private (RFC 1918)",
	"100.64.0.0/10", "shared address space / CGNAT (RFC 6598)",
	"127.0.0.0/8", "loopback",
	"169.254.0.0/16", "link-local, incl. cloud metadata 169.254.169.254",
	"172.16.0.0/12", "private (RFC 1918)",
	"192.0.0.0/24", "IETF protocol assignments",
	"192.0.2.0/24", "documentation (TEST-NET-1)",
	"192.88.99.0/24", "deprecated 6to4 relay anycast",
	"192.168.0.0/16", "private (RFC 1918)",
	"198.18.0.0/15", "benchmarking (RFC 2544)",
	"198.51.100.0/24", "documentation (TEST-NET-2)",
	"203.0.113.0/24", "documentation (TEST-NET-3)",
	"224.0.0.0/4", "multicast",
	"240.0.0.0/4", "reserved (incl. broadcast 255.255.255.255)",
)

// IPv6 outside 2000::/3 (global unicast) is refused, apart from the two
// translation forms whose embedded IPv4 address is checked instead. Inside
// 2000::/3 these are refused.
var forbidden6 = mustRanges(
	// Teredo (2001::/32) lies in here: its embedded addresses are obfuscated
	// and it is obsolete, so it is refused rather than decoded.
	"2001::/23", "IETF protocol assignments (incl. Teredo)",
	"2001:db8::/32", "documentation",
	// 6to4 is deprecated (RFC 7526) and can embed any IPv4 address; refused
	// whole rather than decoded. An operator can allowlist it.
	"2002::/16", "6to4",
	"3fff::/20", "documentation (RFC 9637)",
)

var (
	global6    = netip.MustParsePrefix("2000::/3")
	mapped     = netip.MustParsePrefix("::ffff:0:0/96")
	nat64      = netip.MustParsePrefix("64:ff9b::/96")
	nat64Local = netip.MustParsePrefix("64:ff9b:1::/48")
)

// forbiddenReason says why a is not an acceptable destination, or "" if it is
// globally routable.
func forbiddenReason(a netip.Addr) string {
	if !a.IsValid() {
		return "invalid address"
	}
	a = a.WithZone("")
	if a.Is4() {
		for _, r := range forbidden4 {
			if r.prefix.Contains(a) {
				return r.reason
			}
		}
		return ""
	}
	switch {
	case a.IsUnspecified():
		return "unspecified"
	case a.IsLoopback():
		return "loopback"
	case mapped.Contains(a):
		if r := forbiddenReason(a.Unmap()); r != "" {
			return "IPv4-mapped " + r
		}
		return ""
	case nat64.Contains(a):
		b := a.As16()
		if r := forbiddenReason(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})); r != "" {
			return "NAT64 " + r
		}
		return ""
	case nat64Local.Contains(a):
		return "local-use NAT64 (RFC 8215)"
	case a.IsMulticast():
		return "multicast"
	case a.IsLinkLocalUnicast():
		return "link-local"
	case a.IsPrivate():
		return "unique local (fc00::/7)"
	case !global6.Contains(a):
		return "not global unicast (outside 2000::/3)"
	}
	for _, r := range forbidden6 {
		if r.prefix.Contains(a) {
			return r.reason
		}
	}
	return ""
}
