package deliverer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/controlplane/events"
)

// endpointCache keeps each endpoint's state — status, URL, API version,
// secrets version — fresh enough for the next attempt. A job carries the
// endpoint as its claim or fan-out read it, but it may then wait minutes in
// the dispatcher's queue behind a slow endpoint, and meanwhile the endpoint
// may be disabled, moved to another URL or have its secret rotated. Before
// each attempt the freshest snapshot known (the job's own or the cache's)
// is used if it is at most ttl old, and the endpoint is read again
// otherwise: at most one read per endpoint per ttl, and none while fan-out
// and claims keep handing in fresh snapshots, which is the common case.
type endpointCache struct {
	db  *pgxpool.Pool
	ttl time.Duration
	// load reads one endpoint; readEndpoint unless a test replaces it.
	load func(ctx context.Context, id string) (endpointSnap, error)

	mu      sync.Mutex
	entries map[string]*endpointEntry
}

type endpointEntry struct {
	mu       sync.Mutex // one read at a time per endpoint
	snap     endpointSnap
	gone     bool      // deleted; its deliveries went with it
	failedAt time.Time // the last read failed then (real clock)
}

// errReadRecently is a stale snapshot's excuse: a read of this endpoint
// failed less than readBackoff ago, so none is tried again yet.
var errReadRecently = errors.New("reading the endpoint failed moments ago")

// While Postgres is slow or down, every attempt to an endpoint would wait
// its turn for a read of its own that fails the same way. So a read is
// bounded by readTimeout (a healthy one takes a millisecond), and after a
// failed one the attempts go on with the last snapshot for readBackoff: in
// a Postgres hang, attempts to an endpoint wait at most 1 s in 10.
const (
	readTimeout = time.Second
	readBackoff = 10 * time.Second
)

func newEndpointCache(db *pgxpool.Pool, ttl time.Duration) *endpointCache {
	c := &endpointCache{db: db, ttl: ttl, entries: map[string]*endpointEntry{}}
	c.load = c.readEndpoint
	return c
}

// current returns j's endpoint as read at most ttl ago (on the real clock:
// a test clock jumping ahead must not force reads), and false if it was
// deleted. On a failed read it returns the freshest snapshot it has with
// the error.
func (c *endpointCache) current(ctx context.Context, j *job) (endpointSnap, bool, error) {
	id := j.d.EndpointID
	c.mu.Lock()
	e := c.entries[id]
	if e == nil {
		e = &endpointEntry{}
		c.entries[id] = e
	}
	c.mu.Unlock()

	e.mu.Lock()
	defer e.mu.Unlock()
	if e.gone {
		return endpointSnap{}, false, nil
	}
	if j.ep.ReadAt.After(e.snap.ReadAt) {
		e.snap = j.ep
	}
	if time.Since(e.snap.ReadAt) <= c.ttl {
		return e.snap, true, nil
	}
	if time.Since(e.failedAt) <= max(readBackoff, c.ttl) {
		return e.snap, true, errReadRecently
	}
	snap, err := c.load(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		e.gone, e.snap = true, endpointSnap{ReadAt: snap.ReadAt}
		return endpointSnap{}, false, nil
	}
	if err != nil {
		if ctx.Err() == nil { // a shutdown is not Postgres failing
			e.failedAt = time.Now()
		}
		return e.snap, true, err
	}
	e.snap = snap
	return snap, true, nil
}

func (c *endpointCache) readEndpoint(ctx context.Context, id string) (endpointSnap, error) {
	// Bounded: other attempts to this endpoint wait for this read.
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	s := endpointSnap{ReadAt: time.Now()}
	err := c.db.QueryRow(ctx, `
		SELECT e.url, e.status, `+events.PayloadVersionSQL("e")+`, e.failing_since, e.failing_alert_level, `+secretsVersionSQL("e.id")+`
		FROM webhook_endpoints e WHERE e.id = $1`, id).
		Scan(&s.URL, &s.Status, &s.APIVersion, &s.FailingSince, &s.AlertLevel, &s.Secrets)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, err
	}
	if err != nil {
		return s, fmt.Errorf("reading endpoint %s: %w", id, err)
	}
	return s, nil
}

// prune drops entries too old to be used again, so that idle and deleted
// endpoints do not accumulate.
func (c *endpointCache) prune() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, e := range c.entries {
		if e.mu.TryLock() {
			// An entry backing off after a failed read is kept, or its
			// back-off would be forgotten.
			stale := time.Since(e.snap.ReadAt) > c.ttl && time.Since(e.failedAt) > max(readBackoff, c.ttl)
			e.mu.Unlock()
			if stale {
				delete(c.entries, id)
			}
		}
	}
}
