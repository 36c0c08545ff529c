package deliverer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/testenv"
	"github.com/gatehouse/gatehouse/internal/whsign"
)

// pairLog is a receiver's record of deliveries per (endpoint, event).
type pairLog struct {
	mu       sync.Mutex
	first    map[string]string // pair → webhook-id of the first request
	count    map[string]int
	requests int
	mismatch int // duplicates carrying a different webhook-id
	badSig   int
	secrets  map[string]string // endpoint path → secret, for verifying a sample
	arrived  map[string]time.Time
}

func newPairLog() *pairLog {
	return &pairLog{first: map[string]string{}, count: map[string]int{}, secrets: map[string]string{}, arrived: map[string]time.Time{}}
}

func (p *pairLog) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		now := time.Now()
		var ev struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(body, &ev)
		pair := r.URL.Path + " " + ev.ID
		id := r.Header.Get("Webhook-Id")
		p.mu.Lock()
		p.requests++
		verify := p.requests%50 == 1
		secret := p.secrets[r.URL.Path]
		if f, ok := p.first[pair]; ok {
			if f != id {
				p.mismatch++
			}
		} else {
			p.first[pair] = id
			p.arrived[ev.ID] = now
		}
		p.count[pair]++
		p.mu.Unlock()
		if verify && secret != "" {
			if err := whsign.Verify(secret, r.Header, body, time.Minute, now); err != nil {
				p.mu.Lock()
				p.badSig++
				p.mu.Unlock()
			}
		}
	})
}

func (p *pairLog) snapshot() (pairs, requests, mismatch, badSig int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.first), p.requests, p.mismatch, p.badSig
}

// deliverer is a deliverer binary run by a test.
type delivererProc struct {
	t    *testing.T
	bin  string
	env  []string
	addr string
	cmd  *exec.Cmd
	log  *os.File
}

func buildDeliverer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "deliverer")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/deliverer").CombinedOutput()
	if err != nil {
		t.Fatalf("building the deliverer: %v\n%s", err, out)
	}
	return bin
}

func (d *delivererProc) start() {
	d.t.Helper()
	d.addr = testenv.FreeAddr(d.t)
	d.cmd = exec.Command(d.bin)
	d.cmd.Env = append(append(os.Environ(), d.env...), "DELIVERER_ADDR="+d.addr)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	waitFor(d.t, "the deliverer to be ready", 60*time.Second, func() bool {
		resp, err := http.Get("http://" + d.addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

func (d *delivererProc) kill9() {
	_ = d.cmd.Process.Kill() // SIGKILL: no shutdown path runs
	_ = d.cmd.Wait()
}

func (d *delivererProc) stop() {
	if d.cmd != nil && d.cmd.ProcessState == nil {
		_ = d.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = d.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			d.kill9()
		}
	}
}

// TestChaosKill9 is the crash proof (GATEHOUSE_CHAOS=1): 10,000 events to
// 3 endpoints, the deliverer binary killed with SIGKILL mid-burst and
// restarted; every (event, endpoint) pair must be delivered at least once,
// and any duplicate must carry the same webhook-id (receivers deduplicate
// on it). The figures are printed as a JSON line.
func TestChaosKill9(t *testing.T) {
	if os.Getenv("GATEHOUSE_CHAOS") != "1" {
		t.Skip("chaos test: set GATEHOUSE_CHAOS=1")
	}
	const events, endpoints = 10000, 3
	e := newEnv(t)
	dsn := testenvDSN(t, e)
	log := newPairLog()
	srv := httptest.NewServer(log.handler())
	t.Cleanup(srv.Close)
	for i := range endpoints {
		path := fmt.Sprintf("/ep%d", i)
		_, secrets := e.endpoint(srv.URL+path, endpointOpts{live: true})
		log.secrets[path] = secrets[0]
	}
	logPath := filepath.Join(t.TempDir(), "deliverer.log")
	if p := os.Getenv("GATEHOUSE_CHAOS_LOG"); p != "" {
		logPath = p
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	d := &delivererProc{t: t, bin: buildDeliverer(t), log: logFile, env: []string{
		"DATABASE_URL=" + dsn, "KAFKA_BROKERS=" + strings.Join(e.brokers, ","), "MASTER_KEY=" + testMasterKey,
		"WEBHOOK_ALLOW_CIDRS=loopback", "DATA_DIR=" + t.TempDir(), "LOG_LEVEL=" + config.String("GATEHOUSE_CHAOS_LOG_LEVEL", "warn"),
		"DELIVERER_TOPIC=" + e.topic, "DELIVERER_GROUP=chaos-" + testenv.Suffix(), "DELIVERER_DEAD_LETTER_TOPIC=" + e.dlqTopic,
		// A short lease so the restarted process takes over the dead one's
		// deliveries in seconds rather than 30 s.
		"DELIVERY_TIMEOUT=4s", "DELIVERY_LEASE=8s",
	}}
	t.Cleanup(d.stop)
	d.start()

	// Produce at about 1,000 events/s so the kill lands mid-burst.
	produced := make(chan error, 1)
	go func() {
		w := &kafka.Writer{Addr: kafka.TCP(e.brokers...), Topic: e.topic, Balancer: &kafka.Hash{},
			RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
		defer w.Close()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for sent := 0; sent < events; sent += 100 {
			<-tick.C
			msgs := make([]kafka.Message, 100)
			for i := range msgs {
				ev := e.event(true, "customer.created")
				b, _ := json.Marshal(ev)
				msgs[i] = kafka.Message{Key: []byte(ev.OrganizationID), Value: b}
			}
			if err := w.WriteMessages(context.Background(), msgs...); err != nil {
				produced <- err
				return
			}
		}
		produced <- nil
	}()

	waitFor(t, "deliveries to be under way", 60*time.Second, func() bool { _, n, _, _ := log.snapshot(); return n >= 5000 })
	_, killedAt, _, _ := log.snapshot()
	d.kill9()
	killTime := time.Now()
	var leased int
	_ = e.pool.QueryRow(context.Background(), `SELECT count(*) FROM webhook_deliveries WHERE locked_until IS NOT NULL AND status IN ('pending','failed')`).Scan(&leased)
	d.start()

	if err := <-produced; err != nil {
		t.Fatalf("producing: %v", err)
	}
	lastReport := time.Now()
	waitFor(t, "every pair to be delivered", 10*time.Minute, func() bool {
		pairs, _, _, _ := log.snapshot()
		if time.Since(lastReport) > 5*time.Second {
			lastReport = time.Now()
			var rows, succeeded, leased, due int
			_ = e.pool.QueryRow(context.Background(), `SELECT count(*), count(*) FILTER (WHERE status = 'succeeded'),
				count(*) FILTER (WHERE locked_until IS NOT NULL), count(*) FILTER (WHERE status <> 'succeeded' AND locked_until IS NULL)
				FROM webhook_deliveries`).Scan(&rows, &succeeded, &leased, &due)
			t.Logf("%.0fs after the kill: %d of %d pairs delivered; deliveries: %d rows, %d succeeded, %d leased, %d waiting",
				time.Since(killTime).Seconds(), pairs, events*endpoints, rows, succeeded, leased, due)
		}
		return pairs >= events*endpoints
	})
	recovered := time.Since(killTime)
	waitFor(t, "every delivery to be recorded as succeeded", 2*time.Minute, func() bool {
		return e.count(`SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'`) == events*endpoints
	})
	pairs, requests, mismatch, badSig := log.snapshot()
	rows := e.count(`SELECT count(*) FROM webhook_deliveries`)
	attempts := e.count(`SELECT count(*) FROM webhook_attempts`)
	out, _ := json.Marshal(map[string]any{
		"test": "chaos_kill9", "events": events, "endpoints": endpoints, "pairs_expected": events * endpoints,
		"pairs_delivered": pairs, "requests": requests, "duplicates": requests - pairs,
		"duplicates_with_other_webhook_id": mismatch, "bad_signatures_in_sample": badSig,
		"delivery_rows": rows, "attempt_rows": attempts, "killed_after_requests": killedAt,
		"leases_orphaned_by_kill": leased, "seconds_from_kill_to_all_delivered": recovered.Seconds(),
	})
	fmt.Println(string(out))
	t.Log(string(out))
	if t.Failed() || pairs != events*endpoints || rows != events*endpoints || mismatch != 0 || badSig != 0 {
		t.Fatalf("invariants violated: %s", out)
	}
}

// testenvDSN is the env's database URL (the pool's config).
func testenvDSN(t *testing.T, e *env) string {
	t.Helper()
	return e.pool.Config().ConnString()
}
