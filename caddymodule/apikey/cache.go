package apikey

import (
	"sync"
	"sync/atomic"
	"time"
)

// cache holds looked-up keys by hash. Known keys and unknown (or revoked)
// keys live in separate maps with separate bounds, so a flood of
// well-formed random keys can neither grow memory without limit nor push
// real keys out.
//
// Every invalidation bumps gen under the lock; a load records gen before it
// queries Postgres and only stores its result if gen has not moved, so a
// row read just before a revocation committed can never be cached after
// the revocation's notification was processed.
type cache struct {
	mu         sync.RWMutex
	keys       map[[32]byte]*entry
	unknown    map[[32]byte]time.Time // hash → when Postgres said "no such key"
	maxKeys    int
	maxUnknown int
	gen        atomic.Uint64
}

type entry struct {
	rec      *record
	loadedAt time.Time
	// refreshing is set while a background refresh of a stale entry runs;
	// retryAt (unix ns) delays the next one after a failure.
	refreshing atomic.Bool
	retryAt    atomic.Int64
}

func newCache(size int) *cache {
	return &cache{
		keys:       make(map[[32]byte]*entry),
		unknown:    make(map[[32]byte]time.Time),
		maxKeys:    size,
		maxUnknown: max(size/4, 100),
	}
}

// get returns the entry of a known key, or when the key was last found
// unknown.
func (c *cache) get(hash [32]byte) (*entry, time.Time, bool) {
	c.mu.RLock()
	e := c.keys[hash]
	var at time.Time
	var unknown bool
	if e == nil {
		at, unknown = c.unknown[hash]
	}
	c.mu.RUnlock()
	return e, at, unknown
}

func (c *cache) generation() uint64 { return c.gen.Load() }

// put stores what a load found (rec nil: no usable key) unless an
// invalidation happened since gen was read. It reports whether it stored.
func (c *cache) put(hash [32]byte, rec *record, at time.Time, gen uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen.Load() != gen {
		return false
	}
	if rec == nil {
		delete(c.keys, hash)
		if _, ok := c.unknown[hash]; !ok && len(c.unknown) >= c.maxUnknown {
			evictSome(c.unknown, c.maxUnknown/100+1)
		}
		c.unknown[hash] = at
		return true
	}
	delete(c.unknown, hash)
	if _, ok := c.keys[hash]; !ok && len(c.keys) >= c.maxKeys {
		evictSome(c.keys, c.maxKeys/100+1)
	}
	c.keys[hash] = &entry{rec: rec, loadedAt: at}
	return true
}

// evict forgets one key.
func (c *cache) evict(hash [32]byte) {
	c.mu.Lock()
	delete(c.keys, hash)
	delete(c.unknown, hash)
	c.gen.Add(1)
	c.mu.Unlock()
}

// flush forgets everything.
func (c *cache) flush() {
	c.mu.Lock()
	clear(c.keys)
	clear(c.unknown)
	c.gen.Add(1)
	c.mu.Unlock()
}

func (c *cache) len() (known, unknown int) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.keys), len(c.unknown)
}

// evictSome deletes n entries; map iteration order is randomised, which
// makes this a cheap random eviction.
func evictSome[V any](m map[[32]byte]V, n int) {
	for k := range m {
		if n <= 0 {
			return
		}
		delete(m, k)
		n--
	}
}
