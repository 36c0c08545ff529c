package migrations_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/internal/testenv"
	"github.com/gatehouse/gatehouse/migrations"
)

// Down undoes every migration, leaving only golang-migrate's own table, and
// Up applies them again from zero.
func TestUpDownUp(t *testing.T) {
	pool, dsn := testenv.Pool(t)
	if err := migrations.Down(context.Background(), dsn); err != nil {
		t.Fatal(err)
	}
	rows, _ := pool.Query(context.Background(), `
		SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'public' AND c.relname NOT LIKE 'schema_migrations%' ORDER BY 1`)
	left, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("after down, still in the schema: %v", left)
	}
	// One DATABASE_URL serves every process, pgxpool's settings included.
	if err := migrations.Up(context.Background(), dsn+"&pool_max_conns=4"); err != nil {
		t.Fatal(err)
	}
}

// A malformed DATABASE_URL is reported without the password in it.
func TestBadURLKeepsThePasswordOut(t *testing.T) {
	for _, dsn := range []string{
		"postgres://gatehouse:s3cr3t-pw@127.0.0.1:notaport/gatehouse",
		"postgres://gatehouse:s3cr3t-pw@127.0.0.1:5432/gate%zzhouse",
		"postgres://gatehouse:s3cr3t-pw/more@127.0.0.1:5432/gatehouse", // an unencoded '/': the password's start reads as the port
		"postgres://gatehouse:1234/s3cr3t-pw@127.0.0.1:5432/gatehouse", // a valid port before the '/': the rest reads as the database
		"postgres://gatehouse:/s3cr3t-pw@127.0.0.1:5432/gatehouse",     // an empty one
	} {
		for name, f := range map[string]func(context.Context, string) error{"up": migrations.Up, "down": migrations.Down} {
			err := f(context.Background(), dsn)
			if err == nil || strings.Contains(err.Error(), "s3cr3t-pw") {
				t.Errorf("%s(%q) = %v, want an error without the password", name, dsn, err)
			}
		}
	}
}

// Queries that read a time window of a large table must reach it through an
// index on the window's column, not by reading the tenant's (or every
// tenant's) whole history and filtering. Each is the statement as the code
// runs it, over a tenant with 100 days of deliveries and attempts; the
// planner is told to avoid sequential scans, so the plan shows which index,
// if any, can serve the window. The index condition must hold both the
// tenant and the window: an index on another column followed by created_at
// (webhook_attempts_delivery_idx) is only reachable by skipping through
// every value of its first column.
func TestWindowQueriesUseAnIndex(t *testing.T) {
	pool, _ := testenv.Pool(t)
	ctx := context.Background()
	for _, sql := range []string{
		`INSERT INTO organizations (id, name) VALUES ('org_A', 'A')`,
		`INSERT INTO webhook_endpoints (id, organization_id, livemode, url, enabled_events, status)
			VALUES ('we_A', 'org_A', false, 'https://a.example.com/', '{*}', 'enabled')`,
		`INSERT INTO webhook_deliveries (id, organization_id, livemode, event_id, endpoint_id, status, created_at)
			SELECT 'whd_' || lpad(g::text, 22, '0'), 'org_A', false, 'evt_' || lpad(g::text, 22, '0'), 'we_A',
			       (ARRAY['succeeded', 'failed', 'dead'])[1 + g % 3], now() - g * interval '1 hour'
			FROM generate_series(1, 2400) g`,
		`INSERT INTO webhook_attempts (id, delivery_id, organization_id, livemode, status_code, latency_ms, trigger, created_at)
			SELECT 'wha_' || substr(id, 5), id, organization_id, livemode, 200, 5, 'scheduled', created_at FROM webhook_deliveries`,
		`ANALYZE webhook_deliveries, webhook_attempts`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	since := time.Now().Add(-24 * time.Hour)
	for _, tc := range []struct {
		name string
		sql  string
		args []any
	}{
		{"dashboard overview: webhook attempts (dashboard/usage.go)", `
			SELECT count(*), count(*) FILTER (WHERE status_code IS NULL OR status_code < 200 OR status_code > 299)
			FROM webhook_attempts WHERE organization_id = $1 AND livemode = $2 AND created_at >= $3`,
			[]any{"org_A", false, since}},
		{"dashboard overview: webhook deliveries (dashboard/usage.go)", `
			SELECT count(*), count(*) FILTER (WHERE status IN ('failed', 'dead'))
			FROM webhook_deliveries WHERE organization_id = $1 AND livemode = $2 AND created_at >= $3`,
			[]any{"org_A", false, since}},
		{"endpoint page: deliveries (dashboard/store.go)", `
			SELECT count(*), count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status = 'failed'),
			       count(*) FILTER (WHERE status = 'dead'), count(*) FILTER (WHERE status = 'pending')
			FROM webhook_deliveries
			WHERE organization_id = $1 AND livemode = $2 AND endpoint_id = $3 AND created_at > $4`,
			[]any{"org_A", false, "we_A", since}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var conds []string
			err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, `SET LOCAL enable_seqscan = off`); err != nil {
					return err
				}
				testenv.Explain(t, tx, tc.sql, tc.args...).Walk(func(n testenv.PlanNode) {
					if n.IndexCond != "" {
						conds = append(conds, n.IndexCond)
					}
				})
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range conds {
				if strings.Contains(c, "organization_id") && strings.Contains(c, "created_at") {
					return
				}
			}
			t.Errorf("no index serves the tenant's created_at window; index conditions: %q", conds)
		})
	}
}

// README "Operating it": an index build of 0019 cut short leaves the
// version dirty and an invalid index; the recipe there recovers it.
func TestRecoveringAnInterruptedIndexBuild(t *testing.T) {
	pool, dsn := testenv.Pool(t)
	ctx := context.Background()
	var newest int
	if err := pool.QueryRow(ctx, `SELECT version FROM schema_migrations`).Scan(&newest); err != nil || newest != 19 {
		t.Fatalf("the test models 0019 failing as the newest migration (newest: %d, %v): with later ones, stop the database at 0019", newest, err)
	}
	for _, sql := range []string{
		// What a build killed midway leaves.
		`UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'webhook_deliveries_status_idx'::regclass`,
		`UPDATE schema_migrations SET version = 19, dirty = true`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if err := migrations.Up(ctx, dsn); err == nil {
		t.Fatal("migrate went on from a dirty version")
	}
	for _, sql := range []string{ // the recipe
		`DROP INDEX CONCURRENTLY webhook_deliveries_status_idx`,
		`UPDATE schema_migrations SET version = 18, dirty = false`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if err := migrations.Up(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	var valid bool
	if err := pool.QueryRow(ctx, `SELECT indisvalid FROM pg_index WHERE indexrelid = 'webhook_deliveries_status_idx'::regclass`).Scan(&valid); err != nil || !valid {
		t.Fatalf("after the recipe the index is valid: %v, %v", valid, err)
	}
}
