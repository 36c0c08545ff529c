package apikey

import (
	"context"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func TestUnknownKeysCountsPerAddressPerSecond(t *testing.T) {
	u := &unknownKeys{limit: 2}
	a, b := netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("192.0.2.2/32")
	t0 := time.Unix(1_800_000_000, 0)
	for range 2 {
		if !u.allow(a, t0) {
			t.Fatal("refused under the limit")
		}
		u.failed(a, t0)
	}
	if u.allow(a, t0.Add(999*time.Millisecond)) {
		t.Fatal("allowed past the limit within the second")
	}
	if !u.allow(b, t0) {
		t.Fatal("another address was refused")
	}
	if !u.allow(a, t0.Add(time.Second)) {
		t.Fatal("refused in the next second")
	}
}

func TestUnknownKeysMemoryIsBounded(t *testing.T) {
	u := &unknownKeys{limit: 1}
	t0 := time.Unix(1_800_000_000, 0)
	first := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, 0}), 32)
	u.failed(first, t0)
	for i := range maxTracked + 10 {
		ip := netip.AddrFrom4([4]byte{11, byte(i >> 16), byte(i >> 8), byte(i)})
		u.failed(netip.PrefixFrom(ip, 32), t0)
	}
	if len(u.counts) != maxTracked {
		t.Fatalf("tracking %d addresses, bound is %d", len(u.counts), maxTracked)
	}
	// Addresses already tracked keep counting past the bound.
	if u.allow(first, t0) {
		t.Fatal("a tracked address was not held back once the map was full")
	}
	u.failed(first, t0.Add(time.Second))
	if len(u.counts) != 1 {
		t.Fatalf("the next second kept %d addresses", len(u.counts))
	}
}

func TestUnknownKeysOff(t *testing.T) {
	u := &unknownKeys{}
	p := netip.MustParsePrefix("192.0.2.1/32")
	for range 100 {
		u.failed(p, time.Unix(0, 0))
	}
	if !u.allow(p, time.Unix(0, 0)) || u.counts != nil {
		t.Fatal("a limit of 0 throttled or kept state")
	}
}

func TestClientAddrGroupsIPv6By64(t *testing.T) {
	addr := func(ip string) netip.Prefix {
		r := httptest.NewRequest("GET", "/", nil)
		vars := map[string]any{caddyhttp.ClientIPVarKey: ip}
		return clientAddr(r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, vars)))
	}
	for _, tc := range []struct{ a, b string }{
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff::9"},
		{"192.0.2.1", "::ffff:192.0.2.1"},
		{"fe80::1%eth0", "fe80::2"},
	} {
		if addr(tc.a) != addr(tc.b) {
			t.Errorf("%s and %s counted apart: %s, %s", tc.a, tc.b, addr(tc.a), addr(tc.b))
		}
	}
	if addr("2001:db8:1:2::1") == addr("2001:db8:1:3::1") {
		t.Error("two /64s counted together")
	}
	if addr("192.0.2.1") == addr("192.0.2.2") {
		t.Error("two IPv4 addresses counted together")
	}
	if p := addr("not an ip"); p.IsValid() || addrName(p) != "an unknown address" {
		t.Errorf("no address: %v %q", p, addrName(p))
	}
}
