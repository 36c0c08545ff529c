package deliverer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// TestBenchmark measures the deliverer (GATEHOUSE_BENCH=1): sustained
// deliveries per second to a fast local receiver, from events on Kafka to
// results recorded in Postgres, and the latency from producing an event to
// its first attempt arriving at the receiver, at a steady 200 events/s.
// Everything — Kafka, Postgres, the receiver, the producer and the worker —
// shares the machine. It prints one JSON line.
func TestBenchmark(t *testing.T) {
	if os.Getenv("GATEHOUSE_BENCH") != "1" {
		t.Skip("benchmark: set GATEHOUSE_BENCH=1")
	}
	const paced, rate = 2000, 200
	burst := 20000
	if n, err := strconv.Atoi(os.Getenv("GATEHOUSE_BENCH_EVENTS")); err == nil {
		burst = n
	}
	e := newEnv(t)
	log := newPairLog()
	srv := httptest.NewServer(log.handler())
	t.Cleanup(srv.Close)
	e.endpoint(srv.URL+"/bench", endpointOpts{live: true})
	cfg := e.config()
	cfg.Now = time.Now
	cfg.Logger = nil // the test logger would dominate the profile
	cfg.PollInterval = 0
	e.start(cfg)
	w := &kafka.Writer{Addr: kafka.TCP(e.brokers...), Topic: e.topic, Balancer: &kafka.Hash{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, BatchSize: 1000}
	defer w.Close()

	// Warm up: the consumer group join and first connections.
	warm := e.event(true, "customer.created")
	e.produce(warm)
	waitFor(t, "warm-up delivery", 60*time.Second, func() bool { p, _, _, _ := log.snapshot(); return p == 1 })

	// Throughput: a burst of events, as fast as Kafka takes them.
	start := time.Now()
	go func() {
		for sent := 0; sent < burst; sent += 1000 {
			msgs := make([]kafka.Message, 1000)
			for i := range msgs {
				ev := e.event(true, "customer.created")
				b, _ := json.Marshal(ev)
				msgs[i] = kafka.Message{Key: []byte(ev.OrganizationID), Value: b}
			}
			if err := w.WriteMessages(context.Background(), msgs...); err != nil {
				t.Errorf("producing: %v", err)
				return
			}
		}
	}()
	waitFor(t, "the burst to be delivered and recorded", 10*time.Minute, func() bool {
		return e.count(`SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'`) >= burst+1
	})
	elapsed := time.Since(start)
	_, requests, _, _ := log.snapshot()

	// Latency: a steady stream, each event timed from just before it is
	// produced to its arrival at the receiver.
	sentAt := map[string]time.Time{}
	tick := time.NewTicker(time.Second / (rate / 10))
	for sent := 0; sent < paced; sent += 10 {
		<-tick.C
		msgs := make([]kafka.Message, 10)
		now := time.Now()
		for i := range msgs {
			ev := e.event(true, "customer.created")
			b, _ := json.Marshal(ev)
			msgs[i] = kafka.Message{Key: []byte(ev.OrganizationID), Value: b}
			sentAt[ev.ID] = now
		}
		if err := w.WriteMessages(context.Background(), msgs...); err != nil {
			t.Fatalf("producing: %v", err)
		}
	}
	tick.Stop()
	waitFor(t, "the paced events to arrive", 2*time.Minute, func() bool { p, _, _, _ := log.snapshot(); return p >= burst+paced+1 })
	var lat []float64
	log.mu.Lock()
	for id, at := range sentAt {
		if arr, ok := log.arrived[id]; ok {
			lat = append(lat, float64(arr.Sub(at).Microseconds())/1000)
		}
	}
	log.mu.Unlock()
	slices.Sort(lat)
	q := func(p float64) float64 { return lat[min(int(p*float64(len(lat))), len(lat)-1)] }
	out, _ := json.Marshal(map[string]any{
		"test": "deliverer_bench", "burst_events": burst, "burst_seconds": round(elapsed.Seconds()),
		"deliveries_per_sec": round(float64(burst) / elapsed.Seconds()), "receiver_requests": requests,
		"paced_events": paced, "paced_rate_per_sec": rate,
		"latency_ms_p50": round(q(0.50)), "latency_ms_p90": round(q(0.90)), "latency_ms_p99": round(q(0.99)), "latency_ms_max": round(lat[len(lat)-1]),
	})
	fmt.Println(string(out))
	t.Log(string(out))
}

func round(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }
