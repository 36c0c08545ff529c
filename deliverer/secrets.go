package deliverer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/internal/secretbox"
	"github.com/gatehouse/gatehouse/internal/whsign"
)

// errNoSecret: the endpoint has no unexpired signing secret; sending
// unsigned is never an option.
var errNoSecret = errors.New("endpoint has no unexpired signing secret")

// errSecretsUnreadable: Postgres did not answer the secrets query; the
// attempt waits for it (resPostponed) rather than failing.
var errSecretsUnreadable = errors.New("loading signing secrets")

// secretCache decrypts each endpoint's signing secrets once and keeps them
// while the endpoint's secrets version (secretsVersionSQL) stays the same,
// re-reading them at the latest after ttl. Every attempt knows the version
// as of a read no older than EndpointTTL — its claim, its fan-out or the
// endpoint check before it — so a rotation (a new secret, the old ones'
// expiry moved) reaches every delivery whose endpoint was read after the
// rotation committed. Expiry is checked on every use too, against the
// expires_at the cache holds: a rotation that expires the old secret at once
// is seen by deliveries whose endpoint was read after it (within
// EndpointTTL, 1 s by default), and until then the old secret can still sign.
type secretCache struct {
	db  *pgxpool.Pool
	box *secretbox.Box
	ttl time.Duration

	mu      sync.Mutex
	entries map[string]*secretEntry
}

type secretEntry struct {
	mu       sync.Mutex // one load at a time per endpoint
	loadedAt time.Time  // real clock, taken before the read
	version  string
	keys     []signingKey
}

type signingKey struct {
	key     []byte
	expires *time.Time
}

func newSecretCache(db *pgxpool.Pool, box *secretbox.Box, ttl time.Duration) *secretCache {
	return &secretCache{db: db, box: box, ttl: ttl, entries: map[string]*secretEntry{}}
}

// keys returns the HMAC keys to sign with for endpoint at now, newest
// first. ep is what is known of the endpoint: an entry loaded before ep was
// read, under another secrets version, predates a change and is reloaded.
// (An entry loaded after ep was read is newer than ep's version, not stale.)
func (c *secretCache) keys(ctx context.Context, endpoint string, ep endpointSnap, now time.Time) ([][]byte, error) {
	c.mu.Lock()
	e := c.entries[endpoint]
	if e == nil {
		e = &secretEntry{}
		c.entries[endpoint] = e
	}
	c.mu.Unlock()

	e.mu.Lock()
	defer e.mu.Unlock()
	// The cache runs on the real clock: a test clock jumping days ahead
	// must not make every attempt reload.
	if e.loadedAt.IsZero() || time.Since(e.loadedAt) > c.ttl ||
		(e.version != ep.Secrets && e.loadedAt.Before(ep.ReadAt)) {
		loadedAt := time.Now()
		ks, version, err := c.load(ctx, endpoint)
		if err != nil {
			return nil, err
		}
		e.keys, e.version, e.loadedAt = ks, version, loadedAt
	}
	out := make([][]byte, 0, len(e.keys))
	for _, k := range e.keys {
		if k.expires == nil || k.expires.After(now) {
			out = append(out, k.key)
		}
	}
	if len(out) == 0 {
		return nil, errNoSecret
	}
	return out, nil
}

// load reads endpoint's secrets and, in the same statement (so from the
// same snapshot), their version.
func (c *secretCache) load(ctx context.Context, endpoint string) ([]signingKey, string, error) {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	rows, err := c.db.Query(ctx, `
		SELECT id, ciphertext, expires_at, `+secretsVersionSQL("$1")+`
		FROM webhook_endpoint_secrets
		WHERE endpoint_id = $1 ORDER BY created_at DESC, id DESC`, endpoint)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w", errSecretsUnreadable, err)
	}
	defer rows.Close()
	var (
		out     []signingKey
		version string
	)
	for rows.Next() {
		var (
			id      string
			ct      []byte
			expires *time.Time
		)
		if err := rows.Scan(&id, &ct, &expires, &version); err != nil {
			return nil, "", fmt.Errorf("%w: %w", errSecretsUnreadable, err)
		}
		// The secret row's id is the additional data: a ciphertext moved
		// onto another row does not open.
		pt, err := c.box.Open(ct, []byte(id))
		if err != nil {
			return nil, "", fmt.Errorf("signing secret %s: %w", id, err)
		}
		key, err := secretKey(pt)
		if err != nil {
			return nil, "", fmt.Errorf("signing secret %s: %w", id, err)
		}
		out = append(out, signingKey{key: key, expires: expires})
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("%w: %w", errSecretsUnreadable, err)
	}
	return out, version, nil
}

// secretKey turns a stored plaintext into an HMAC key: the whsec_ string
// users see (the normal form), or raw key bytes.
func secretKey(pt []byte) ([]byte, error) {
	if s := string(pt); strings.HasPrefix(s, whsign.SecretPrefix) {
		return whsign.ParseSecret(s)
	}
	if len(pt) == 0 {
		return nil, whsign.ErrInvalidSecret
	}
	return pt, nil
}

// prune drops entries not refreshed for a while, so deleted endpoints do not
// accumulate.
func (c *secretCache) prune() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, e := range c.entries {
		if e.mu.TryLock() {
			stale := !e.loadedAt.IsZero() && time.Since(e.loadedAt) > 10*c.ttl
			e.mu.Unlock()
			if stale {
				delete(c.entries, id)
			}
		}
	}
}
