package webhooks

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/secretbox"
	"github.com/gatehouse/gatehouse/internal/whsign"
)

// secretIDPrefix starts the ids of webhook_endpoint_secrets rows. They are
// never shown; each is the additional data its ciphertext is sealed with.
const secretIDPrefix = "wesec"

// Querier reads rows: a pool, a connection or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// ActiveSecrets returns the signing secrets ("whsec_…") of an endpoint
// that have not expired at now, newest first. It does not check who owns
// the endpoint: callers serving a tenant (the dashboard) must have loaded
// the endpoint with the tenant's organisation and environment first.
func ActiveSecrets(ctx context.Context, q Querier, box *secretbox.Box, endpointID string, now time.Time) ([]string, error) {
	rows, err := q.Query(ctx, `
		SELECT id, ciphertext FROM webhook_endpoint_secrets
		WHERE endpoint_id = $1 AND (expires_at IS NULL OR expires_at > $2)
		ORDER BY created_at DESC, id DESC`, endpointID, now)
	if err != nil {
		return nil, fmt.Errorf("loading signing secrets: %w", err)
	}
	type sealed struct {
		ID         string `db:"id"`
		Ciphertext []byte `db:"ciphertext"`
	}
	rs, err := pgx.CollectRows(rows, pgx.RowToStructByName[sealed])
	if err != nil {
		return nil, fmt.Errorf("loading signing secrets: %w", err)
	}
	out := make([]string, len(rs))
	for i, r := range rs {
		pt, err := box.Open(r.Ciphertext, []byte(r.ID))
		if err != nil {
			return nil, fmt.Errorf("opening signing secret %s: %w", r.ID, err)
		}
		out[i] = string(pt)
	}
	return out, nil
}

// execer runs a statement; a pgx.Tx in practice.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// addSecret creates a secret for endpoint, stores it sealed and returns it.
func addSecret(ctx context.Context, tx execer, box *secretbox.Box, endpointID string, now time.Time) (string, error) {
	if box == nil {
		return "", errors.New("no master key to seal webhook secrets")
	}
	secret := whsign.NewSecret()
	id := ids.NewAt(secretIDPrefix, now)
	_, err := tx.Exec(ctx, `INSERT INTO webhook_endpoint_secrets (id, endpoint_id, ciphertext, created_at)
		VALUES ($1, $2, $3, $4)`, id, endpointID, box.Seal([]byte(secret), []byte(id)), now)
	if err != nil {
		return "", fmt.Errorf("storing signing secret: %w", err)
	}
	return secret, nil
}

// ResealSecrets re-encrypts every stored signing secret that box's current
// key did not seal — the last step of a master-key rotation (package
// secretbox) — and returns how many it changed of how many it read. It
// works in batches, each its own transaction, and is safe to run again or
// to resume: a secret already under the current key is left as it is. It
// stops at the first secret that neither the current nor a previous key
// opens, naming it.
func ResealSecrets(ctx context.Context, db interface {
	Begin(context.Context) (pgx.Tx, error)
}, box *secretbox.Box) (changed, total int, err error) {
	const batch = 500
	after := ""
	for {
		n, resealed := 0, 0
		err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
			n, resealed = 0, 0
			rows, _ := tx.Query(ctx, `SELECT id, ciphertext FROM webhook_endpoint_secrets
				WHERE id > $1 ORDER BY id LIMIT $2 FOR UPDATE`, after, batch)
			type sealed struct {
				ID         string `db:"id"`
				Ciphertext []byte `db:"ciphertext"`
			}
			rs, err := pgx.CollectRows(rows, pgx.RowToStructByName[sealed])
			if err != nil {
				return fmt.Errorf("loading signing secrets: %w", err)
			}
			for _, r := range rs {
				ct, changed, err := box.Reseal(r.Ciphertext, []byte(r.ID))
				if err != nil {
					return fmt.Errorf("signing secret %s opens with neither MASTER_KEY nor MASTER_KEY_PREVIOUS: %w", r.ID, err)
				}
				if changed {
					if _, err := tx.Exec(ctx, `UPDATE webhook_endpoint_secrets SET ciphertext = $2 WHERE id = $1`, r.ID, ct); err != nil {
						return fmt.Errorf("storing signing secret %s: %w", r.ID, err)
					}
					resealed++
				}
			}
			if n = len(rs); n > 0 {
				after = rs[n-1].ID
			}
			return nil
		})
		if err != nil {
			return changed, total, err // the batch rolled back: not counted
		}
		changed, total = changed+resealed, total+n
		if n < batch {
			return changed, total, nil
		}
	}
}
