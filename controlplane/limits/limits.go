// Package limits manages per-organisation and per-key overrides of the
// gateway's rate limits and quotas — what a plan changes. Postgres
// (limit_overrides) is the source of truth; every change is mirrored into
// the organisation's overrides hash in Redis (see caddymodule/ratelimit/
// keyspace), which the gateway's rate-limit script reads in the same round
// trip as the limits themselves, so a change applies on the very next
// request. Sync re-mirrors everything, repairing Redis after a flush, a
// failed mirror or a restore; run it periodically with Syncer.
//
// An override names a policy (or quota) of the gateway's rate_limit
// configuration. For a GCRA policy it sets Quota requests per WindowSeconds
// with Burst (default Quota); for a quota it sets the number of requests per
// period, and the calendar period stays as configured (WindowSeconds is
// then ignored). A key's override wins over its organisation's. Overrides
// naming a policy the gateway does not have are stored and ignored (the
// CLI warns of one, from Names), so that a plan can be set up before the
// configuration that names it is deployed.
package limits

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/gatehouse/gatehouse/caddymodule/ratelimit/keyspace"
	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/internal/apierror"
)

// Sentinel errors, for errors.Is. Errors that are the caller's fault also
// carry the public error object (apierror.From finds it).
var (
	ErrNotFound    = errors.New("limit override not found")
	ErrOrgNotFound = errors.New("organization not found")
	ErrKeyNotFound = errors.New("api key not found")
	// ErrNotMirrored means the change is saved in Postgres but Redis could
	// not be updated; the gateway sees it after the next Sync.
	ErrNotMirrored = errors.New("limit override saved but not yet applied: redis unavailable; the next sync applies it")
)

// Override is one limit override.
type Override struct {
	OrganizationID string `db:"organization_id"`
	Livemode       bool   `db:"livemode"`
	// APIKeyID is empty for an override of the whole organisation.
	APIKeyID string `db:"api_key_id"`
	// Policy is the name of a rate_limit policy or quota.
	Policy string `db:"policy"`
	// Quota is requests per WindowSeconds (policies) or per period (quotas).
	Quota         int64 `db:"quota"`
	WindowSeconds int64 `db:"window_seconds"`
	// Burst is the GCRA burst; nil means Quota.
	Burst     *int64    `db:"burst"`
	UpdatedAt time.Time `db:"updated_at"`
}

// MarshalJSON renders the override as the CLI prints it.
func (o Override) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Object         string `json:"object"`
		OrganizationID string `json:"organization"`
		Livemode       bool   `json:"livemode"`
		APIKeyID       string `json:"api_key,omitempty"`
		Policy         string `json:"policy"`
		Quota          int64  `json:"quota"`
		WindowSeconds  int64  `json:"window_seconds"`
		Burst          *int64 `json:"burst"`
		Applied        bool   `json:"applied"`
		Updated        int64  `json:"updated"`
	}{"limit_override", o.OrganizationID, o.Livemode, o.APIKeyID, o.Policy, o.Quota, o.WindowSeconds, o.Burst,
		o.CheckBounds() == nil, o.UpdatedAt.Unix()})
}

// CheckBounds is keyspace.CheckBounds for o. The gateway ignores an
// override out of bounds: one saved before the control plane checked them
// (Set refuses one now).
func (o Override) CheckBounds() error {
	var burst int64
	if o.Burst != nil {
		burst = *o.Burst
	}
	return keyspace.CheckBounds(o.Quota, o.WindowSeconds, burst)
}

// redisValue is the override as the gateway's script reads it.
func (o Override) redisValue() string {
	var burst int64
	if o.Burst != nil {
		burst = *o.Burst
	}
	return keyspace.Encode(keyspace.Override{Quota: o.Quota, Window: o.WindowSeconds, Burst: burst})
}

func (o Override) field() string {
	return keyspace.Field(keyspace.Env(o.Livemode), o.Policy, o.APIKeyID)
}

// DB is what the service needs from Postgres: a *pgxpool.Pool in production.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Service manages overrides.
type Service struct {
	db     DB
	rdb    redis.Cmdable
	prefix string
}

// New returns a service writing to db and mirroring into rdb under prefix
// ("" means keyspace.DefaultPrefix, what the gateway uses by default).
func New(db DB, rdb redis.Cmdable, prefix string) *Service {
	if prefix == "" {
		prefix = keyspace.DefaultPrefix
	}
	return &Service{db: db, rdb: rdb, prefix: prefix}
}

const columns = `organization_id, livemode, api_key_id, policy, quota, window_seconds, burst, updated_at`

// Set creates or replaces the override for (organisation, environment, key,
// policy) and mirrors it into Redis. On ErrNotMirrored the override is saved
// and returned; it applies after the next Sync.
func (s *Service) Set(ctx context.Context, actor audit.Actor, o Override) (Override, error) {
	if err := actor.Validate(); err != nil {
		return Override{}, err
	}
	if err := validate(&o); err != nil {
		return Override{}, err
	}
	var saved Override
	var mirrorErr error
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		if err := ownerExists(ctx, tx, o); err != nil {
			return err
		}
		rows, _ := tx.Query(ctx, `
			INSERT INTO limit_overrides (organization_id, livemode, api_key_id, policy, quota, window_seconds, burst)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (organization_id, livemode, api_key_id, policy) DO UPDATE
			SET quota = EXCLUDED.quota, window_seconds = EXCLUDED.window_seconds, burst = EXCLUDED.burst,
			    updated_at = now()
			RETURNING `+columns,
			o.OrganizationID, o.Livemode, o.APIKeyID, o.Policy, o.Quota, o.WindowSeconds, o.Burst)
		var err error
		saved, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Override])
		if err != nil {
			return fmt.Errorf("storing limit override: %w", err)
		}
		if err := audit.Record(ctx, tx, auditEntry(actor, saved, "limit_override.set", map[string]any{
			"quota": saved.Quota, "window_seconds": saved.WindowSeconds, "burst": saved.Burst,
		})); err != nil {
			return err
		}
		mirrorErr = s.mirror(ctx, saved) // under the row's lock: see mirror
		return nil
	})
	if err != nil {
		return Override{}, fmt.Errorf("setting limit override: %w", err)
	}
	if mirrorErr != nil {
		return saved, fmt.Errorf("%w (%v)", ErrNotMirrored, mirrorErr)
	}
	return saved, nil
}

// mirror writes o into Redis. Set and Delete write Redis inside their
// transaction, while they hold the override row's lock: a concurrent Set or
// Delete of the same override waits for that lock until this one commits,
// so the Redis writes happen in the order of the commits and Redis ends with
// what Postgres holds. Written after the commit, two concurrent Sets could
// mirror in the opposite order and leave the older value applied until the
// next Sync. A commit that fails after its write leaves Redis ahead of
// Postgres until then, which is the rarer case.
func (s *Service) mirror(ctx context.Context, o Override) error {
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, keyspace.Overrides(s.prefix, o.OrganizationID), o.field(), o.redisValue())
		p.SAdd(ctx, keyspace.Index(s.prefix), o.OrganizationID)
		return nil
	})
	return err
}

// MirrorKey writes the overrides of one API key into Redis, as Set does for
// one override: for a key whose overrides were written by another service
// (keys.Roll copies a rolled key's to its replacement). The rows are read
// FOR SHARE, so a concurrent Set or Delete of one of them mirrors after
// this and Redis ends with what Postgres holds.
func (s *Service) MirrorKey(ctx context.Context, org, keyID string) error {
	return pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, `SELECT `+columns+` FROM limit_overrides
			WHERE organization_id = $1 AND api_key_id = $2 FOR SHARE`, org, keyID)
		all, err := pgx.CollectRows(rows, pgx.RowToStructByName[Override])
		if err != nil {
			return fmt.Errorf("reading the key's limit overrides: %w", err)
		}
		for _, o := range all {
			if o.CheckBounds() != nil {
				continue // not applied; see SyncResult.Ignored
			}
			if err := s.mirror(ctx, o); err != nil {
				return fmt.Errorf("%w (%v)", ErrNotMirrored, err)
			}
		}
		return nil
	})
}

// Delete removes an override; the configured limit applies again on the
// next request.
func (s *Service) Delete(ctx context.Context, actor audit.Actor, org string, livemode bool, keyID, policy string) error {
	if err := actor.Validate(); err != nil {
		return err
	}
	var gone Override
	var mirrorErr error
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, `
			DELETE FROM limit_overrides
			WHERE organization_id = $1 AND livemode = $2 AND api_key_id = $3 AND policy = $4
			RETURNING `+columns, org, livemode, keyID, policy)
		var err error
		gone, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Override])
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound(ErrNotFound, "limit_override", describe(keyID, policy))
		}
		if err != nil {
			return fmt.Errorf("deleting limit override: %w", err)
		}
		if err := audit.Record(ctx, tx, auditEntry(actor, gone, "limit_override.deleted", map[string]any{
			"quota": gone.Quota, "window_seconds": gone.WindowSeconds, "burst": gone.Burst,
		})); err != nil {
			return err
		}
		mirrorErr = s.rdb.HDel(ctx, keyspace.Overrides(s.prefix, org), gone.field()).Err() // under the row's lock: see mirror
		return nil
	})
	if err != nil {
		return fmt.Errorf("deleting limit override: %w", err)
	}
	if mirrorErr != nil {
		return fmt.Errorf("%w (%v)", ErrNotMirrored, mirrorErr)
	}
	return nil
}

// List returns the organisation's overrides in one environment, the
// organisation's own first, then by key and policy.
func (s *Service) List(ctx context.Context, org string, livemode bool) ([]Override, error) {
	rows, _ := s.db.Query(ctx, `SELECT `+columns+` FROM limit_overrides
		WHERE organization_id = $1 AND livemode = $2
		ORDER BY api_key_id, policy`, org, livemode)
	out, err := pgx.CollectRows(rows, pgx.RowToStructByName[Override])
	if err != nil {
		return nil, fmt.Errorf("listing limit overrides: %w", err)
	}
	return out, nil
}

// Quotas returns the quotas the gateways enforce, as they publish them
// (keyspace.Published), by name; a spec not republished within
// keyspace.StaleAfter of now belongs to a configuration no longer running
// and is left out.
func (s *Service) Quotas(ctx context.Context, now time.Time) ([]keyspace.QuotaSpec, error) {
	all, err := s.rdb.HGetAll(ctx, keyspace.Published(s.prefix)).Result()
	if err != nil {
		return nil, fmt.Errorf("reading published quotas: %w", err)
	}
	var out []keyspace.QuotaSpec
	for name, v := range all {
		var q keyspace.QuotaSpec
		if json.Unmarshal([]byte(v), &q) != nil || q.Name != name || now.Sub(q.PublishedAt) > keyspace.StaleAfter {
			continue
		}
		out = append(out, q)
	}
	slices.SortFunc(out, func(a, b keyspace.QuotaSpec) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Names returns the names of the policies and quotas the running gateways
// enforce (keyspace.PublishedNames), sorted; none when no gateway has
// published within keyspace.StaleAfter of now (none has served a request,
// or Redis was flushed).
func (s *Service) Names(ctx context.Context, now time.Time) ([]string, error) {
	all, err := s.rdb.HGetAll(ctx, keyspace.PublishedNames(s.prefix)).Result()
	if err != nil {
		return nil, fmt.Errorf("reading published limit names: %w", err)
	}
	var out []string
	for name, v := range all {
		if at, err := strconv.ParseInt(v, 10, 64); err == nil && now.Sub(time.Unix(at, 0)) <= keyspace.StaleAfter {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out, nil
}

// QuotaUsed returns how many requests each of values — the organisation
// for a quota counted per organisation, API key ids for one counted per
// key — has used of q in org's environment, in the window containing now:
// the gateway's own counters, one round trip.
func (s *Service) QuotaUsed(ctx context.Context, org string, livemode bool, q keyspace.QuotaSpec,
	values []string, now time.Time) ([]int64, error) {
	start, _ := q.Window(now)
	cmds := make([]*redis.SliceCmd, len(values))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, v := range values {
			cmds[i] = p.HMGet(ctx, keyspace.Counter(s.prefix, keyspace.Tag(org, ""), keyspace.Env(livemode), q.Name, v),
				keyspace.CounterWindow, keyspace.CounterUsed)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading quota counters: %w", err)
	}
	used := make([]int64, len(values))
	for i, c := range cmds {
		// A counter of an earlier window is what the next request resets.
		vals := c.Val()
		if w, _ := vals[0].(string); w == strconv.FormatInt(start.Unix(), 10) {
			n, _ := vals[1].(string)
			used[i], _ = strconv.ParseInt(n, 10, 64)
		}
	}
	return used, nil
}

// SyncResult says what a Sync changed.
type SyncResult struct {
	Organizations int `json:"organizations"` // with overrides
	Overrides     int `json:"overrides"`
	Removed       int `json:"removed"` // stale fields and hashes deleted
	// Ignored are rows out of keyspace.CheckBounds's bounds, saved before
	// the control plane checked them: the gateway ignores such a value, so
	// it is not mirrored; delete or set the override again.
	Ignored []string `json:"ignored,omitempty"`
}

// syncBatch bounds the organisations handled per Redis pipeline.
const syncBatch = 500

// Sync makes Redis mirror Postgres exactly: every override written, every
// field or hash without a row removed. Each command touches one key, so it
// also works on a Redis Cluster; the gateway may briefly see a mix of old
// and new fields of one organisation, each of them valid on its own.
//
// It holds a SHARE lock on the table until Redis is written, so a Set or
// Delete waits for it, and it for them (they mirror before they commit):
// a change made while Sync runs is neither undone nor removed as stale.
func (s *Service) Sync(ctx context.Context) (res SyncResult, err error) {
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		res, err = s.sync(ctx, tx)
		return err
	})
	return res, err
}

// syncLockTimeout bounds Sync's wait for its lock (a Postgres interval).
var syncLockTimeout = "2s"

func (s *Service) sync(ctx context.Context, tx pgx.Tx) (SyncResult, error) {
	// A lock request waiting behind a long transaction would queue every
	// Set, Delete and Roll behind it: give up instead, and try at the next
	// tick.
	if _, err := tx.Exec(ctx, `SELECT set_config('lock_timeout', $1, true)`, syncLockTimeout); err != nil {
		return SyncResult{}, fmt.Errorf("locking limit overrides: %w", err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE limit_overrides IN SHARE MODE`); err != nil {
		return SyncResult{}, fmt.Errorf("locking limit overrides: %w", err)
	}
	rows, _ := tx.Query(ctx, `SELECT `+columns+` FROM limit_overrides ORDER BY organization_id, livemode, api_key_id, policy`)
	all, err := pgx.CollectRows(rows, pgx.RowToStructByName[Override])
	if err != nil {
		return SyncResult{}, fmt.Errorf("reading limit overrides: %w", err)
	}
	want := map[string]map[string]string{}
	var ignored []string
	for _, o := range all {
		if o.CheckBounds() != nil {
			ignored = append(ignored, o.OrganizationID+" "+o.field())
			continue
		}
		if want[o.OrganizationID] == nil {
			want[o.OrganizationID] = map[string]string{}
		}
		want[o.OrganizationID][o.field()] = o.redisValue()
	}
	indexed, err := s.rdb.SMembers(ctx, keyspace.Index(s.prefix)).Result()
	if err != nil {
		return SyncResult{}, fmt.Errorf("reading the overrides index: %w", err)
	}
	orgs := make([]string, 0, len(want)+len(indexed))
	for org := range want {
		orgs = append(orgs, org)
	}
	for _, org := range indexed {
		if want[org] == nil {
			orgs = append(orgs, org)
		}
	}

	res := SyncResult{Organizations: len(want), Overrides: len(all) - len(ignored), Ignored: ignored}
	for start := 0; start < len(orgs); start += syncBatch {
		batch := orgs[start:min(start+syncBatch, len(orgs))]
		removed, err := s.syncBatch(ctx, batch, want)
		if err != nil {
			return res, err
		}
		res.Removed += removed
	}
	return res, nil
}

func (s *Service) syncBatch(ctx context.Context, orgs []string, want map[string]map[string]string) (int, error) {
	fields := make([]*redis.StringSliceCmd, len(orgs))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, org := range orgs {
			fields[i] = p.HKeys(ctx, keyspace.Overrides(s.prefix, org))
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("reading overrides hashes: %w", err)
	}
	removed := 0
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, org := range orgs {
			hash := keyspace.Overrides(s.prefix, org)
			w := want[org]
			if len(w) == 0 {
				p.Del(ctx, hash)
				p.SRem(ctx, keyspace.Index(s.prefix), org)
				removed += len(fields[i].Val())
				continue
			}
			var stale []string
			for _, f := range fields[i].Val() {
				if _, ok := w[f]; !ok {
					stale = append(stale, f)
				}
			}
			if len(stale) > 0 {
				p.HDel(ctx, hash, stale...)
				removed += len(stale)
			}
			p.HSet(ctx, hash, w)
			p.SAdd(ctx, keyspace.Index(s.prefix), org)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("writing overrides hashes: %w", err)
	}
	return removed, nil
}

// Syncer runs Sync periodically, so Redis converges on Postgres after any
// failure to mirror a change.
type Syncer struct {
	Service  *Service
	Interval time.Duration // default 1 minute
	Logger   *zap.Logger   // may be nil
}

// Run syncs at once and then every Interval until ctx ends. Failures are
// logged and retried at the next tick; Run returns nil when ctx ends.
func (w *Syncer) Run(ctx context.Context) error {
	interval := w.Interval
	if interval <= 0 {
		interval = time.Minute
	}
	logger := w.Logger
	if logger == nil {
		logger = zap.NewNop()
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		res, err := w.Service.Sync(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			logger.Warn("syncing limit overrides into redis", zap.Error(err))
		case len(res.Ignored) > 0:
			logger.Warn("limit overrides out of bounds are not applied; delete or set them again",
				zap.Strings("overrides", res.Ignored), zap.Int("removed", res.Removed))
		case res.Removed > 0:
			logger.Info("synced limit overrides into redis", zap.Int("organizations", res.Organizations),
				zap.Int("overrides", res.Overrides), zap.Int("removed", res.Removed))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// validate checks o and normalises it (a zero burst means none).
func validate(o *Override) error {
	switch {
	case o.OrganizationID == "":
		return apierror.ParameterMissing("organization")
	case !keyspace.ValidName(o.Policy):
		return apierror.ParameterInvalid("policy",
			"The policy name must be 1 to 64 letters, digits, '.', '_' or '-' and name a policy or quota of the gateway's rate_limit configuration.")
	case o.APIKeyID != "" && !strings.HasPrefix(o.APIKeyID, "key_"):
		return apierror.ParameterInvalid("api_key", "API key ids start with key_.")
	case o.Quota <= 0:
		return apierror.ParameterInvalid("quota", "The quota must be a positive number of requests.")
	case o.WindowSeconds <= 0:
		return apierror.ParameterInvalid("window_seconds", "The window must be a positive number of seconds.")
	case o.Burst != nil && *o.Burst < 0:
		return apierror.ParameterInvalid("burst", "The burst must be a positive number of requests.")
	}
	if o.Burst != nil && *o.Burst == 0 {
		o.Burst = nil
	}
	if err := o.CheckBounds(); err != nil {
		be := err.(*keyspace.BoundError)
		param := map[string]string{"quota": "quota", "window": "window_seconds", "burst": "burst"}[be.Field]
		return apierror.ParameterInvalid(param, fmt.Sprintf("The %s is out of bounds: %s.", param, be.Reason))
	}
	return nil
}

// ownerExists checks the organisation and, for a key override, that the key
// is the organisation's and in the override's environment: another tenant's
// key, or a sandbox key for a live override, is not found.
func ownerExists(ctx context.Context, tx pgx.Tx, o Override) error {
	var orgOK, keyOK bool
	err := tx.QueryRow(ctx, `
		SELECT EXISTS (SELECT 1 FROM organizations WHERE id = $1),
		       EXISTS (SELECT 1 FROM api_keys WHERE id = $2 AND organization_id = $1 AND environment = $3)`,
		o.OrganizationID, o.APIKeyID, keyspace.Env(o.Livemode)).Scan(&orgOK, &keyOK)
	if err != nil {
		return fmt.Errorf("checking organization and key: %w", err)
	}
	if !orgOK {
		return notFound(ErrOrgNotFound, "organization", o.OrganizationID)
	}
	if o.APIKeyID != "" && !keyOK {
		return notFound(ErrKeyNotFound, "api_key", o.APIKeyID)
	}
	return nil
}

func auditEntry(actor audit.Actor, o Override, action string, data map[string]any) audit.Entry {
	live := o.Livemode
	data["policy"] = o.Policy
	targetType, targetID := "organization", o.OrganizationID
	if o.APIKeyID != "" {
		targetType, targetID = "api_key", o.APIKeyID
	}
	return audit.Entry{
		OrganizationID: o.OrganizationID, Livemode: &live, Actor: actor, Action: action,
		TargetType: targetType, TargetID: targetID, Data: data,
	}
}

func describe(keyID, policy string) string {
	if keyID == "" {
		return policy
	}
	return policy + " for " + keyID
}

// Error pairs a sentinel with the public error object.
type Error struct {
	sentinel error
	api      *apierror.Error
}

func (e *Error) Error() string   { return e.api.Message }
func (e *Error) Unwrap() []error { return []error{e.sentinel, e.api} }

func notFound(sentinel error, object, id string) error {
	return &Error{sentinel: sentinel, api: apierror.NotFound(object, id)}
}
