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
	for i := range 2 {
		if !u.begin(a, key(i), t0) {
			t.Fatal("refused under the limit")
		}
		u.end(key(i), false)
	}
	if u.begin(a, key(2), t0.Add(999*time.Millisecond)) {
		t.Fatal("allowed past the limit within the second")
	}
	if !u.begin(b, key(3), t0) {
		t.Fatal("another address was refused")
	}
	if !u.begin(a, key(4), t0.Add(time.Second)) {
		t.Fatal("refused in the next second")
	}
}

// key is a made-up key hash.
func key(i int) [32]byte { return [32]byte{byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)} }

// Lookups hold their place while in flight: counted only when they failed,
// concurrent made-up keys would all reach Postgres before the first failure
// counted, and a client hanging up before the answer would never count.
// Found keys and Postgres errors give the place back; requests for one key
// share one place, as they share one load.
func TestUnknownKeysCountLookupsInFlight(t *testing.T) {
	u := &unknownKeys{limit: 2}
	a := netip.MustParsePrefix("192.0.2.1/32")
	t0 := time.Unix(1_800_000_000, 0)
	if !u.begin(a, key(1), t0) || !u.begin(a, key(2), t0) {
		t.Fatal("refused under the limit")
	}
	if !u.begin(a, key(1), t0) {
		t.Fatal("a request for a key already being looked up was refused")
	}
	if u.begin(a, key(3), t0) {
		t.Fatal("a third lookup started while two were in flight")
	}
	u.end(key(1), true) // found: its place is given back
	u.end(key(1), true)
	if !u.begin(a, key(3), t0) {
		t.Fatal("a found key's place was not given back")
	}
	u.end(key(3), true) // Postgres could not say
	u.end(key(2), false)
	if !u.begin(a, key(4), t0) {
		t.Fatal("an error's place was not given back")
	}
	u.end(key(4), false) // the client hung up: it counts
	if u.begin(a, key(5), t0) {
		t.Fatal("allowed past the limit after two failures")
	}
	if len(u.pending) != 0 {
		t.Fatalf("%d lookups still pending", len(u.pending))
	}
}

func TestUnknownKeysMemoryIsBounded(t *testing.T) {
	u := &unknownKeys{limit: 1}
	t0 := time.Unix(1_800_000_000, 0)
	first := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, 0}), 32)
	failed := func(ip netip.Prefix, h [32]byte, now time.Time) {
		u.begin(ip, h, now)
		u.end(h, false)
	}
	failed(first, key(0), t0)
	for i := range maxTracked + 10 {
		ip := netip.AddrFrom4([4]byte{11, byte(i >> 16), byte(i >> 8), byte(i)})
		failed(netip.PrefixFrom(ip, 32), key(i+1), t0)
	}
	if len(u.counts) != maxTracked || len(u.pending) != 0 {
		t.Fatalf("tracking %d addresses and %d lookups, bound is %d", len(u.counts), len(u.pending), maxTracked)
	}
	// Addresses already tracked keep counting past the bound.
	if u.begin(first, key(-1), t0) {
		t.Fatal("a tracked address was not held back once the map was full")
	}
	failed(first, key(-1), t0.Add(time.Second))
	if len(u.counts) != 1 {
		t.Fatalf("the next second kept %d addresses", len(u.counts))
	}
}

func TestUnknownKeysOff(t *testing.T) {
	u := &unknownKeys{}
	p := netip.MustParsePrefix("192.0.2.1/32")
	for i := range 100 {
		u.begin(p, key(i), time.Unix(0, 0))
		u.end(key(i), false)
	}
	if !u.begin(p, key(100), time.Unix(0, 0)) || u.counts != nil || u.pending != nil {
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
