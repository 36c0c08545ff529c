package deliverer

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap/zaptest"

	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/secretbox"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

// TestResultsOutliveAPostgresOutage: results that finish while Postgres is
// unreachable are written once it is back, however long that takes. Were
// they dropped, each delivery would be sent again when its lease expired:
// a duplicate for a receiver that had already answered 2xx, and its
// attempt missing from the delivery's history.
func TestResultsOutliveAPostgresOutage(t *testing.T) {
	dsn := testenv.Postgres(t)
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	var refuse atomic.Int32 // connections refused before Postgres is "back"
	var dialer net.Dialer
	pcfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if refuse.Add(-1) >= 0 {
			return nil, errors.New("connection refused (test outage)")
		}
		return dialer.DialContext(ctx, network, addr)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), pcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	box, err := secretbox.New("ZGVsaXZlcmVyLXRlc3QtbWFzdGVyLWtleS0zMmJ5dGU=")
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWorker(WorkerConfig{Brokers: []string{"127.0.0.1:9092"}, DB: pool, Box: box, SpoolDir: t.TempDir(),
		Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	org, ep, now := "org_"+testenv.Suffix(), ids.New(ids.WebhookEndpoint), time.Now().Truncate(time.Microsecond)
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO organizations (id, name) VALUES ($1, 'Test org')`, []any{org}},
		{`INSERT INTO webhook_endpoints (id, organization_id, livemode, url, enabled_events) VALUES ($1, $2, false, 'http://127.0.0.1:1/', '{*}')`,
			[]any{ep, org}},
	} {
		if _, err := pool.Exec(ctx, q.sql, q.args...); err != nil {
			t.Fatal(err)
		}
	}
	var batch []*result
	for range 2 {
		j := &job{d: delivery{ID: ids.New(ids.Delivery), OrganizationID: org, EventID: ids.New(ids.Event), EndpointID: ep,
			LeaseID: newLeaseID()}}
		if _, err := pool.Exec(ctx, `INSERT INTO webhook_deliveries (id, organization_id, livemode, event_id, endpoint_id, status,
			next_attempt_at, locked_until, lease_id) VALUES ($1, $2, false, $3, $4, 'pending', $5, $6, $7)`,
			j.d.ID, org, j.d.EventID, ep, now, now.Add(time.Minute), j.d.LeaseID); err != nil {
			t.Fatal(err)
		}
		r := &result{j: j, attemptID: ids.New(ids.Attempt), at: now, code: 200, ok: true, class: "success"}
		w.decide(r)
		batch = append(batch, r)
	}

	// Postgres goes away for a few tries, then comes back.
	tries := 0
	wait := resultsRetryWait
	resultsRetryWait = func(int) time.Duration { tries++; return 0 }
	t.Cleanup(func() { resultsRetryWait = wait })
	pool.Reset()
	refuse.Store(4)
	w.flush(ctx, batch)
	if tries < 2 {
		t.Fatalf("the write was tried %d times; the outage was not waited out", tries+1)
	}

	for _, r := range batch {
		var status string
		var attempts int
		if err := pool.QueryRow(ctx, `SELECT status, (SELECT count(*) FROM webhook_attempts a WHERE a.delivery_id = d.id)
			FROM webhook_deliveries d WHERE id = $1`, r.j.d.ID).Scan(&status, &attempts); err != nil {
			t.Fatal(err)
		}
		if status != "succeeded" || attempts != 1 {
			t.Errorf("delivery %s is %s with %d attempts recorded after the outage, want succeeded with 1", r.j.d.ID, status, attempts)
		}
	}
}
