package apikey

import (
	"net/netip"
	"sync"
	"time"
)

// unknownKeys throttles key lookups per client address. A request whose key
// is in neither cache costs one Postgres query; well-formed made-up keys
// (the checksum is public) can each cost one, and enough of them fill the
// store's pool, so that real keys not yet cached get 503 auth_unavailable.
// Each address (an IPv6 /64) may have limit lookups answer "no such key" per second;
// past that, its keys not in the cache are refused with 429 until the
// second ends. Only failures count, so a client presenting many real keys
// (a platform calling on behalf of its customers) is never held back, and
// cached keys are always served.
//
// Memory is bounded: the counts are those of the current second only, for
// at most maxTracked addresses. Addresses past that bound in one second are
// not throttled; the bound only matters to an attacker with that many
// addresses, which per-address limits cannot stop anyway.
type unknownKeys struct {
	limit int // failures per address per second; 0 disables

	mu     sync.Mutex
	second int64 // Unix second the counts belong to
	counts map[netip.Prefix]int
}

const maxTracked = 100_000

// allow reports whether ip may look up a key that is not cached at now.
func (u *unknownKeys) allow(ip netip.Prefix, now time.Time) bool {
	if u.limit <= 0 {
		return true
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.roll(now)
	return u.counts[ip] < u.limit
}

// failed counts a lookup by ip, at now, that found no usable key.
func (u *unknownKeys) failed(ip netip.Prefix, now time.Time) {
	if u.limit <= 0 {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.roll(now)
	if n, ok := u.counts[ip]; ok || len(u.counts) < maxTracked {
		u.counts[ip] = n + 1
	}
}

// roll starts a new second's counts when now is in a later second. u.mu
// must be held.
func (u *unknownKeys) roll(now time.Time) {
	if s := now.Unix(); s != u.second || u.counts == nil {
		u.second, u.counts = s, make(map[netip.Prefix]int)
	}
}
