package testenv

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// PlanNode is a node of EXPLAIN (ANALYZE, FORMAT JSON): what a statement
// really did, for tests that hold a query to the work it may do whatever
// the planner's statistics.
type PlanNode struct {
	NodeType        string     `json:"Node Type"`
	Relation        string     `json:"Relation Name"`
	Index           string     `json:"Index Name"`
	IndexCond       string     `json:"Index Cond"`
	ActualLoops     int        `json:"Actual Loops"`
	ActualRows      int        `json:"Actual Rows"`
	RemovedByFilter int        `json:"Rows Removed by Filter"`
	Plans           []PlanNode `json:"Plans"`
}

// RowsRead is how many rows the node produced over all its loops plus those
// its filter threw away.
func (n PlanNode) RowsRead() int { return n.ActualRows*n.ActualLoops + n.RemovedByFilter }

// Walk calls fn for n and every node below it.
func (n PlanNode) Walk(fn func(PlanNode)) {
	fn(n)
	for _, c := range n.Plans {
		c.Walk(fn)
	}
}

// Querier is what Explain runs the statement on: a pool, a connection or a
// transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Explain runs sql with args under EXPLAIN ANALYZE and returns its plan.
func Explain(t testing.TB, q Querier, sql string, args ...any) PlanNode {
	t.Helper()
	var plan []struct{ Plan PlanNode }
	if err := q.QueryRow(context.Background(), "EXPLAIN (ANALYZE, FORMAT JSON) "+sql, args...).Scan(&plan); err != nil {
		t.Fatalf("explaining %s: %v", sql, err)
	}
	return plan[0].Plan
}

// StaleBacklog fills webhook_deliveries as a burst leaves it before the
// planner has seen it: organisations org_pa and org_pb (endpoints we_pa and
// we_pb, live) had 15,000 succeeded deliveries each when the table was last
// analysed; since then org_pb's endpoint went down with 20,000 deliveries
// pending and org_pa has 20 pending. Autovacuum is off for the table, so
// the statistics stay stale.
func StaleBacklog(t testing.TB, db interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}) {
	t.Helper()
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := db.Exec(context.Background(), sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`ALTER TABLE webhook_deliveries SET (autovacuum_enabled = false)`)
	exec(`INSERT INTO organizations (id, name) VALUES ('org_pa', 'A'), ('org_pb', 'B')`)
	exec(`INSERT INTO webhook_endpoints (id, organization_id, livemode, url, enabled_events, status)
		VALUES ('we_pa', 'org_pa', true, 'https://a.example.com/', '{*}', 'enabled'),
		       ('we_pb', 'org_pb', true, 'https://b.example.com/', '{*}', 'enabled')`)
	deliveries := func(org, status string, from, to int) {
		exec(`INSERT INTO webhook_deliveries (id, organization_id, livemode, event_id, endpoint_id, status, next_attempt_at)
			SELECT 'whd_' || lpad(g::text, 22, '0'), $1, true, 'evt_' || lpad(g::text, 22, '0'), 'we' || substr($1, 4), $2,
			       CASE WHEN $2 = 'succeeded' THEN NULL ELSE now() + interval '1 hour' END
			FROM generate_series($3::int, $4::int) g`, org, status, from, to)
	}
	deliveries("org_pa", "succeeded", 1, 15000)
	deliveries("org_pb", "succeeded", 15001, 30000)
	exec(`ANALYZE webhook_deliveries`)
	deliveries("org_pb", "pending", 30001, 50000)
	deliveries("org_pa", "pending", 50001, 50020)
}

// CheckPageReads fails the test if plan, one page of at most limit
// deliveries, read more than 1,000 of them or looked up more than limit+1
// events.
func CheckPageReads(t testing.TB, what string, plan PlanNode, limit int) {
	t.Helper()
	plan.Walk(func(n PlanNode) {
		if n.Relation == "webhook_deliveries" && n.RowsRead() > 1000 {
			t.Errorf("%s: a page of %d read %d deliveries (%s on %s)", what, limit, n.RowsRead(), n.NodeType, n.Index)
		}
		if n.Relation == "events" && n.ActualLoops > limit+1 {
			t.Errorf("%s: a page of %d looked their events up %d times", what, limit, n.ActualLoops)
		}
	})
}
