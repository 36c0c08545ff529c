package apikey

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	keyformat "github.com/gatehouse/gatehouse/internal/apikey"
	"github.com/gatehouse/gatehouse/internal/redact"
)

// Channel is the Postgres notification channel on which the control plane
// announces key changes: the payload is the lowercase hex of the key's
// hash, or "*" to drop every cached key.
const Channel = "gatehouse_api_keys"

// Timings of the store that are not configuration.
const (
	// unlistenedTTL caps how long a cached key is trusted without a
	// refresh while the LISTEN connection is down and revocations could
	// be missed.
	unlistenedTTL = time.Second
	// refreshBackoff spaces background refreshes of one key after a failure.
	refreshBackoff = 2 * time.Second
	// listenIdle is how long the LISTEN connection may stay silent before
	// it is pinged, so that a connection cut without a reset (whose
	// notifications are lost) is noticed within about this time plus the
	// query timeout. One ping per gateway this often costs Postgres nothing.
	listenIdle       = 5 * time.Second
	listenBackoffMin = 100 * time.Millisecond
	listenBackoffMax = 5 * time.Second
)

// errUnavailable means the key store could not answer: Postgres is down or
// slow and the key is not in the cache.
var errUnavailable = errors.New("key store unavailable")

// stores shares one store per database and store settings between handler
// instances, so a config reload keeps the pool, the cache and the LISTEN
// connection.
var stores = caddy.NewUsagePool()

type storeConfig struct {
	dsn           string
	cacheSize     int
	queryTimeout  time.Duration
	flushInterval time.Duration
}

func (c storeConfig) key() string {
	return fmt.Sprintf("%s\x00%d\x00%s\x00%s", c.dsn, c.cacheSize, c.queryTimeout, c.flushInterval)
}

func acquireStore(cfg storeConfig) (*store, error) {
	v, _, err := stores.LoadOrNew(cfg.key(), func() (caddy.Destructor, error) { return newStore(cfg) })
	if err != nil {
		return nil, err
	}
	return v.(*store), nil
}

func releaseStore(cfg storeConfig) error {
	_, err := stores.Delete(cfg.key())
	return err
}

// record is what the gateway knows about one key. It is immutable once
// cached, except for the last-use bookkeeping.
type record struct {
	Principal
	expiresAt time.Time // zero: never
	rolledTo  string
	allow     []netip.Prefix
	org       *org

	// placeholder values, boxed once so setting them per request does not
	// allocate
	vOrgID, vKeyID, vLivemode, vEnvironment, vKind, vScopes, vBodyCapture any

	lastUsed atomic.Int64 // unix ms of the latest use not yet written
	dirty    atomic.Bool  // queued for the next last_used_at flush
}

// org is the shared state of an organisation: its pinned API version.
type org struct {
	id      string
	version atomic.Pointer[string]
	pinning atomic.Bool
}

// Version is the pinned API version, "" when none yet.
func (o *org) Version() string {
	if p := o.version.Load(); p != nil {
		return *p
	}
	return ""
}

func (o *org) setVersion(v string) { o.version.Store(&v) }

// store is the gateway's view of api_keys: a cache in front of Postgres,
// kept coherent by LISTEN/NOTIFY, plus the background writers for
// last_used_at and API version pinning.
type store struct {
	cfg    storeConfig
	pool   *pgxpool.Pool
	cache  *cache
	logger *zap.Logger

	listening    atomic.Bool
	reconnecting bool // owned by the listen goroutine
	loads        singleflight.Group
	lookup       func(ctx context.Context, hash [32]byte) (*record, error) // load; a test's stand-in

	orgsMu sync.Mutex
	orgs   map[string]*org

	touchMu sync.Mutex
	touched []*record

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	bgMu   sync.Mutex // orders background starts before Destruct's Wait
}

func newStore(cfg storeConfig) (*store, error) {
	if err := redact.CheckURL(cfg.dsn); err != nil {
		return nil, fmt.Errorf("database_url: %w", err)
	}
	pcfg, err := pgxpool.ParseConfig(cfg.dsn)
	if err != nil {
		return nil, fmt.Errorf("parsing database_url: %w", redact.URLError(cfg.dsn, err))
	}
	pcfg.ConnConfig.ConnectTimeout = cfg.queryTimeout
	// The pool connects lazily: the gateway starts, and serves everything
	// but authenticated routes, while Postgres is still down.
	pool, err := pgxpool.NewWithConfig(context.Background(), pcfg)
	if err != nil {
		return nil, fmt.Errorf("creating key store pool: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &store{
		cfg:   cfg,
		pool:  pool,
		cache: newCache(cfg.cacheSize),
		// The store outlives the config that created it, so it logs to
		// the process logger rather than that config's.
		logger: caddy.Log().Named("http.handlers.api_key.store").With(zap.String("database", redactDSN(cfg.dsn))),
		orgs:   make(map[string]*org),
		ctx:    ctx,
		cancel: cancel,
	}
	s.lookup = s.load
	s.wg.Add(2)
	go s.listen()
	go s.flushLoop()
	return s, nil
}

// Destruct stops the background work, writes pending last-use times and
// closes the pool. Called by the usage pool when the last handler using
// the store is cleaned up.
func (s *store) Destruct() error {
	s.bgMu.Lock()
	s.cancel()
	s.bgMu.Unlock()
	s.wg.Wait()
	s.pool.Close()
	return nil
}

// cached answers from the cache: the usable key with hash, or nil for a
// key known to be unknown or revoked, with found false when the cache has
// nothing to say and only Postgres can (loadShared). A cached key past its
// TTL is served while a background refresh runs, which is also what keeps
// known keys working while Postgres is down.
func (s *store) cached(hash [32]byte, now time.Time, ttl, negativeTTL time.Duration) (rec *record, found bool) {
	e, unknownAt, unknown := s.cache.get(hash)
	if !s.listening.Load() && ttl > unlistenedTTL {
		ttl = unlistenedTTL
	}
	if e != nil {
		if now.Sub(e.loadedAt) < ttl {
			cacheHit.Inc()
		} else {
			cacheStale.Inc()
			s.refresh(hash, e, now)
		}
		return e.rec, true
	}
	if unknown && now.Sub(unknownAt) < negativeTTL {
		cacheNegativeHit.Inc()
		return nil, true
	}
	cacheMiss.Inc()
	return nil, false
}

// loadShared loads a key once for all concurrent requests that miss on it,
// returning nil for an unknown or revoked key and errUnavailable when
// Postgres cannot say. It is apart from cached because the closure makes
// hash escape, which would cost every cache hit an allocation.
//
// Requests share a load only within one cache generation: one that comes
// after an invalidation (a revocation's notice) starts its own rather than
// join a load begun before, whose answer may predate the revocation — it
// would be refused no caching, but handed to every request that joined.
func (s *store) loadShared(ctx context.Context, hash [32]byte, now time.Time) (*record, error) {
	gen := s.cache.generation()
	ch := s.loads.DoChan(string(hash[:])+strconv.FormatUint(gen, 36), func() (any, error) {
		return s.loadAndCache(hash, now, gen)
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, errUnavailable
		}
		rec, _ := res.Val.(*record)
		return rec, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// loadAndCache reads the key from Postgres and caches the answer. Its
// context is the store's, not a request's: concurrent requests for the
// same key share the load, and one client hanging up must not fail it.
func (s *store) loadAndCache(hash [32]byte, now time.Time, gen uint64) (*record, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.queryTimeout)
	defer cancel()
	rec, err := s.lookup(ctx, hash)
	if err != nil {
		storeErrors.WithLabelValues("lookup").Inc()
		s.logger.Warn("looking up api key", zap.Error(err))
		return nil, err
	}
	s.cache.put(hash, rec, now, gen)
	return rec, nil
}

// refresh reloads a stale entry in the background, one refresh per entry at
// a time and none for refreshBackoff after a failure.
func (s *store) refresh(hash [32]byte, e *entry, now time.Time) {
	if now.UnixNano() < e.retryAt.Load() || !e.refreshing.CompareAndSwap(false, true) {
		return
	}
	s.startRefresh(hash, e, now)
}

// startRefresh is apart from refresh so that only an actual refresh pays for
// hash escaping into the goroutine.
func (s *store) startRefresh(hash [32]byte, e *entry, now time.Time) {
	s.background(func() {
		gen := s.cache.generation()
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.queryTimeout)
		defer cancel()
		rec, err := s.load(ctx, hash)
		if err != nil {
			storeErrors.WithLabelValues("refresh").Inc()
			if c := s.logger.Check(zap.DebugLevel, "refreshing cached api key; serving the cached copy"); c != nil {
				c.Write(zap.Error(err))
			}
			e.retryAt.Store(now.Add(refreshBackoff).UnixNano())
			e.refreshing.Store(false)
			return
		}
		if !s.cache.put(hash, rec, now, gen) {
			// Another key's invalidation raced this load; if this entry
			// is still cached, the next request refreshes it again.
			e.refreshing.Store(false)
		}
	})
}

// background runs f in a goroutine that Destruct waits for, unless
// Destruct has begun: requests still running past a config's grace period
// must not start work on a closed pool, nor add to the WaitGroup while
// Destruct waits on it (a misuse that panics).
func (s *store) background(f func()) bool {
	s.bgMu.Lock()
	defer s.bgMu.Unlock()
	if s.ctx.Err() != nil {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

const keyQuery = `
SELECT k.id, k.organization_id, k.environment, k.kind, k.scopes, k.ip_allowlist,
       k.expires_at, k.revoked_at IS NOT NULL AS revoked, coalesce(k.rolled_to, '') AS rolled_to,
       coalesce(o.api_version, '') AS api_version,
       CASE WHEN k.environment = 'live' THEN o.body_capture_live ELSE o.body_capture_sandbox END AS body_capture
FROM api_keys k JOIN organizations o ON o.id = k.organization_id
WHERE k.key_hash = $1`

type keyRow struct {
	ID             string         `db:"id"`
	OrganizationID string         `db:"organization_id"`
	Environment    string         `db:"environment"`
	Kind           string         `db:"kind"`
	Scopes         []string       `db:"scopes"`
	IPAllowlist    []netip.Prefix `db:"ip_allowlist"`
	ExpiresAt      *time.Time     `db:"expires_at"`
	Revoked        bool           `db:"revoked"`
	RolledTo       string         `db:"rolled_to"`
	APIVersion     string         `db:"api_version"`
	BodyCapture    bool           `db:"body_capture"`
}

// load reads one key; nil without error for an unknown or revoked key.
func (s *store) load(ctx context.Context, hash [32]byte) (*record, error) {
	rows, err := s.pool.Query(ctx, keyQuery, hash[:])
	if err != nil {
		return nil, err
	}
	row, err := pgx.CollectOneRow(rows, pgx.RowToStructByName[keyRow])
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if row.Revoked {
		return nil, nil
	}
	return s.newRecord(row), nil
}

func (s *store) newRecord(row keyRow) *record {
	o := s.org(row.OrganizationID)
	if row.APIVersion != "" {
		o.setVersion(row.APIVersion)
	}
	rec := &record{
		Principal: Principal{
			KeyID:       row.ID,
			OrgID:       row.OrganizationID,
			Environment: keyformat.Environment(row.Environment),
			Livemode:    row.Environment == string(keyformat.Live),
			Kind:        keyformat.Kind(row.Kind),
			Scopes:      row.Scopes,
		},
		rolledTo: row.RolledTo,
		allow:    row.IPAllowlist,
		org:      o,
	}
	if rec.Kind == keyformat.Secret {
		rec.Scopes = allScopes
	}
	if row.ExpiresAt != nil {
		rec.expiresAt = *row.ExpiresAt
	}
	for i, p := range rec.allow {
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			rec.allow[i] = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
	}
	rec.vOrgID, rec.vKeyID = rec.OrgID, rec.KeyID
	rec.vLivemode = "false"
	if rec.Livemode {
		rec.vLivemode = "true"
	}
	rec.vEnvironment, rec.vKind = string(rec.Environment), string(rec.Kind)
	rec.vScopes = joinScopes(rec.Scopes)
	// The organisation's debugging switch for this environment: request_log
	// captures (redacted) bodies only when it is on.
	rec.vBodyCapture = "false"
	if row.BodyCapture {
		rec.vBodyCapture = "true"
	}
	return rec
}

func (s *store) org(id string) *org {
	s.orgsMu.Lock()
	defer s.orgsMu.Unlock()
	o := s.orgs[id]
	if o == nil {
		o = &org{id: id}
		s.orgs[id] = o
	}
	return o
}

// pin records version as the organisation's API version at its first
// request. The version is used at once; the write happens in the
// background, and if another gateway pinned first, its choice wins here
// too.
func (s *store) pin(o *org, version string) {
	if !o.pinning.CompareAndSwap(false, true) {
		return
	}
	o.setVersion(version)
	s.background(func() {
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.queryTimeout)
		defer cancel()
		var pinned string
		err := s.pool.QueryRow(ctx,
			`UPDATE organizations SET api_version = $1 WHERE id = $2 AND api_version IS NULL RETURNING api_version`,
			version, o.id).Scan(&pinned)
		if errors.Is(err, pgx.ErrNoRows) {
			err = s.pool.QueryRow(ctx, `SELECT coalesce(api_version, '') FROM organizations WHERE id = $1`, o.id).Scan(&pinned)
		}
		if err != nil || pinned == "" {
			storeErrors.WithLabelValues("pin").Inc()
			s.logger.Warn("pinning api version", zap.String("organization_id", o.id), zap.Error(err))
			// Let a later request try again.
			o.version.Store(nil)
			o.pinning.Store(false)
			return
		}
		o.setVersion(pinned)
	})
}

// touch notes a use of rec for last_used_at, at most once per second per
// key on the hot path and without any lock after the first use in a flush
// interval.
func (s *store) touch(rec *record, now time.Time) {
	ms := now.UnixMilli()
	if ms-rec.lastUsed.Load() < 1000 {
		return
	}
	rec.lastUsed.Store(ms)
	if rec.dirty.Load() || !rec.dirty.CompareAndSwap(false, true) {
		return
	}
	s.touchMu.Lock()
	s.touched = append(s.touched, rec)
	s.touchMu.Unlock()
}

func (s *store) flushLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.flushInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			_ = s.flushLastUsed(s.ctx)
		case <-s.ctx.Done():
			// Last chance for the uses since the previous tick.
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.queryTimeout)
			_ = s.flushLastUsed(ctx)
			cancel()
			return
		}
	}
}

const touchSQL = `
UPDATE api_keys AS k SET last_used_at = u.used_at
FROM unnest($1::text[], $2::timestamptz[]) AS u(id, used_at)
WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.used_at)`

// flushLastUsed writes the pending last-use times in one statement.
func (s *store) flushLastUsed(ctx context.Context) error {
	s.touchMu.Lock()
	recs := s.touched
	s.touched = nil
	s.touchMu.Unlock()
	if len(recs) == 0 {
		return nil
	}
	latest := make(map[string]time.Time, len(recs))
	for _, r := range recs {
		r.dirty.Store(false)
		t := time.UnixMilli(r.lastUsed.Load())
		if t.After(latest[r.KeyID]) {
			latest[r.KeyID] = t
		}
	}
	ids := make([]string, 0, len(latest))
	times := make([]time.Time, 0, len(latest))
	for id, t := range latest {
		ids = append(ids, id)
		times = append(times, t)
	}
	qctx, cancel := context.WithTimeout(ctx, s.cfg.queryTimeout)
	defer cancel()
	if _, err := s.pool.Exec(qctx, touchSQL, ids, times); err != nil {
		storeErrors.WithLabelValues("last_used").Inc()
		s.logger.Warn("writing api key last_used_at; will retry", zap.Int("keys", len(ids)), zap.Error(err))
		s.touchMu.Lock()
		for _, r := range recs {
			if r.dirty.CompareAndSwap(false, true) {
				s.touched = append(s.touched, r)
			}
		}
		s.touchMu.Unlock()
		return err
	}
	return nil
}

// listen keeps a LISTEN connection open and applies notifications to the
// cache, reconnecting with capped exponential backoff.
func (s *store) listen() {
	defer s.wg.Done()
	backoff := listenBackoffMin
	for {
		connected, err := s.listenOnce()
		if s.listening.Swap(false) {
			listeners.Dec()
		}
		if s.ctx.Err() != nil {
			return
		}
		if connected {
			backoff = listenBackoffMin
		}
		storeErrors.WithLabelValues("listen").Inc()
		s.logger.Warn("key invalidation channel down; cached keys are re-checked every second until it is back",
			zap.Duration("retry_in", backoff), zap.Error(err))
		select {
		case <-time.After(backoff + rand.N(backoff/2)):
		case <-s.ctx.Done():
			return
		}
		backoff = min(backoff*2, listenBackoffMax)
	}
}

// listenOnce runs one LISTEN connection until it fails. connected reports
// whether LISTEN was established.
func (s *store) listenOnce() (connected bool, err error) {
	cfg := s.pool.Config().ConnConfig.Copy()
	// Idle waits end by deadline rather than by a cancel request to the
	// server, so the periodic wake-up costs nothing.
	cfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: c.Conn()}
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.queryTimeout)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err == nil {
		_, err = conn.Exec(ctx, "LISTEN "+Channel)
	}
	cancel()
	if conn != nil {
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = conn.Close(ctx)
			cancel()
		}()
	}
	if err != nil {
		return false, err
	}
	// Whatever changed while nobody listened is unknown: start over.
	s.cache.flush()
	cacheInvalidations.WithLabelValues("flush").Inc()
	s.listening.Store(true)
	listeners.Inc()
	level := zap.DebugLevel
	if s.reconnecting {
		level = zap.InfoLevel // the recovery is news; the first connect is not
	}
	s.reconnecting = true
	if c := s.logger.Check(level, "listening for api key changes"); c != nil {
		c.Write(zap.String("channel", Channel))
	}
	for {
		wctx, cancel := context.WithTimeout(s.ctx, listenIdle)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case s.ctx.Err() != nil:
			return true, s.ctx.Err()
		case err == nil:
			s.invalidate(n.Payload)
		case pgconn.Timeout(err):
			pctx, cancel := context.WithTimeout(s.ctx, s.cfg.queryTimeout)
			err = conn.Ping(pctx)
			cancel()
			if err != nil {
				return true, err
			}
		default:
			return true, err
		}
	}
}

// invalidate applies one notification payload.
func (s *store) invalidate(payload string) {
	var hash [32]byte
	if payload != "*" {
		if n, err := hex.Decode(hash[:], []byte(payload)); err == nil && n == len(hash) {
			s.cache.evict(hash)
			cacheInvalidations.WithLabelValues("key").Inc()
			return
		}
		s.logger.Warn("unexpected api key notification payload; dropping every cached key", zap.Int("length", len(payload)))
	}
	s.cache.flush()
	cacheInvalidations.WithLabelValues("flush").Inc()
}

// redactDSN names the database for logs without credentials.
func redactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.Host == "" {
		return "(unparsed)"
	}
	return u.Host + u.Path
}
