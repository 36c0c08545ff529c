package deliverer_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gatehouse/gatehouse/deliverer"
)

// TestGracefulShutdown: stopping the worker lets the attempt in flight
// finish and be recorded, and gives back the leases of deliveries that
// were queued but not started, so another deliverer takes them at once.
func TestGracefulShutdown(t *testing.T) {
	e := newEnv(t)
	var started atomic.Int32
	unblock := make(chan struct{})
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		<-unblock
	})
	ep, _ := e.endpoint(rc.URL, endpointOpts{})
	cfg := e.config()
	cfg.EndpointConcurrency = 1
	w, err := deliverer.NewWorker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	evs := e.produceEvents(5, "customer.created")
	waitFor(t, "five deliveries, one in flight", 60*time.Second, func() bool {
		return started.Load() == 1 && e.count(`SELECT count(*) FROM webhook_deliveries WHERE locked_until IS NOT NULL`) == 5
	})
	cancel()
	// The in-flight attempt is allowed to finish.
	time.AfterFunc(200*time.Millisecond, func() { close(unblock) })
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("worker did not stop")
	}
	if n := e.count(`SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded' AND locked_until IS NULL`); n != 1 {
		t.Fatalf("%d deliveries succeeded, want the one in flight", n)
	}
	if n := e.count(`SELECT count(*) FROM webhook_deliveries WHERE status = 'pending' AND attempts = 0 AND locked_until IS NULL AND lease_id IS NULL`); n != 4 {
		t.Fatalf("%d queued deliveries released, want 4", n)
	}
	if n := e.count(`SELECT count(*) FROM webhook_attempts`); n != 1 {
		t.Fatalf("%d attempts recorded, want 1", n)
	}
	// A new deliverer (same group, so offsets are committed) delivers the
	// rest without waiting for any lease.
	cfg.Registry = nil
	e.start(cfg)
	for _, id := range evs {
		e.waitDelivery("the released deliveries", id, ep, func(d deliveryRow) bool { return d.Status == "succeeded" })
	}
	if rc.count() != 5 {
		t.Fatalf("receiver got %d requests, want 5", rc.count())
	}
}

// TestMetrics: the worker's series are on the registry /metrics serves.
func TestMetrics(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	ep, _ := e.endpoint(rc.URL, endpointOpts{})
	e.start(e.config())
	ev := e.event(false, "customer.created")
	e.produce(ev)
	e.waitDelivery("delivery", ev.ID, ep, func(d deliveryRow) bool { return d.Status == "succeeded" })
	srv := httptest.NewServer(promhttp.HandlerFor(e.reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	var body string
	waitFor(t, "metrics", 10*time.Second, func() bool {
		resp, err := http.Get(srv.URL)
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
		// The lag is read from Kafka (every StatsEvery): the event is
		// consumed and committed, so none is left.
		return strings.Contains(body, `gatehouse_deliverer_deliveries_total{outcome="succeeded"} 1`) &&
			strings.Contains(body, "gatehouse_deliverer_kafka_lag_messages 0\n")
	})
	for _, want := range []string{
		`gatehouse_deliverer_attempts_total{result="success"} 1`,
		`gatehouse_deliverer_attempt_duration_seconds_bucket{result="success"`,
		`gatehouse_deliverer_events_consumed_total 1`,
		`gatehouse_deliverer_deliveries_created_total 1`,
		`gatehouse_deliverer_deliveries_fast_path_total 1`,
		`gatehouse_deliverer_event_to_first_attempt_seconds_count 1`,
		`gatehouse_deliverer_due_deliveries`,
		`gatehouse_deliverer_oldest_due_age_seconds`,
		`gatehouse_deliverer_failing_endpoints 0`,
		`gatehouse_deliverer_attempts_in_flight 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
