package webhooks

import (
	"testing"

	"github.com/gatehouse/gatehouse/controlplane/router"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

// A page of GET /v1/webhook-deliveries?status=pending must not depend on
// fresh planner statistics. After a burst (an endpoint down, its tenant's
// deliveries piling up as pending) the table's last ANALYZE can have seen
// only succeeded deliveries: the planner then expected a handful of
// pending rows, read the whole due index (every tenant's backlog), looked
// up the event of each and sorted them all, to show ten — 155 ms a page at
// 200,000 pending, exactly when a support engineer looks at the backlog.
func TestListDeliveriesByStatusReadsAPageWhateverTheStatistics(t *testing.T) {
	pool, _ := testenv.Pool(t)
	testenv.StaleBacklog(t, pool)
	for _, org := range []string{"org_pa", "org_pb"} {
		// The statement listDeliveries builds for ?status=pending (limit 10).
		f := router.PageSQL{}
		f.Add("d.organization_id = $%d", org)
		f.Add("d.livemode = $%d", true)
		f.Add("d.status = $%d", "pending")
		sql, args, _ := listDeliveriesSQL(&f, router.ListQuery{Limit: 10})
		testenv.CheckPageReads(t, org, testenv.Explain(t, pool, sql, args...), 10)
	}
}
