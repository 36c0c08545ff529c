package sampleapi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// errNotFound means no customer with that id exists for the caller's
// organisation and environment; another tenant's customer is the same case.
var errNotFound = errors.New("customer not found")

// customer is a row of the customers table as the API sees it.
type customer struct {
	ID          string            `db:"id"`
	Livemode    bool              `db:"livemode"`
	Email       *string           `db:"email"`
	Name        *string           `db:"name"`
	Description *string           `db:"description"`
	Phone       *string           `db:"phone"`
	Metadata    map[string]string `db:"metadata"`
	CreatedAt   time.Time         `db:"created_at"`
}

// store owns the customers table. Every statement filters on organization_id
// and livemode, so one tenant's or environment's rows are invisible to others.
type store struct {
	pool *pgxpool.Pool
}

const customerColumns = `id, livemode, email, name, description, phone, metadata, created_at`

func (s *store) insert(ctx context.Context, orgID string, c customer) error {
	const q = `INSERT INTO customers
		(id, organization_id, livemode, email, name, description, phone, metadata, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)`
	if _, err := s.pool.Exec(ctx, q, c.ID, orgID, c.Livemode, c.Email, c.Name, c.Description, c.Phone,
		nonNil(c.Metadata), c.CreatedAt); err != nil {
		return fmt.Errorf("inserting customer: %w", err)
	}
	return nil
}

func (s *store) get(ctx context.Context, orgID string, livemode bool, id string) (customer, error) {
	const q = `SELECT ` + customerColumns + ` FROM customers
		WHERE organization_id = $1 AND livemode = $2 AND id = $3`
	return s.one(ctx, s.pool, q, orgID, livemode, id)
}

// update loads the customer under a row lock, lets change modify it (and
// refuse, e.g. when merged metadata grows past the limit), and writes it
// back, so concurrent metadata merges cannot lose each other's keys.
func (s *store) update(ctx context.Context, orgID string, livemode bool, id string, change func(*customer) error) (customer, error) {
	var c customer
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		const sel = `SELECT ` + customerColumns + ` FROM customers
			WHERE organization_id = $1 AND livemode = $2 AND id = $3 FOR UPDATE`
		var err error
		if c, err = s.one(ctx, tx, sel, orgID, livemode, id); err != nil {
			return err
		}
		if err := change(&c); err != nil {
			return err
		}
		const upd = `UPDATE customers
			SET email = $4, name = $5, description = $6, phone = $7, metadata = $8, updated_at = now()
			WHERE organization_id = $1 AND livemode = $2 AND id = $3`
		if _, err := tx.Exec(ctx, upd, orgID, livemode, id, c.Email, c.Name, c.Description, c.Phone,
			nonNil(c.Metadata)); err != nil {
			return fmt.Errorf("updating customer: %w", err)
		}
		return nil
	})
	if err != nil {
		return customer{}, err
	}
	return c, nil
}

func (s *store) delete(ctx context.Context, orgID string, livemode bool, id string) error {
	const q = `DELETE FROM customers WHERE organization_id = $1 AND livemode = $2 AND id = $3`
	tag, err := s.pool.Exec(ctx, q, orgID, livemode, id)
	if err != nil {
		return fmt.Errorf("deleting customer: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return errNotFound
	}
	return nil
}

// listQuery is one page request. At most one of StartingAfter and
// EndingBefore is set.
type listQuery struct {
	Limit         int
	StartingAfter *string
	EndingBefore  *string
	Email         *string
}

// Pages are read newest first (id DESC; ids sort by creation time under the
// "C" collation of migration 0002). The page before a cursor is read oldest
// first from the cursor and reversed, so it can stop after limit+1 rows too.
const (
	listNewestFirst = `SELECT ` + customerColumns + ` FROM customers
		WHERE organization_id = $1 AND livemode = $2
		  AND ($3::text IS NULL OR lower(email) = lower($3::text))
		  AND ($4::text IS NULL OR id < $4::text)
		ORDER BY id DESC
		LIMIT $5`
	listBeforeCursor = `SELECT ` + customerColumns + ` FROM customers
		WHERE organization_id = $1 AND livemode = $2
		  AND ($3::text IS NULL OR lower(email) = lower($3::text))
		  AND id > $4::text
		ORDER BY id ASC
		LIMIT $5`
)

// list returns one page, newest first, and whether more rows lie beyond it
// in the direction of travel.
func (s *store) list(ctx context.Context, orgID string, livemode bool, q listQuery) ([]customer, bool, error) {
	sql, cursor := listNewestFirst, q.StartingAfter
	if q.EndingBefore != nil {
		sql, cursor = listBeforeCursor, q.EndingBefore
	}
	rows, err := s.pool.Query(ctx, sql, orgID, livemode, q.Email, cursor, q.Limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("listing customers: %w", err)
	}
	page, err := pgx.CollectRows(rows, pgx.RowToStructByName[customer])
	if err != nil {
		return nil, false, fmt.Errorf("listing customers: %w", err)
	}
	hasMore := len(page) > q.Limit
	if hasMore {
		page = page[:q.Limit]
	}
	if q.EndingBefore != nil {
		slices.Reverse(page)
	}
	return page, hasMore, nil
}

// querier is what one needs of a pool or a transaction to read a row.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func (s *store) one(ctx context.Context, db querier, sql string, args ...any) (customer, error) {
	rows, err := db.Query(ctx, sql, args...)
	if err != nil {
		return customer{}, fmt.Errorf("reading customer: %w", err)
	}
	c, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[customer])
	if errors.Is(err, pgx.ErrNoRows) {
		return customer{}, errNotFound
	}
	if err != nil {
		return customer{}, fmt.Errorf("reading customer: %w", err)
	}
	return c, nil
}

// nonNil keeps an empty metadata map from being stored as JSON null.
func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
