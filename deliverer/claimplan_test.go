package deliverer

import (
	"context"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/testenv"
)

// The claim must not depend on fresh planner statistics. After a burst (a
// deliverer killed and restarted while events kept coming, as make chaos
// does) the table's last ANALYZE can have seen only succeeded deliveries:
// the planner then takes the due ones for a handful and, for the locking
// step, re-ran the candidates' ranking once per due row. Each claim took
// seconds and the backlog waited for autovacuum's next ANALYZE, about a
// minute (30,000 webhooks delivered 66–77 s after the kill in 10 of 24
// chaos runs, 14–21 s in the others). The candidates are now ranked once.
func TestClaimRanksCandidatesOnceWhateverTheStatistics(t *testing.T) {
	pool, _ := testenv.Pool(t)
	ctx := context.Background()
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`ALTER TABLE webhook_deliveries SET (autovacuum_enabled = false)`) // the statistics stay stale
	exec(`INSERT INTO organizations (id, name) VALUES ('org_plan', 'Plan')`)
	exec(`INSERT INTO webhook_endpoints (id, organization_id, livemode, url, enabled_events, status)
		SELECT 'we_plan' || g, 'org_plan', true, 'https://example.com/' || g, '{*}', 'enabled' FROM generate_series(0, 2) g`)
	deliveries := func(status string, from, to int) {
		exec(`INSERT INTO webhook_deliveries (id, organization_id, livemode, event_id, endpoint_id, status, next_attempt_at)
			SELECT 'whd_' || lpad(g::text, 22, '0'), 'org_plan', true, 'evt_' || lpad(g::text, 22, '0'), 'we_plan' || (g % 3),
			       $1, now() - interval '10 seconds'
			FROM generate_series($2::int, $3::int) g`, status, from, to)
	}
	deliveries("succeeded", 1, 15000)
	exec(`ANALYZE webhook_deliveries`)
	deliveries("pending", 15001, 35000)

	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	now := time.Now()
	plan := testenv.Explain(t, tx, claimSQL, now, now.Add(time.Minute), 200,
		[]string{}, []string{}, []int32{}, 250, 800, "lease_plan", []string{})
	windows := 0
	plan.Walk(func(n testenv.PlanNode) {
		if n.NodeType == "WindowAgg" {
			windows++
			if n.ActualLoops != 1 {
				t.Errorf("the candidates were ranked %d times in one claim, want once", n.ActualLoops)
			}
		}
		if n.NodeType == "ModifyTable" && n.ActualRows != 200 {
			t.Errorf("the claim leased %d deliveries, want 200", n.ActualRows)
		}
	})
	if windows == 0 {
		t.Fatal("no ranking in the claim's plan: the test no longer looks at the right step")
	}
}
