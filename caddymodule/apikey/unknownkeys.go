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
// (a platform calling on behalf of its customers) is held back at most
// while more than limit of its lookups are in flight at once, and cached
// keys are always served.
//
// A lookup takes its place when it starts (begin) and gives it back only
// when it finds a key or Postgres fails (end): counted when they ended,
// concurrent lookups would all start before the first failure counted, and
// a client hanging up before the answer (the load goes on without it)
// would never be counted at all. Concurrent requests for one key share one
// load (loadShared) and so one place.
//
// Memory is bounded: the counts are those of the current second only, for
// at most maxTracked addresses, and places held are those of lookups in
// flight. Addresses past that bound in one second are not throttled; the
// bound only matters to an attacker with that many addresses, which
// per-address limits cannot stop anyway.
type unknownKeys struct {
	limit int // failures per address per second; 0 disables

	mu      sync.Mutex
	second  int64 // Unix second the counts belong to
	counts  map[netip.Prefix]int
	pending map[[32]byte]*pendingLookup
}

// pendingLookup is a lookup in flight and the place it holds.
type pendingLookup struct {
	ip       netip.Prefix
	second   int64 // the second whose count holds the place
	counted  bool  // false when the address was past maxTracked
	waiters  int   // requests waiting for it
	released bool
}

const maxTracked = 100_000

// begin reports whether ip may look up hash, a key that is not cached, at
// now; if so, the caller must call end with the outcome.
func (u *unknownKeys) begin(ip netip.Prefix, hash [32]byte, now time.Time) bool {
	if u.limit <= 0 {
		return true
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.roll(now)
	if p := u.pending[hash]; p != nil {
		p.waiters++ // the load under way answers this request too
		return true
	}
	n, ok := u.counts[ip]
	if n >= u.limit {
		return false
	}
	p := &pendingLookup{ip: ip, second: u.second, waiters: 1}
	if p.counted = ok || len(u.counts) < maxTracked; p.counted {
		u.counts[ip] = n + 1
	}
	if u.pending == nil {
		u.pending = make(map[[32]byte]*pendingLookup)
	}
	u.pending[hash] = p
	return true
}

// end reports the outcome of a lookup begin allowed: release when it found
// a usable key or Postgres could not say, which gives its place back; a key
// found not to exist, or a client that did not wait for the answer, keeps
// it.
func (u *unknownKeys) end(hash [32]byte, release bool) {
	if u.limit <= 0 {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	p := u.pending[hash]
	if p == nil {
		return
	}
	if release && !p.released {
		p.released = true
		if p.counted && p.second == u.second && u.counts[p.ip] > 0 {
			u.counts[p.ip]--
		}
	}
	if p.waiters--; p.waiters == 0 {
		delete(u.pending, hash)
	}
}

// roll starts a new second's counts when now is in a later second. u.mu
// must be held.
func (u *unknownKeys) roll(now time.Time) {
	if s := now.Unix(); s != u.second || u.counts == nil {
		u.second, u.counts = s, make(map[netip.Prefix]int)
	}
}
