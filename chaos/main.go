// Command gatechaos is `make chaos`: scripted faults under steady load, each
// with invariants checked, against the whole platform (the e2e harness:
// gateway, control plane, sample API and deliverer as real processes on free
// ports and a fresh database).
//
// It stops and starts Postgres, Redis and Kafka, so it must run against
// services of its own: scripts/chaos.sh starts them in .data/chaos on
// non-default ports and refuses the shared ones, and every stop is checked
// with ss against our own pid files first. Run it through that script.
//
// Scenarios (each with its own tenant, webhook endpoint and load):
//
//	kafka-outage           Kafka stopped 30 s: no client errors, no log or event lost
//	redis-outage           Redis stopped 10 s: rate limits fail open, keyed requests 503, recovery
//	postgres-outage        Postgres stopped 10 s: cached keys served, unknown keys 503, nothing lost
//	kill9-deliverer        kill -9 of the deliverer during a burst of events
//	kill9-controlplane     kill -9 of the control plane (ingesters) under load, twice
//	kill9-gateway          kill -9 of the gateway under load, three times: no answered create loses its event
//	gateway-reload         config reloads under load: no dropped requests
//	deliverer-kill9-proof  the deliverer package's TestChaosKill9 (10,000 events, 3 endpoints)
//
// Per scenario it prints the requests sent, a status histogram per phase,
// the invariants with their numbers and PASS/FAIL; it writes
// bench/results/chaos-<UTC date-time>.json and exits 1 if any failed.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/e2e"
)

type config struct {
	bin       string
	out       string
	script    string
	rate      int
	only      string
	kafkaDown time.Duration
	redisDown time.Duration
	pgDown    time.Duration
	drain     time.Duration
}

// env is what the scenarios share.
type env struct {
	cfg   config
	stack *e2e.Stack
	db    *pgxpool.Pool
	rcv   *receiver
	svc   *services
	hc    *http.Client
}

// summary is the JSON document of one run.
type summary struct {
	Started   time.Time `json:"started"`
	Finished  time.Time `json:"finished"`
	Seconds   float64   `json:"seconds"`
	Pass      bool      `json:"pass"`
	Machine   any       `json:"machine"`
	Config    any       `json:"config"`
	Services  any       `json:"services"`
	Scenarios []*report `json:"scenarios"`
	Error     string    `json:"error,omitempty"`
}

func main() {
	var c config
	flag.StringVar(&c.bin, "bin", "bin", "directory with the built binaries")
	flag.StringVar(&c.out, "out", "bench/results", "results directory")
	flag.StringVar(&c.script, "services", "scripts/services.sh", "the services script (its environment must isolate the chaos services)")
	flag.IntVar(&c.rate, "rate", 100, "steady load, requests/s per scenario")
	flag.StringVar(&c.only, "scenarios", "", "comma-separated scenario names (default: all)")
	flag.DurationVar(&c.kafkaDown, "kafka-down", 30*time.Second, "how long Kafka stays stopped")
	flag.DurationVar(&c.redisDown, "redis-down", 10*time.Second, "how long Redis stays stopped")
	flag.DurationVar(&c.pgDown, "postgres-down", 10*time.Second, "how long Postgres stays stopped")
	flag.DurationVar(&c.drain, "drain", 4*time.Minute, "bound on waiting for logs, events and deliveries to land after a scenario")
	flag.Parse()
	if c.rate < 1 || c.rate > 500 {
		fatalf("-rate must be within 1..500 (the machine is shared)")
	}
	os.Exit(run(c))
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "gatechaos: "+format+"\n", args...)
	os.Exit(2)
}

func run(c config) int {
	all := scenarios(c)
	var selected []scenario
	for _, sc := range all {
		if c.only == "" || slices.Contains(strings.Split(c.only, ","), sc.name) {
			selected = append(selected, sc)
		}
	}
	if len(selected) == 0 {
		fatalf("no scenario matches %q", c.only)
	}
	script, _ := filepath.Abs(c.script)
	bin, _ := filepath.Abs(c.bin)
	svc, err := newServices(script)
	if err != nil {
		fatalf("%v", err)
	}
	if u, err := url.Parse(os.Getenv("DATABASE_URL")); err != nil || u.Port() != fmt.Sprint(svc.ports["postgres"]) {
		fatalf("DATABASE_URL must point at the chaos Postgres on port %d", svc.ports["postgres"])
	}
	for _, v := range []struct{ env, port string }{
		{"REDIS_URL", fmt.Sprint(svc.ports["redis"])}, {"KAFKA_BROKERS", fmt.Sprint(svc.ports["kafka"])},
	} {
		if !strings.Contains(os.Getenv(v.env), ":"+v.port) {
			fatalf("%s must point at the chaos service on port %s", v.env, v.port)
		}
	}
	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()

	sum := summary{Started: time.Now().UTC()}
	host, _ := os.Hostname()
	sum.Machine = map[string]any{"hostname": host, "cpus": runtime.NumCPU(), "go": runtime.Version(), "os": runtime.GOOS + "/" + runtime.GOARCH, "load_before": loadavg()}
	sum.Config = map[string]any{"binaries": bin, "steady_rate_per_s": c.rate, "kafka_down_s": c.kafkaDown.Seconds(), "redis_down_s": c.redisDown.Seconds(),
		"postgres_down_s": c.pgDown.Seconds(), "drain_bound_s": c.drain.Seconds(),
		"mix": "45% GET /v1/customers/{id}, 20% POST /v1/customers with Idempotency-Key, 5% replays, 10% POST /v1/customers, 20% POST /v1/events"}
	sharedBefore := sharedUntouched()
	services := map[string]any{"data_dir": svc.dataDir, "ports": svc.ports, "shared_default_ports_listening_before": sharedBefore}
	sum.Services = services

	stderr := os.Stderr
	fmt.Fprintf(stderr, "==> chaos services: %s, ports %v; shared default ports listening: %v\n", svc.dataDir, svc.ports, sharedBefore)
	fmt.Fprintf(stderr, "==> starting the stack (gateway, controlplane, sampleapi, deliverer)\n")
	startCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	stack, err := e2e.Start(startCtx, e2e.Options{Bin: bin, ExtraEnv: []string{
		// The scenarios judge faults, not limits: every request of the
		// steady load must be admitted.
		"RATE_LIMIT_LIVE=100000", "RATE_LIMIT_SANDBOX=100000", "RATE_LIMIT_ORG_LIVE=100000",
		"RATE_LIMIT_ORG_SANDBOX=100000", "RATE_LIMIT_IP=100000",
	}})
	cancel()
	if err != nil {
		sum.Error = "starting the stack: " + err.Error()
		fmt.Fprintln(stderr, sum.Error)
		writeSummary(c, &sum)
		return 1
	}
	defer stack.Stop()
	fmt.Fprintf(stderr, "==> stack up; process logs in %s\n", stack.Dir)
	db, err := pgxpool.New(ctx, stack.DatabaseURL)
	if err != nil {
		fatalf("%v", err)
	}
	defer db.Close()
	rcv := newReceiver()
	defer rcv.close()
	e := &env{cfg: c, stack: stack, db: db, rcv: rcv, svc: svc, hc: newHTTPClient()}

	for _, sc := range selected {
		if ctx.Err() != nil {
			break
		}
		rep := newReport(sc.name, sc.title, c.rate, stderr)
		fmt.Fprintf(stderr, "==> scenario %s: %s\n", sc.name, sc.title)
		runScenario(ctx, e, sc, rep)
		rep.finish()
		rep.print(os.Stdout)
		sum.Scenarios = append(sum.Scenarios, rep)
	}

	sum.Finished = time.Now().UTC()
	sum.Seconds = round1(sum.Finished.Sub(sum.Started).Seconds())
	sum.Pass = ctx.Err() == nil && len(sum.Scenarios) == len(selected)
	for _, r := range sum.Scenarios {
		sum.Pass = sum.Pass && r.Pass
	}
	if ctx.Err() != nil {
		sum.Error = "interrupted"
	}
	services["shared_default_ports_listening_after"] = sharedUntouched()
	sum.Machine.(map[string]any)["load_after"] = loadavg()

	fmt.Printf("\n=== chaos summary (%.0f s)\n", sum.Seconds)
	for _, r := range sum.Scenarios {
		fmt.Printf("  %s  %-22s %6d requests  %3d unexpected  %2d/%d invariants  %4.0f s\n", verdict(r.Pass), r.Name,
			r.RequestsSent, r.Unexpected, passed(r.Invariants), len(r.Invariants), r.Seconds)
	}
	if !sum.Pass {
		fmt.Printf("process logs: %s\n", stack.Dir)
	}
	fmt.Printf("CHAOS %s\n", verdict(sum.Pass))
	writeSummary(c, &sum)
	if sum.Pass {
		return 0
	}
	return 1
}

// runScenario runs one scenario with the stack healthy and every service
// up before it, and checks the stack is healthy after it.
func runScenario(ctx context.Context, e *env, sc scenario, rep *report) {
	defer func() {
		if p := recover(); p != nil {
			rep.Error = fmt.Sprintf("panic: %v", p)
		}
	}()
	for _, name := range []string{"postgres", "redis", "kafka"} {
		if !portOpen(e.svc.ports[name]) {
			rep.note("%s is down before the scenario; starting it", name)
			if err := e.svc.start(ctx, name); err != nil {
				rep.Error = err.Error()
				return
			}
		}
	}
	if sc.name != "deliverer-kill9-proof" {
		// A process an earlier scenario's fault killed (it is a failure of
		// that scenario) is started again, so that one bug does not fail
		// every scenario after it.
		for _, p := range e.procs() {
			if !e.dead(p) {
				continue
			}
			rep.note("harness: %s died in an earlier scenario; starting it again", p.Name)
			if err := e.stack.Restart(ctx, p); err != nil {
				rep.Error = fmt.Sprintf("restarting %s: %v", p.Name, err)
				return
			}
		}
		if err := e.waitHealthy(ctx, time.Minute); err != nil {
			rep.Error = "stack not healthy before the scenario: " + err.Error()
			return
		}
	}
	if err := sc.run(ctx, e, rep); err != nil {
		rep.Error = err.Error()
	}
	if sc.name != "deliverer-kill9-proof" {
		err := e.healthy(ctx)
		rep.check("every process healthy afterwards, none died on its own", err == nil, "%s", errOr(err, "gateway, controlplane, sampleapi, deliverer answer /healthz"))
	}
}

func passed(invs []invariant) int {
	n := 0
	for _, i := range invs {
		if i.Pass {
			n++
		}
	}
	return n
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func writeSummary(c config, sum *summary) {
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "gatechaos:", err)
		return
	}
	path := filepath.Join(c.out, "chaos-"+sum.Started.Format("2006-01-02T15-04-05Z")+".json")
	b, err := json.MarshalIndent(sum, "", "  ")
	if err == nil {
		err = os.WriteFile(path, append(b, '\n'), 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gatechaos: writing results:", err)
		return
	}
	fmt.Fprintf(os.Stdout, "results: %s\n", path)
}
