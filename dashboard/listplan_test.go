package dashboard

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/internal/testenv"
)

// The deliveries page filtered by status must read one page whatever the
// planner's statistics: after a burst the last ANALYZE may have seen no
// pending delivery (controlplane/webhooks has the API's twin of this test).
func TestDeliveriesPageReadsAPageWhateverTheStatistics(t *testing.T) {
	pool, _ := testenv.Pool(t)
	testenv.StaleBacklog(t, pool)
	rec := &recordingDB{DB: pool}
	d := &Dashboard{cfg: Config{DB: rec}}
	for org, want := range map[string]int{"org_pa": 20, "org_pb": pageSize} {
		list, _, err := d.listDeliveries(context.Background(), &Session{OrgID: org, Livemode: true}, deliveryFilter{Status: "pending"})
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != want {
			t.Fatalf("%s: %d pending deliveries shown, want %d", org, len(list), want)
		}
		for _, dl := range list {
			if dl.Status != "pending" || dl.EndpointURL == nil {
				t.Fatalf("%s: delivery %s is %s to %v", org, dl.ID, dl.Status, dl.EndpointURL)
			}
		}
		testenv.CheckPageReads(t, org, testenv.Explain(t, pool, rec.sql, rec.args...), pageSize)
	}
}

// recordingDB remembers the last query it ran.
type recordingDB struct {
	DB
	sql  string
	args []any
}

func (r *recordingDB) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	r.sql, r.args = sql, args
	return r.DB.Query(ctx, sql, args...)
}
