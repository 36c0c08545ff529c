// Package keys manages an organisation's API keys: creating them (the full
// key is returned exactly once), listing, rolling, revoking and changing
// their expiry or IP allowlist. The admin CLI uses it today and the dashboard
// will tomorrow, so every method takes the acting principal and the
// organisation and environment explicitly, and every query is scoped by
// them: another tenant's key is simply not found.
//
// Each change runs in one transaction that also writes the audit entry and,
// when an existing key changes, notifies the gateways (see NotifyChannel).
package keys

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/apikey"
	"github.com/gatehouse/gatehouse/internal/ids"
)

// NotifyChannel is the Postgres channel on which every change to an existing
// key is announced, with the lower-case hex SHA-256 of the key (the
// key_hash column, as apikey.Hash computes it) as the payload. Gateways
// LISTEN on it and evict that key from their caches. The notification is
// sent inside the changing transaction, so Postgres delivers it only on
// commit and never for a change that rolled back.
const NotifyChannel = "gatehouse_api_keys"

// Limits on what a key may carry.
const (
	MaxNameLen     = 100
	MaxIPAllowlist = 100
	// DefaultRollGrace is how long a rolled key keeps working by default,
	// so deployments can switch to the new key without an outage.
	DefaultRollGrace = 24 * time.Hour
)

// Sentinel errors, for errors.Is. The errors the service returns also carry
// the public error object (apierror.From finds it).
var (
	ErrNotFound      = errors.New("api key not found")
	ErrRevoked       = errors.New("api key is revoked")
	ErrAlreadyRolled = errors.New("api key was already rolled")
	ErrExpired       = errors.New("api key has expired")
	ErrOrgNotFound   = errors.New("organization not found")
)

// Key is an API key as listings show it: never the key, never its hash.
type Key struct {
	ID             string             `db:"id"`
	OrganizationID string             `db:"organization_id"`
	Environment    apikey.Environment `db:"environment"`
	Kind           apikey.Kind        `db:"kind"`
	Name           string             `db:"name"`
	Prefix         string             `db:"prefix"` // e.g. "sk_test_Ab3x"
	Last4          string             `db:"last4"`
	Scopes         []string           `db:"scopes"` // empty for secret keys
	IPAllowlist    []netip.Prefix     `db:"ip_allowlist"`
	ExpiresAt      *time.Time         `db:"expires_at"`
	RevokedAt      *time.Time         `db:"revoked_at"`
	LastUsedAt     *time.Time         `db:"last_used_at"`
	RolledTo       *string            `db:"rolled_to"`
	CreatedBy      string             `db:"created_by"`
	CreatedAt      time.Time          `db:"created_at"`
}

// Key states, as Status reports them.
const (
	StatusActive  = "active"
	StatusExpired = "expired"
	StatusRevoked = "revoked"
)

// Status is the key's state at now.
func (k Key) Status(now time.Time) string {
	switch {
	case k.RevokedAt != nil:
		return StatusRevoked
	case k.ExpiresAt != nil && !now.Before(*k.ExpiresAt):
		return StatusExpired
	}
	return StatusActive
}

// Livemode reports whether the key acts on live data.
func (k Key) Livemode() bool { return k.Environment == apikey.Live }

// Masked is how the key is shown once its secret is gone: prefix…last4.
func (k Key) Masked() string { return k.Prefix + "…" + k.Last4 }

// Label names the key for people: its name and Masked, or Masked alone.
func (k Key) Label() string {
	if k.Name == "" {
		return k.Masked()
	}
	return k.Name + " (" + k.Masked() + ")"
}

// Created is a new key together with its secret, which is not stored and
// must be shown to the caller once.
type Created struct {
	Key
	Secret string
}

// DB is what the service needs from Postgres: a *pgxpool.Pool in
// production. A pgx.Tx also satisfies it (its Begin opens a savepoint), so
// callers can compose key changes into a larger transaction.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Service manages API keys.
type Service struct {
	db     DB
	now    func() time.Time
	limits LimitsMirror
}

// LimitsMirror writes a key's limit overrides into the Redis the gateways
// enforce them from: *limits.Service.
type LimitsMirror interface {
	MirrorKey(ctx context.Context, org, keyID string) error
}

// WithLimits makes Roll mirror the limit overrides it copies to the new key
// into Redis at once; without it they apply from the next limits Sync.
func (s *Service) WithLimits(m LimitsMirror) *Service {
	s.limits = m
	return s
}

// New returns a service over db; now may be nil for time.Now.
func New(db DB, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{db: db, now: now}
}

// Now is the service's clock, so callers computing expiries agree with it.
func (s *Service) Now() time.Time { return s.now() }

// CreateParams describe a new key.
type CreateParams struct {
	Kind        apikey.Kind // secret or restricted
	Name        string
	Scopes      []string       // restricted keys: at least one of apikey.Scopes
	IPAllowlist []netip.Prefix // empty: any address
	ExpiresAt   *time.Time     // nil: never
}

const keyColumns = `id, organization_id, environment, kind, name, prefix, last4, scopes, ip_allowlist,
	expires_at, revoked_at, last_used_at, rolled_to, created_by, created_at`

// Create makes a key in org's env. The returned Secret is the only copy.
func (s *Service) Create(ctx context.Context, actor audit.Actor, org string, env apikey.Environment, p CreateParams) (Created, error) {
	if err := actor.Validate(); err != nil {
		return Created{}, err
	}
	if err := validEnvironment(env); err != nil {
		return Created{}, err
	}
	scopes, err := validScopes(p.Kind, p.Scopes)
	if err != nil {
		return Created{}, err
	}
	name := strings.TrimSpace(p.Name)
	if err := apierror.CheckName("name", name); err != nil {
		return Created{}, err
	}
	if utf8.RuneCountInString(name) > MaxNameLen {
		return Created{}, apierror.ParameterInvalid("name", fmt.Sprintf("The name must be at most %d characters.", MaxNameLen))
	}
	allow, err := normalizeAllowlist(p.IPAllowlist)
	if err != nil {
		return Created{}, err
	}
	now := s.now()
	if p.ExpiresAt != nil && !p.ExpiresAt.After(now) {
		return Created{}, apierror.ParameterInvalid("expires_at", "The expiry must be in the future.")
	}

	var c Created
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		if err := orgExists(ctx, tx, org); err != nil {
			return err
		}
		c, err = insert(ctx, tx, actor, org, env, p.Kind, name, scopes, allow, p.ExpiresAt, now)
		if err != nil {
			return err
		}
		return audit.Record(ctx, tx, auditEntry(actor, c.Key, "api_key.created", now, map[string]any{
			"kind": c.Kind, "name": c.Name, "scopes": c.Scopes, "ip_allowlist": prefixStrings(c.IPAllowlist),
			"expires_at": unixOrNil(c.ExpiresAt),
		}))
	})
	if err != nil {
		return Created{}, fmt.Errorf("creating api key: %w", err)
	}
	return c, nil
}

// insert generates and stores a key; the caller audits it.
func insert(ctx context.Context, tx pgx.Tx, actor audit.Actor, org string, env apikey.Environment, kind apikey.Kind,
	name string, scopes []string, allow []netip.Prefix, expires *time.Time, now time.Time) (Created, error) {
	secret, err := apikey.Generate(kind, env)
	if err != nil {
		return Created{}, fmt.Errorf("generating key: %w", err)
	}
	hash := apikey.Hash(secret)
	rows, _ := tx.Query(ctx, `
		INSERT INTO api_keys (id, organization_id, environment, kind, name, prefix, key_hash, last4,
		                      scopes, ip_allowlist, expires_at, created_by, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
		RETURNING `+keyColumns,
		ids.NewAt(ids.Key, now), org, string(env), string(kind), name, apikey.DisplayPrefix(secret), hash[:],
		apikey.Last4(secret), scopes, allow, expires, actor.Ref(), now)
	k, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Key])
	if err != nil {
		return Created{}, fmt.Errorf("storing key: %w", err)
	}
	return Created{Key: k, Secret: secret}, nil
}

// List returns org's keys in env, newest first, revoked ones included.
func (s *Service) List(ctx context.Context, org string, env apikey.Environment) ([]Key, error) {
	if err := validEnvironment(env); err != nil {
		return nil, err
	}
	rows, _ := s.db.Query(ctx, `SELECT `+keyColumns+` FROM api_keys
		WHERE organization_id = $1 AND environment = $2
		ORDER BY created_at DESC, id DESC`, org, string(env))
	keys, err := pgx.CollectRows(rows, pgx.RowToStructByName[Key])
	if err != nil {
		return nil, fmt.Errorf("listing api keys: %w", err)
	}
	return keys, nil
}

// Get returns one of org's keys in env.
func (s *Service) Get(ctx context.Context, org string, env apikey.Environment, id string) (Key, error) {
	if err := validEnvironment(env); err != nil {
		return Key{}, err
	}
	rows, _ := s.db.Query(ctx, `SELECT `+keyColumns+` FROM api_keys
		WHERE id = $1 AND organization_id = $2 AND environment = $3`, id, org, string(env))
	k, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Key])
	if errors.Is(err, pgx.ErrNoRows) {
		return Key{}, notFound(id)
	}
	if err != nil {
		return Key{}, fmt.Errorf("loading api key: %w", err)
	}
	return k, nil
}

// Owner is where a key lives.
type Owner struct {
	OrganizationID string
	Environment    apikey.Environment
}

// Locate finds which organisation and environment a key id belongs to. It
// is for the operator CLI only, which acts across tenants; anything serving
// a tenant must use the scoped methods.
func (s *Service) Locate(ctx context.Context, id string) (Owner, error) {
	var o Owner
	err := s.db.QueryRow(ctx, `SELECT organization_id, environment FROM api_keys WHERE id = $1`, id).
		Scan(&o.OrganizationID, &o.Environment)
	if errors.Is(err, pgx.ErrNoRows) {
		return Owner{}, notFound(id)
	}
	if err != nil {
		return Owner{}, fmt.Errorf("locating api key: %w", err)
	}
	return o, nil
}

// Rolled is the outcome of Roll: the replacement key (with its secret) and
// the old key as it now stands, expiring at the end of the grace period.
type Rolled struct {
	New Created
	Old Key
}

// Roll replaces a key: it creates a new key with the same kind, name,
// scopes, allowlist and expiry, and makes the old one expire after grace
// (zero: immediately). An earlier expiry already set on the old key is kept,
// and an expired key cannot be rolled, so rolling never extends a key's
// life: a temporary key's replacement is just as temporary.
func (s *Service) Roll(ctx context.Context, actor audit.Actor, org string, env apikey.Environment, id string, grace time.Duration) (Rolled, error) {
	if err := actor.Validate(); err != nil {
		return Rolled{}, err
	}
	if err := validEnvironment(env); err != nil {
		return Rolled{}, err
	}
	if grace < 0 {
		return Rolled{}, apierror.ParameterInvalid("expires_in", "The grace period cannot be negative.")
	}
	now := s.now()
	expires := now.Add(grace)
	var out Rolled
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		old, err := lock(ctx, tx, org, env, id)
		if err != nil {
			return err
		}
		if old.RevokedAt != nil {
			return invalidState(ErrRevoked, "The API key "+id+" is revoked; create a new key instead.")
		}
		if old.RolledTo != nil {
			return invalidState(ErrAlreadyRolled, "The API key "+id+" was already rolled to "+*old.RolledTo+".")
		}
		if old.ExpiresAt != nil && !old.ExpiresAt.After(now) {
			return invalidState(ErrExpired, "The API key "+id+" has expired; create a new key instead.")
		}
		if old.ExpiresAt != nil && old.ExpiresAt.Before(expires) {
			expires = *old.ExpiresAt
		}
		out.New, err = insert(ctx, tx, actor, org, env, old.Kind, old.Name, old.Scopes, old.IPAllowlist, old.ExpiresAt, now)
		if err != nil {
			return err
		}
		rows, _ := tx.Query(ctx, `UPDATE api_keys SET expires_at = $2, rolled_to = $3 WHERE id = $1
			RETURNING `+keyColumns, id, expires, out.New.ID)
		out.Old, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Key])
		if err != nil {
			return fmt.Errorf("expiring rolled key: %w", err)
		}
		// The key's own rate limits carry over like its scopes; they
		// reach Redis after the commit (WithLimits), or at the next Sync.
		rows, _ = tx.Query(ctx, `
			INSERT INTO limit_overrides (organization_id, livemode, api_key_id, policy, quota, window_seconds, burst)
			SELECT organization_id, livemode, $2, policy, quota, window_seconds, burst
			FROM limit_overrides WHERE organization_id = $1 AND api_key_id = $3
			RETURNING policy, quota, window_seconds, burst`,
			org, out.New.ID, id)
		copied, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (map[string]any, error) {
			var policy string
			var quota, window int64
			var burst *int64
			err := row.Scan(&policy, &quota, &window, &burst)
			return map[string]any{"policy": policy, "quota": quota, "window_seconds": window, "burst": burst}, err
		})
		if err != nil {
			return fmt.Errorf("copying the rolled key's limit overrides: %w", err)
		}
		data := map[string]any{
			"kind": out.New.Kind, "name": out.New.Name, "scopes": out.New.Scopes,
			"ip_allowlist": prefixStrings(out.New.IPAllowlist), "expires_at": unixOrNil(old.ExpiresAt), "rolled_from": id,
		}
		if len(copied) > 0 {
			data["limit_overrides"] = copied // the audit trail shows the new key's limits came with it
		}
		err = audit.Record(ctx, tx, auditEntry(actor, out.New.Key, "api_key.created", now, data))
		if err != nil {
			return err
		}
		err = audit.Record(ctx, tx, auditEntry(actor, out.Old, "api_key.rolled", now, map[string]any{
			"rolled_to": out.New.ID, "new_prefix": out.New.Prefix, "new_last4": out.New.Last4,
			"expires_at": change(unixOrNil(old.ExpiresAt), unixOrNil(out.Old.ExpiresAt)),
		}))
		if err != nil {
			return err
		}
		return notify(ctx, tx, id)
	})
	if err != nil {
		return Rolled{}, fmt.Errorf("rolling api key: %w", err)
	}
	if s.limits != nil {
		// Best effort: the roll is done and its secret must reach the
		// caller; a failed mirror is repaired by the next limits Sync.
		mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_ = s.limits.MirrorKey(mctx, org, out.New.ID)
		cancel()
	}
	return out, nil
}

// Revoke disables a key immediately.
func (s *Service) Revoke(ctx context.Context, actor audit.Actor, org string, env apikey.Environment, id string) (Key, error) {
	return s.update(ctx, actor, org, env, id, "revoking", func(ctx context.Context, tx pgx.Tx, old Key, now time.Time) (Key, string, map[string]any, error) {
		rows, _ := tx.Query(ctx, `UPDATE api_keys SET revoked_at = $2 WHERE id = $1 RETURNING `+keyColumns, id, now)
		k, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Key])
		return k, "api_key.revoked", map[string]any{"revoked_at": now.Unix()}, err
	})
}

// SetExpiry sets when a key stops working; nil removes the expiry. A time
// not after now expires the key at once. It never brings a key back: an
// expired key's expiry cannot change, and a rolled key's can only be
// brought forward, so a replaced secret still stops working when its grace
// period ends.
func (s *Service) SetExpiry(ctx context.Context, actor audit.Actor, org string, env apikey.Environment, id string, at *time.Time) (Key, error) {
	return s.update(ctx, actor, org, env, id, "setting api key expiry", func(ctx context.Context, tx pgx.Tx, old Key, now time.Time) (Key, string, map[string]any, error) {
		if old.ExpiresAt != nil && !old.ExpiresAt.After(now) {
			return Key{}, "", nil, invalidState(ErrExpired, "The API key "+id+" has expired and cannot be brought back; create a new key instead.")
		}
		if old.RolledTo != nil && (at == nil || at.After(*old.ExpiresAt)) {
			return Key{}, "", nil, invalidState(ErrAlreadyRolled, "The API key "+id+" was rolled to "+*old.RolledTo+
				"; its expiry ("+old.ExpiresAt.UTC().Format(time.RFC3339)+") can be brought forward, not postponed or removed.")
		}
		if at != nil && at.Before(now) {
			at = &now
		}
		rows, _ := tx.Query(ctx, `UPDATE api_keys SET expires_at = $2 WHERE id = $1 RETURNING `+keyColumns, id, at)
		k, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Key])
		return k, "api_key.updated", map[string]any{
			"expires_at": change(unixOrNil(old.ExpiresAt), unixOrNil(k.ExpiresAt)),
		}, err
	})
}

// SetIPAllowlist replaces the networks a key may be used from; empty allows
// every address.
func (s *Service) SetIPAllowlist(ctx context.Context, actor audit.Actor, org string, env apikey.Environment, id string, allow []netip.Prefix) (Key, error) {
	allow, err := normalizeAllowlist(allow)
	if err != nil {
		return Key{}, err
	}
	return s.update(ctx, actor, org, env, id, "setting api key allowlist", func(ctx context.Context, tx pgx.Tx, old Key, now time.Time) (Key, string, map[string]any, error) {
		rows, _ := tx.Query(ctx, `UPDATE api_keys SET ip_allowlist = $2 WHERE id = $1 RETURNING `+keyColumns, id, allow)
		k, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Key])
		return k, "api_key.updated", map[string]any{
			"ip_allowlist": change(prefixStrings(old.IPAllowlist), prefixStrings(k.IPAllowlist)),
		}, err
	})
}

// mutation changes a locked, unrevoked key and says how to audit it.
type mutation func(ctx context.Context, tx pgx.Tx, old Key, now time.Time) (Key, string, map[string]any, error)

// update is the shared shape of every change to an existing key: lock it
// within org and env, refuse revoked keys, change, audit, notify.
func (s *Service) update(ctx context.Context, actor audit.Actor, org string, env apikey.Environment, id, what string, m mutation) (Key, error) {
	if err := actor.Validate(); err != nil {
		return Key{}, err
	}
	if err := validEnvironment(env); err != nil {
		return Key{}, err
	}
	now := s.now()
	var k Key
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		old, err := lock(ctx, tx, org, env, id)
		if err != nil {
			return err
		}
		if old.RevokedAt != nil {
			return invalidState(ErrRevoked, "The API key "+id+" is already revoked.")
		}
		var action string
		var data map[string]any
		k, action, data, err = m(ctx, tx, old, now)
		if err != nil {
			return err
		}
		if err := audit.Record(ctx, tx, auditEntry(actor, k, action, now, data)); err != nil {
			return err
		}
		return notify(ctx, tx, id)
	})
	if err != nil {
		return Key{}, fmt.Errorf("%s: %w", what, err)
	}
	return k, nil
}

// lock loads a key for update, scoped to its tenant and environment.
func lock(ctx context.Context, tx pgx.Tx, org string, env apikey.Environment, id string) (Key, error) {
	rows, _ := tx.Query(ctx, `SELECT `+keyColumns+` FROM api_keys
		WHERE id = $1 AND organization_id = $2 AND environment = $3 FOR UPDATE`, id, org, string(env))
	k, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Key])
	if errors.Is(err, pgx.ErrNoRows) {
		return Key{}, notFound(id)
	}
	if err != nil {
		return Key{}, fmt.Errorf("loading api key: %w", err)
	}
	return k, nil
}

// notify tells the gateways that the key changed; see NotifyChannel.
func notify(ctx context.Context, tx pgx.Tx, id string) error {
	var hash []byte
	if err := tx.QueryRow(ctx, `SELECT key_hash FROM api_keys WHERE id = $1`, id).Scan(&hash); err != nil {
		return fmt.Errorf("loading key hash: %w", err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, NotifyChannel, hex.EncodeToString(hash)); err != nil {
		return fmt.Errorf("notifying gateways: %w", err)
	}
	return nil
}

func orgExists(ctx context.Context, tx pgx.Tx, org string) error {
	var ok bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM organizations WHERE id = $1)`, org).Scan(&ok); err != nil {
		return fmt.Errorf("checking organization: %w", err)
	}
	if !ok {
		return orgNotFound(org)
	}
	return nil
}

func orgNotFound(org string) error {
	return &Error{sentinel: ErrOrgNotFound, api: apierror.NotFound("organization", org)}
}

func auditEntry(actor audit.Actor, k Key, action string, now time.Time, data map[string]any) audit.Entry {
	live := k.Livemode()
	data["prefix"] = k.Prefix
	data["last4"] = k.Last4
	data["environment"] = k.Environment
	return audit.Entry{
		OrganizationID: k.OrganizationID, Livemode: &live, Actor: actor, Action: action,
		TargetType: "api_key", TargetID: k.ID, Data: data, CreatedAt: now,
	}
}

func change(from, to any) map[string]any { return map[string]any{"from": from, "to": to} }

func unixOrNil(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.Unix()
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

func validEnvironment(env apikey.Environment) error {
	if env != apikey.Sandbox && env != apikey.Live {
		return apierror.ParameterInvalid("environment", fmt.Sprintf("Unknown environment %q; use sandbox or live.", env))
	}
	return nil
}

// validScopes checks scopes against the kind and returns them de-duplicated
// in the order of apikey.Scopes.
func validScopes(kind apikey.Kind, scopes []string) ([]string, error) {
	switch kind {
	case apikey.Secret:
		if len(scopes) > 0 {
			return nil, apierror.ParameterInvalid("scopes", "Secret keys have every scope; only restricted keys take scopes.")
		}
		return []string{}, nil
	case apikey.Restricted:
	default:
		return nil, apierror.ParameterInvalid("kind", fmt.Sprintf("Unknown key kind %q; use secret or restricted.", kind))
	}
	if len(scopes) == 0 {
		return nil, apierror.ParameterInvalid("scopes",
			"A restricted key needs at least one scope. Valid scopes: "+strings.Join(apikey.Scopes, ", ")+".")
	}
	for _, sc := range scopes {
		if !apikey.ValidScope(sc) {
			return nil, apierror.ParameterInvalid("scopes",
				fmt.Sprintf("Unknown scope %q. Valid scopes: %s.", sc, strings.Join(apikey.Scopes, ", ")))
		}
	}
	out := make([]string, 0, len(scopes))
	for _, sc := range apikey.Scopes {
		if slices.Contains(scopes, sc) {
			out = append(out, sc)
		}
	}
	return out, nil
}

// normalizeAllowlist masks host bits (Postgres cidr refuses them) and drops
// duplicates.
func normalizeAllowlist(in []netip.Prefix) ([]netip.Prefix, error) {
	if len(in) > MaxIPAllowlist {
		return nil, apierror.ParameterInvalid("ip_allowlist", fmt.Sprintf("An allowlist holds at most %d networks.", MaxIPAllowlist))
	}
	out := make([]netip.Prefix, 0, len(in))
	for _, p := range in {
		if !p.IsValid() {
			return nil, apierror.ParameterInvalid("ip_allowlist", "The allowlist contains an invalid network.")
		}
		p = p.Masked()
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// ParseIPAllowlist parses comma-separated networks in CIDR notation; a bare
// address means that address alone. Text naming no network ("", " , ") is
// refused: read as an empty allowlist it would open the key to any address.
func ParseIPAllowlist(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, apierror.ParameterInvalid("ip_allowlist", fmt.Sprintf("%q is not an IP address or CIDR network.", f))
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, apierror.ParameterInvalid("ip_allowlist", fmt.Sprintf("%q is not an IP address or CIDR network.", f))
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, apierror.ParameterInvalid("ip_allowlist", "The allowlist names no network.")
	}
	return normalizeAllowlist(out)
}

// Error is a domain error that is both a sentinel (errors.Is) and the public
// error object (errors.As / apierror.From).
type Error struct {
	sentinel error
	api      *apierror.Error
}

func (e *Error) Error() string   { return e.api.Message }
func (e *Error) Unwrap() []error { return []error{e.sentinel, e.api} }

func notFound(id string) error {
	return &Error{sentinel: ErrNotFound, api: apierror.NotFound("api_key", id)}
}

func invalidState(sentinel error, msg string) error {
	return &Error{sentinel: sentinel, api: apierror.InvalidRequest("parameter_invalid", "id", msg)}
}
