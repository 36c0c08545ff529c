// Package migrations holds the ordered SQL migrations of the platform's
// database, embedded so every binary carries them, and applies them with
// golang-migrate.
package migrations

import (
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
func Up(dsn string) error {
	m, err := open(dsn)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := m.Up(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return fmt.Errorf("applying migrations: %w", err)
	}
	return nil
}

// Down reverts every migration.
func Down(dsn string) error {
	m, err := open(dsn)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := m.Down(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return fmt.Errorf("reverting migrations: %w", err)
	}
	return nil
}
