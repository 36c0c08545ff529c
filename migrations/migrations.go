// Package migrations holds the ordered SQL migrations of the platform's
// database, embedded so every binary carries them, and applies them with
// golang-migrate.
package migrations

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/golang-migrate/migrate/v4"
	_ "github.com/golang-migrate/migrate/v4/database/pgx/v5" // the pgx5:// driver
	"github.com/golang-migrate/migrate/v4/source/iofs"

	"github.com/gatehouse/gatehouse/internal/redact"
)

//go:embed *.sql
var files embed.FS

func open(dsn string) (*migrate.Migrate, error) {
	src, err := iofs.New(files, ".")
	if err != nil {
		return nil, fmt.Errorf("reading embedded migrations: %w", err)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		// url.Error quotes the whole URL, password included, and this
		// error ends up on the operator's terminal and in logs; the error
		// it wraps can quote part of the password too, as the port.
		return nil, fmt.Errorf("parsing database url: %w", redact.URLError(dsn, err))
	}
	u.Scheme = "pgx5"
	// pgxpool's own settings (pool_max_conns, which the deliverer honours)
	// would reach Postgres as runtime parameters it refuses.
	if q := u.Query(); strings.Contains(u.RawQuery, "pool_") {
		for k := range q {
			if strings.HasPrefix(k, "pool_") {
				q.Del(k)
			}
		}
		u.RawQuery = q.Encode()
	}
	m, err := migrate.NewWithSourceInstance("iofs", src, u.String())
	if err != nil {
		// A password whose '/' follows a valid port (digits, or nothing)
		// parses, its rest read as the database, which pgx's error names.
		return nil, fmt.Errorf("connecting for migrations: %w", redact.URLError(dsn, err))
	}
	return m, nil
}

// Up applies every migration not yet applied. It is safe to run
// concurrently and repeatedly: golang-migrate takes an advisory lock.
func Up(ctx context.Context, dsn string) error {
	return apply(ctx, dsn, "applying migrations", (*migrate.Migrate).Up)
}

// Down reverts every migration.
func Down(ctx context.Context, dsn string) error {
	return apply(ctx, dsn, "reverting migrations", (*migrate.Migrate).Down)
}

// apply connects and runs step until ctx ends. golang-migrate takes no
// context: while it is still connecting, apply returns at once (nothing is
// applied yet; whatever the attempt opens later is closed); once it runs,
// it finishes the migration in progress and applies no more
// (GracefulStop), so an interrupted run never leaves one half done. Without
// this, Ctrl-C could not stop `controlplane migrate` (nor `make run`, which
// runs it) against a database that does not answer.
func apply(ctx context.Context, dsn, what string, step func(*migrate.Migrate) error) error {
	type opened struct {
		m   *migrate.Migrate
		err error
	}
	ch := make(chan opened, 1)
	go func() {
		m, err := open(dsn)
		ch <- opened{m, err}
	}()
	var m *migrate.Migrate
	select {
	case o := <-ch:
		if o.err != nil {
			return o.err
		}
		m = o.m
	case <-ctx.Done():
		go func() {
			if o := <-ch; o.err == nil {
				o.m.Close()
			}
		}()
		return fmt.Errorf("connecting for migrations: %w", ctx.Err())
	}
	defer m.Close()
	stop := context.AfterFunc(ctx, func() { m.GracefulStop <- true })
	defer stop()
	if err := step(m); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: stopped: %w", what, err)
	}
	return nil
}
