// Command gatebench is `make bench`: it starts the platform on free ports
// against a fresh database (the e2e harness), runs the benchmark suites the
// issues ask for, writes bench/results/<UTC date-time>.json and prints a
// summary table. scripts/bench.sh builds the binaries, installs vegeta and
// runs it; see that script for the knobs.
//
// Suites:
//
//	overhead   direct vs plain Caddy vs the full gateway, plus single-feature
//	           ablations, at max throughput (wrk) and at 50 % of plain Caddy's
//	           max (vegeta), against the sample API and a static upstream;
//	           gateway RSS and CPU per 1,000 requests/s
//	accuracy   two gateways sharing Redis, 50 requests/s per key, each driven
//	           at 250/s for 20 s: admitted vs ideal
//	ipmem      the full gateway under a distinct client IP per request:
//	           gateway memory and per-IP Redis keys over time
//	ingest     the control plane's Kafka → Postgres ingestion benchmark
//	deliverer  the deliverer's bench mode (GATEHOUSE_BENCH=1), when present
//
// ingest and deliverer run first, each once the machine is quiet (settle).
// The machine is small and shared, so every ratio comes from runs of one
// process lifetime, interleaved round by round, as medians of per-round
// pairs; load averages before and after each suite are recorded.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/gatehouse/gatehouse/e2e"
)

// Results is the JSON document of one `make bench` run.
type Results struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Machine  machine   `json:"machine"`
	Config   any       `json:"config"`
	Suites   []string  `json:"suites"`

	// (c)/(b): full gateway vs plain Caddy, GET at max throughput, on the
	// sample API upstream (and on the static upstream below).
	ThroughputRatioVsPlainCaddy       *float64 `json:"throughput_ratio_vs_plain_caddy,omitempty"`
	ThroughputRatioVsPlainCaddyStatic *float64 `json:"throughput_ratio_vs_plain_caddy_static_upstream,omitempty"`

	Overhead  map[string]*overheadResult `json:"overhead,omitempty"` // by upstream
	Accuracy  *accuracyResult            `json:"rate_limit_accuracy,omitempty"`
	IPMemory  *ipMemResult               `json:"ip_memory,omitempty"`
	Ingest    *ingestResult              `json:"ingest,omitempty"`
	Deliverer *delivererResult           `json:"deliverer,omitempty"`
	Targets   []targetCheck              `json:"targets"`
	Notes     []string                   `json:"notes,omitempty"`
	Errors    []string                   `json:"errors,omitempty"`
}

// targetCheck is one figure an issue sets a target for.
type targetCheck struct {
	Issue  string `json:"issue"`
	What   string `json:"what"`
	Value  string `json:"value"`
	Target string `json:"target"`
	Met    bool   `json:"met"`
}

type config struct {
	Suites          string        `json:"suites"`
	Upstreams       string        `json:"upstreams"`
	Duration        time.Duration `json:"-"`
	DurationS       float64       `json:"seconds_per_run"`
	Warmup          time.Duration `json:"-"`
	StackWarmup     time.Duration `json:"-"`
	Rounds          int           `json:"rounds"`
	Threads         int           `json:"wrk_threads"`
	Conns           int           `json:"wrk_connections"`
	FixedPct        float64       `json:"fixed_rate_pct_of_plain_max"`
	LightPct        float64       `json:"light_rate_pct_of_plain_max"`
	AccDuration     time.Duration `json:"-"`
	AccLimit        int           `json:"accuracy_limit_per_second"`
	AccRate         int           `json:"accuracy_rate_per_gateway"`
	IPRequests      int64         `json:"ip_memory_requests_wanted"`
	IPMaxTime       time.Duration `json:"-"`
	IngestN         int           `json:"ingest_entries"`
	DelivererEvents int           `json:"deliverer_events,omitempty"`
	Bin             string        `json:"-"`
	Out             string        `json:"-"`
	Vegeta          string        `json:"-"`
	Keep            bool          `json:"-"`
	ProfileVariant  string        `json:"-"`
	ProfilePOST     bool          `json:"-"`
	ProfileRate     int           `json:"-"`
}

func main() {
	var c config
	flag.StringVar(&c.Suites, "suites", "ingest,deliverer,overhead,accuracy,ipmem", "comma-separated suites to run (also: profile, not in the default)")
	flag.StringVar(&c.Upstreams, "upstreams", "sampleapi,static", "upstreams of the overhead suite")
	flag.DurationVar(&c.Duration, "duration", 3*time.Second, "length of each overhead run")
	flag.DurationVar(&c.Warmup, "warmup", 2*time.Second, "warm-up per overhead target")
	flag.DurationVar(&c.StackWarmup, "stack-warmup", 90*time.Second, "warm-up of the whole stack before the first overhead round (the Kafka broker's JIT)")
	flag.IntVar(&c.Rounds, "rounds", 6, "interleaved rounds of the overhead suite (even: each pair runs in each order as often)")
	flag.IntVar(&c.Threads, "threads", 2, "wrk threads")
	flag.IntVar(&c.Conns, "conns", 32, "wrk connections")
	flag.Float64Var(&c.FixedPct, "fixed-pct", 50, "fixed rate as a percentage of plain Caddy's max")
	flag.Float64Var(&c.LightPct, "light-pct", 10, "light fixed rate (p99 targets of issues 3-5) as a percentage of plain Caddy's max")
	flag.DurationVar(&c.AccDuration, "accuracy-duration", 20*time.Second, "length of the rate-limit accuracy run")
	flag.IntVar(&c.AccLimit, "accuracy-limit", 50, "per-key limit of the accuracy run, requests/s")
	flag.IntVar(&c.AccRate, "accuracy-rate", 250, "offered rate per gateway in the accuracy run, requests/s")
	flag.Int64Var(&c.IPRequests, "ip-requests", 1_000_000, "requests (each from a new client IP) in the ip-memory run")
	flag.DurationVar(&c.IPMaxTime, "ip-max-time", 150*time.Second, "time bound of the ip-memory run")
	flag.IntVar(&c.IngestN, "ingest-n", 200_000, "entries of the ingestion benchmark (INGEST_BENCH_N)")
	flag.IntVar(&c.DelivererEvents, "deliverer-events", 0, "GATEHOUSE_BENCH_EVENTS for the deliverer bench (0: its default)")
	flag.StringVar(&c.Bin, "bin", "bin", "directory with the built binaries")
	flag.StringVar(&c.Out, "out", "bench/results", "results directory")
	flag.StringVar(&c.Vegeta, "vegeta", "", "vegeta binary (default <bin>/vegeta)")
	flag.StringVar(&c.ProfileVariant, "profile-variant", "full", "profile suite: the variant to profile (plain, auth, full, full-no-rate-limit, full-no-request-log)")
	flag.IntVar(&c.ProfileRate, "profile-rate", 0, "profile suite: drive at this fixed rate with vegeta (0: max throughput with wrk)")
	flag.BoolVar(&c.ProfilePOST, "profile-post", false, "profile suite: POST with Idempotency-Key instead of GET")
	flag.BoolVar(&c.Keep, "keep", false, "keep the work directory (Caddyfiles, gateway logs) for inspection")
	printDir := flag.String("print-caddyfiles", "", "write every variant's Caddyfile into this directory and exit")
	withEvents := flag.Bool("emit-events", false, "with -print-caddyfiles: render the full variants with emit_events")
	flag.Parse()
	if *printDir != "" {
		if err := printCaddyfiles(*printDir, *withEvents); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	c.DurationS = c.Duration.Seconds()
	if c.Vegeta == "" {
		c.Vegeta = filepath.Join(c.Bin, "vegeta")
	}
	for _, p := range []*string{&c.Bin, &c.Out, &c.Vegeta} {
		if abs, err := filepath.Abs(*p); err == nil {
			*p = abs
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, c))
}

func run(ctx context.Context, c config) int {
	logf := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, time.Now().UTC().Format("15:04:05 ")+format+"\n", a...)
	}
	suites := map[string]bool{}
	for _, s := range strings.Split(c.Suites, ",") {
		suites[strings.TrimSpace(s)] = true
	}
	r := &Results{Started: time.Now().UTC(), Config: c}
	for _, s := range []string{"ingest", "deliverer", "overhead", "accuracy", "ipmem"} { // the order they run in
		if suites[s] {
			r.Suites = append(r.Suites, s)
		}
	}
	r.Machine = machineFacts(e2e.Root())
	name := r.Started.Format("2006-01-02T15-04-05Z") + ".json"
	fail := func(what string, err error) {
		logf("%s: %v", what, err)
		r.Errors = append(r.Errors, what+": "+err.Error())
	}

	if suites["ingest"] && ctx.Err() == nil {
		calm := settle(ctx, logf)
		logf("ingest: go test -bench BenchmarkIngest (INGEST_BENCH_N=%d)", c.IngestN)
		if res, err := runIngest(ctx, e2e.Root(), c.IngestN); err != nil {
			fail("ingest", err)
		} else {
			res.Settled = calm
			r.Ingest = res
			logf("  ingest: %.0f entries/s", res.EntriesPerSec)
		}
	}
	if suites["deliverer"] && ctx.Err() == nil {
		calm := settle(ctx, logf)
		logf("deliverer: bench mode (GATEHOUSE_BENCH=1)")
		r.Deliverer = runDeliverer(ctx, e2e.Root(), c.DelivererEvents)
		r.Deliverer.Settled = calm
		logf("  deliverer: %s %s", r.Deliverer.Status, r.Deliverer.Note)
		if r.Deliverer.Status == "failed" {
			r.Errors = append(r.Errors, "deliverer: "+r.Deliverer.Note)
		}
	}
	// The stack suites last: run after their 25 minutes of load, the
	// delivery benchmark measured half the rate it did after the other
	// suites alone (2,438/s against 4,705–4,986/s); the broker's work on
	// their topics is the likely cause, not pinned down.
	if suites["overhead"] || suites["accuracy"] || suites["ipmem"] || suites["profile"] {
		if err := runStackSuites(ctx, c, suites, r, logf, fail); err != nil {
			fail("stack", err)
		}
	}
	if len(r.Suites) == 0 { // profile only: its files are the output
		if len(r.Errors) > 0 {
			return 1
		}
		return 0
	}
	r.Finished = time.Now().UTC()
	r.Machine.LoadAvgAfter = loadavg()
	r.Targets = checks(r)

	if err := os.MkdirAll(c.Out, 0o755); err != nil {
		fail("results", err)
	}
	path := filepath.Join(c.Out, name)
	b, _ := json.MarshalIndent(r, "", "  ")
	if err := os.WriteFile(path+".tmp", append(b, '\n'), 0o644); err == nil {
		_ = os.Rename(path+".tmp", path)
	} else {
		logf("writing %s: %v", path, err)
	}
	printSummary(os.Stdout, r)
	fmt.Printf("\nresults: %s\n", path)
	if len(r.Errors) > 0 {
		return 1
	}
	return 0
}

// printCaddyfiles renders the variants with example addresses.
func printCaddyfiles(dir string, emitEvents bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, v := range overheadVariants(emitEvents) {
		path, err := writeCaddyfile(dir, v.Name, caddyParams{F: v.Features, Admin: "127.0.0.1:2019", Addr: "127.0.0.1:8080",
			Upstream: "127.0.0.1:8082", ControlPlane: "127.0.0.1:8081", LogTopic: "bench.request-logs.example",
			EventTopic: "bench.events.example", Prefix: "gatehousebench:example:"})
		if err != nil {
			return err
		}
		fmt.Println(path)
	}
	return nil
}

// runStackSuites runs the suites that need the platform running.
func runStackSuites(ctx context.Context, c config, suites map[string]bool, r *Results, logf func(string, ...any), fail func(string, error)) error {
	dir, err := os.MkdirTemp("", "gatebench-")
	if err != nil {
		return err
	}
	if c.Keep {
		logf("work directory (kept): %s", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	logf("starting the stack (fresh database, sampleapi, controlplane, deliverer)")
	e, err := startEnv(ctx, c.Bin, dir)
	if err != nil {
		return err
	}
	defer e.close()
	if e.emitNote != "" {
		r.Notes = append(r.Notes, e.emitNote)
	}
	if suites["overhead"] {
		t, err := e.seed(ctx, "Bench overhead", true)
		if err != nil {
			return err
		}
		r.Overhead = map[string]*overheadResult{}
		cfg := overheadConfig{vegeta: c.Vegeta, seconds: c.Duration, warmup: c.Warmup, stackWarmup: c.StackWarmup, rounds: c.Rounds,
			threads: c.Threads, conns: c.Conns, fixedPct: c.FixedPct, lightPct: c.LightPct}
		for _, up := range strings.Split(c.Upstreams, ",") {
			if ctx.Err() != nil {
				break
			}
			addr := e.static.addr
			if up == "sampleapi" {
				addr = e.stack.Sample.Addr
			} else if up != "static" {
				fail("overhead", fmt.Errorf("unknown upstream %q", up))
				continue
			}
			logf("overhead against %s (%s): %d rounds × %d targets × (%s max + %s fixed rate)", up, addr, c.Rounds, 9, c.Duration, c.Duration)
			res, err := runOverhead(ctx, e, cfg, up, addr, t, logf)
			if err != nil {
				fail("overhead "+up, err)
				continue
			}
			r.Overhead[up] = res
			cfg.stackWarmup = 0 // the broker stays warm for the next upstream
			ratio := res.ThroughputRatioVsPlainCaddy
			if up == "sampleapi" {
				r.ThroughputRatioVsPlainCaddy = &ratio
			} else {
				r.ThroughputRatioVsPlainCaddyStatic = &ratio
			}
		}
	}
	if suites["profile"] && ctx.Err() == nil {
		t, err := e.seed(ctx, "Bench profile", true)
		if err != nil {
			return err
		}
		addr := e.static.addr
		if c.Upstreams == "sampleapi" {
			addr = e.stack.Sample.Addr
		}
		if err := runProfile(ctx, e, c, addr, t, logf); err != nil {
			fail("profile", err)
		}
	}
	if suites["accuracy"] && ctx.Err() == nil {
		t, err := e.seed(ctx, "Bench accuracy", false)
		if err != nil {
			return err
		}
		logf("rate-limit accuracy: 2 gateways, %d/s per key, %d/s each for %s", c.AccLimit, c.AccRate, c.AccDuration)
		if res, err := runAccuracy(ctx, e, c.Vegeta, c.AccLimit, c.AccRate, c.AccDuration, t, logf); err != nil {
			fail("accuracy", err)
		} else {
			r.Accuracy = res
		}
	}
	if suites["ipmem"] && ctx.Err() == nil {
		t, err := e.seed(ctx, "Bench IP memory", false)
		if err != nil {
			return err
		}
		logf("ip-memory: up to %d requests from distinct IPs, at most %s", c.IPRequests, c.IPMaxTime)
		if res, err := runIPMemory(ctx, e, c.Threads, c.Conns, c.IPRequests, c.IPMaxTime, t, logf); err != nil {
			fail("ip-memory", err)
		} else {
			r.IPMemory = res
		}
	}
	return nil
}

// checks lists every figure with a target in the issues.
func checks(r *Results) []targetCheck {
	var out []targetCheck
	for _, up := range []string{"sampleapi", "static"} {
		o := r.Overhead[up]
		if o == nil {
			continue
		}
		for _, c := range o.Comparisons {
			if c.Met == nil {
				continue
			}
			var val, tgt []string
			if c.MinThroughputRatio > 0 {
				val = append(val, fmt.Sprintf("throughput %.3f", c.ThroughputRatio))
				tgt = append(tgt, fmt.Sprintf("≥ %.2f", c.MinThroughputRatio))
			}
			if c.MaxP99AddedUS > 0 && c.P99At == "light" {
				// The target is checked on the p99s of all rounds' requests
				// pooled per side, which one disturbed round can decide; the
				// median of the rounds' own differences is shown beside it.
				v := fmt.Sprintf("p99 %+.0f µs at %g %% load (median of the rounds' differences %+.0f µs)",
					c.P99AddedLightUS, o.LightPct, median(c.P99AddedLightEach))
				if f := o.RedisRoundTrip; f != nil && (c.Issue == "4" || c.Issue == "5") {
					v += fmt.Sprintf(" (a bare Redis round trip at that rate: p99 %.0f µs)", f.P99us)
				}
				val = append(val, v)
				tgt = append(tgt, fmt.Sprintf("≤ %.0f µs", c.MaxP99AddedUS))
			} else if c.MaxP99AddedUS > 0 {
				v := fmt.Sprintf("p99 %+.0f µs at %g %% load", c.P99AddedFixedUS, o.FixedPct)
				if c.SaturatedRuns > 0 {
					v += fmt.Sprintf(" (%d runs saturated)", c.SaturatedRuns)
				}
				val = append(val, v)
				tgt = append(tgt, fmt.Sprintf("≤ %.0f µs", c.MaxP99AddedUS))
			}
			out = append(out, targetCheck{Issue: c.Issue, What: c.Name + " [" + up + "]",
				Value: strings.Join(val, ", "), Target: strings.Join(tgt, ", "), Met: *c.Met})
		}
		var errs, non2xx int64
		for _, m := range o.Runs {
			errs += m.Errors
			non2xx += m.Non2xx
		}
		out = append(out, targetCheck{Issue: "-", What: "overhead runs clean [" + up + "]",
			Value:  fmt.Sprintf("%d errors, %d non-2xx, %.0f rate-limit Redis errors (let through unchecked)", errs, non2xx, o.RateLimitRedisErrors),
			Target: "0, 0, 0", Met: errs == 0 && non2xx == 0 && o.RateLimitRedisErrors == 0})
	}
	if a := r.Accuracy; a != nil {
		out = append(out, targetCheck{Issue: "4", What: "rate-limit accuracy, 2 gateways sharing Redis",
			Value: fmt.Sprintf("%d admitted vs ideal %.0f: %+.2f%%", a.Admitted, a.Ideal, a.ErrorPct), Target: "within ±2 %", Met: a.Met})
	}
	if m := r.IPMemory; m != nil {
		out = append(out, targetCheck{Issue: "4", What: "gateway memory under distinct client IPs",
			Value: fmt.Sprintf("%d IPs: RSS %.1f → %.1f MiB, Go heap %.1f → %.1f MiB (slope %.0f B per 1k IPs), ≤ %d per-IP keys in Redis, %d after",
				m.DistinctIPs, m.RSSBeforeMiB, m.RSSAfterMiB, m.HeapBeforeMiB, m.HeapAfterMiB, m.HeapSlope, m.PerIPKeysMax, m.PerIPKeysAfter),
			Target: "bounded", Met: m.Met})
	}
	if in := r.Ingest; in != nil {
		out = append(out, targetCheck{Issue: "6", What: "ingestion Kafka → Postgres", Value: fmt.Sprintf("%.0f entries/s", in.EntriesPerSec),
			Target: "≥ 20000 entries/s", Met: in.Met})
	}
	return out
}

func printSummary(w io.Writer, r *Results) {
	fmt.Fprintf(w, "\nmake bench — %s, %d × %s, load %s → %s, go %s, commit %s\n",
		r.Started.Format(time.RFC3339), r.Machine.NProc, r.Machine.CPUModel, r.Machine.LoadAvgBefore, r.Machine.LoadAvgAfter,
		r.Machine.GoVersion, r.Machine.GitCommit)
	for _, up := range []string{"sampleapi", "static"} {
		o := r.Overhead[up]
		if o == nil {
			continue
		}
		fmt.Fprintf(w, "\nOverhead, upstream %s — medians of %d rounds, %gs each; fixed rate GET %d/s, POST %d/s (%g %% of plain Caddy's max), light GET %d/s, POST %d/s (%g %%); load %s → %s\n",
			up, o.Rounds, o.Seconds, o.FixedRate["GET"], o.FixedRate["POST"], o.FixedPct, o.LightRate["GET"], o.LightRate["POST"], o.LightPct, o.LoadAvg["before"], o.LoadAvg["after"])
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "target\tmax rps\t(min–max)\tp50 µs\tp99 µs\tp99.9 µs\t│ fixed rps\tsat.\tp50 µs\tp99 µs\tp99.9 µs\tcpu/1k rps\t│ light p50 µs\tp99 µs\tRSS MiB\terr+non2xx\t")
		for _, t := range o.Targets {
			fmt.Fprintf(tw, "%s\t%.0f\t%.0f–%.0f\t%.0f\t%.0f\t%.0f\t│ %.0f\t%d/%d\t%.0f\t%.0f\t%.0f\t%s\t│ %.0f\t%.0f\t%s\t%d\t\n",
				t.Target, t.Max.RPS, t.Max.RPSMin, t.Max.RPSMax, t.Max.P50us, t.Max.P99us, t.Max.P999us,
				t.Fixed.RPS, t.Fixed.SaturatedRuns, t.Fixed.Runs, t.Fixed.P50us, t.Fixed.P99us, t.Fixed.P999us,
				orDash(t.Fixed.CPUPerKRPS, "%.3f"), t.Light.P50us, t.Light.P99us, orDash(t.RSSMiB, "%.1f"),
				t.Max.Errors+t.Max.Non2xx+t.Fixed.Errors+t.Fixed.Non2xx+t.Light.Errors+t.Light.Non2xx)
		}
		tw.Flush()
		if o.RateLimitRedisErrors > 0 {
			fmt.Fprintf(w, "rate_limit could not reach Redis in time for %.0f requests, which it let through unchecked (fail_open); per variant: ", o.RateLimitRedisErrors)
			for _, v := range o.Variants {
				if n := o.Counters[v.Name]["caddy_gatehouse_ratelimit_redis_errors_total"]; n > 0 {
					fmt.Fprintf(w, "%s %.0f  ", v.Name, n)
				}
			}
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w, "sat. = fixed-rate runs that could not hold the rate: their latencies are queueing in a saturated system, not overhead")
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "comparison (on vs off)\tissue\tthroughput ratio (per round)\tp99 added @fixed µs (per round)\tsat.\tp99 added @light µs pooled (per round)\tp99 added @max µs\ttarget\tmet")
		for _, c := range o.Comparisons {
			met := "-"
			if c.Met != nil {
				met = map[bool]string{true: "yes", false: "NO"}[*c.Met]
			}
			tgt := []string{}
			if c.MinThroughputRatio > 0 {
				tgt = append(tgt, fmt.Sprintf("≥%.2f", c.MinThroughputRatio))
			}
			if c.MaxP99AddedUS > 0 {
				tgt = append(tgt, fmt.Sprintf("≤%.0fµs", c.MaxP99AddedUS))
			}
			fmt.Fprintf(tw, "%s\t%s\t%.3f %v\t%+.0f %v\t%d\t%+.0f %v\t%+.0f\t%s\t%s\n", c.Name, c.Issue, c.ThroughputRatio, c.ThroughputRatioEach,
				c.P99AddedFixedUS, c.P99AddedEach, c.SaturatedRuns, c.P99AddedLightUS, c.P99AddedLightEach, c.P99AddedMaxUS, strings.Join(tgt, " "), met)
		}
		tw.Flush()
		if f := o.RedisRoundTrip; f != nil {
			fmt.Fprintf(w, "A bare Redis round trip (%s, %d/s, %d pooled): p50 %.0f µs, p99 %.0f µs (per round %v), p99.9 %.0f µs\n",
				f.What, f.Rate, f.Requests, f.P50us, f.P99us, f.P99EachUS, f.P999us)
		}
		fmt.Fprintln(w, "\nCPU ms per request at the fixed rate (= cores per 1,000 requests/s), medians; Redis, Kafka and Postgres are shared with other work on the machine:")
		procs := []string{"gateway", "generator", "redis", "kafka", "postgres", "sampleapi"}
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "target\t"+strings.Join(procs, "\t")+"\ttotal\t")
		for _, t := range o.Targets {
			fmt.Fprint(tw, t.Target)
			total := 0.0
			for _, p := range procs {
				v, ok := t.Fixed.CPU[p]
				if !ok {
					fmt.Fprint(tw, "\t-")
					continue
				}
				total += v
				fmt.Fprintf(tw, "\t%.3f", v)
			}
			fmt.Fprintf(tw, "\t%.3f\t\n", total)
		}
		tw.Flush()
	}
	if a := r.Accuracy; a != nil {
		fmt.Fprintf(w, "\nRate-limit accuracy: %d gateways, %d/s per key (burst %d), %d/s offered to each for %gs: offered %d, admitted %d, ideal %.0f → error %+.2f%% (vs send span %.3fs: ideal %.1f, %+.2f%%); 429: %d, other: %d, rate-limit Redis errors: %.0f\n",
			a.Gateways, a.Limit, a.Burst, a.RatePerGW, a.Seconds, a.Offered, a.Admitted, a.Ideal, a.ErrorPct, a.SpanSeconds, a.IdealFromSpan, a.ErrorPctSpan, a.Limited, a.Other, a.RedisErrors)
	}
	if m := r.IPMemory; m != nil {
		fmt.Fprintf(w, "\nDistinct client IPs: %d requests from %d distinct IPs in %.0fs (%.0f rps, %d errors, %d non-2xx); gateway RSS %.1f → %.1f MiB (peak %.1f), Go heap in use %.1f → %.1f MiB (slope %.0f bytes per 1,000 IPs); per-IP keys in Redis: at most %d seen (max TTL sampled in the table below), %d two seconds after\n",
			m.Requests, m.DistinctIPs, m.Seconds, m.RPS, m.Errors, m.Non2xx, m.RSSBeforeMiB, m.RSSAfterMiB, m.PeakRSSMiB, m.HeapBeforeMiB, m.HeapAfterMiB, m.HeapSlope, m.PerIPKeysMax, m.PerIPKeysAfter)
		var between []ipSample
		var maxTTL int64
		for _, s := range m.Samples {
			if s.DuringLoad {
				maxTTL = max(maxTTL, s.MaxTTLms)
			} else {
				between = append(between, s)
			}
		}
		fmt.Fprintf(w, "  per-IP key TTLs sampled under load: at most %d ms; samples between runs (every one is in the JSON):\n", maxTTL)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "second\trequests sent\tRSS MiB\theap MiB\theap objects\tgoroutines\t")
		step := max(1, len(between)/12)
		for i, s := range between {
			if i%step == 0 || i == len(between)-1 {
				fmt.Fprintf(tw, "%.0f\t%d\t%.1f\t%.1f\t%d\t%d\t\n", s.Second, s.RequestsSent, s.RSSMiB, s.HeapInuseMiB, s.HeapObjects, s.Goroutines)
			}
		}
		tw.Flush()
	}
	if in := r.Ingest; in != nil {
		fmt.Fprintf(w, "\nIngestion (Kafka → Postgres, one worker): %.0f entries/s over %d entries\n", in.EntriesPerSec, in.Entries)
	}
	if d := r.Deliverer; d != nil {
		fmt.Fprintf(w, "\nWebhook delivery: %s", d.Status)
		if d.Figures != nil {
			keys := make([]string, 0, len(d.Figures))
			for k := range d.Figures {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				fmt.Fprintf(w, " %s=%v", k, d.Figures[k])
			}
		} else if d.Note != "" {
			fmt.Fprintf(w, " (%s)", firstLine(d.Note))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "\nTargets:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, t := range r.Targets {
		fmt.Fprintf(tw, "  issue %s\t%s\t%s\t%s\t%s\n", t.Issue, t.What, t.Value, t.Target, map[bool]string{true: "met", false: "MISSED"}[t.Met])
	}
	tw.Flush()
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "ERROR: %s\n", firstLine(e))
	}
}

func orDash(v float64, format string) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf(format, v)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// machine is what the figures were measured on.
type machine struct {
	NProc         int    `json:"nproc"`
	CPUModel      string `json:"cpu_model"`
	MemTotalMiB   int64  `json:"mem_total_mib"`
	Kernel        string `json:"kernel"`
	GoVersion     string `json:"go_version"`
	GitCommit     string `json:"git_commit"`
	GitDirty      bool   `json:"git_dirty"`
	Wrk           string `json:"wrk"`
	LoadAvgBefore string `json:"loadavg_before"`
	LoadAvgAfter  string `json:"loadavg_after"`
}

func machineFacts(root string) machine {
	m := machine{NProc: runtime.NumCPU(), LoadAvgBefore: loadavg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				var kib int64
				fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kib)
				m.MemTotalMiB = kib / 1024
			}
		}
	}
	m.Kernel, _ = execOutput("uname", "-sr")
	m.GoVersion, _ = execOutput("go", "version")
	m.GitCommit, _ = execOutput("git", "-C", root, "rev-parse", "HEAD")
	if st, err := execOutput("git", "-C", root, "status", "--porcelain", "--untracked-files=no"); err == nil {
		m.GitDirty = st != ""
	}
	if v, err := execOutput("sh", "-c", "wrk --version 2>&1 | head -1"); err == nil {
		m.Wrk = v
	}
	return m
}

// settled is how the machine was when a suite began: settle waited
// Seconds for it to go quiet, and the last second measured had BusyPct of
// its CPU busy.
type settled struct {
	Seconds float64 `json:"seconds"`
	BusyPct float64 `json:"busy_pct"`
}

// settle waits, at most a minute, until the machine's CPU is less than a
// quarter busy over one second. Ingestion and delivery measure one process
// each, so whatever else still runs (a run of ours that just ended, a
// broker deleting topics, autovacuum) would be charged to them; they run
// first, and each waits for quiet. What it found goes in the results
// either way.
func settle(ctx context.Context, logf func(string, ...any)) settled {
	const quiet, most = 25.0, time.Minute
	start := time.Now()
	busy := -1.0
	for time.Since(start) < most && ctx.Err() == nil {
		if busy = cpuBusy(time.Second); busy < quiet { // -1: nothing to go by
			break
		}
	}
	s := settled{Seconds: time.Since(start).Round(100 * time.Millisecond).Seconds(), BusyPct: math.Round(busy)}
	if s.BusyPct >= quiet {
		logf("  the machine stayed %.0f%% busy for a minute; measuring anyway", s.BusyPct)
	} else if s.Seconds > 1.5 {
		logf("  waited %.0f s for the machine to quiet down (%.0f%% busy)", s.Seconds, s.BusyPct)
	}
	return s
}

// cpuBusy is the share of the machine's CPU time, in percent, that was not
// idle or waiting for I/O over d; -1 if /proc/stat cannot be read.
func cpuBusy(d time.Duration) float64 {
	read := func() (busy, total uint64, ok bool) {
		b, err := os.ReadFile("/proc/stat")
		if err != nil {
			return 0, 0, false
		}
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		if len(f) < 6 || f[0] != "cpu" {
			return 0, 0, false
		}
		for i, v := range f[1:] {
			n, _ := strconv.ParseUint(v, 10, 64)
			total += n
			if i != 3 && i != 4 { // idle, iowait
				busy += n
			}
		}
		return busy, total, true
	}
	b0, t0, ok0 := read()
	time.Sleep(d)
	b1, t1, ok1 := read()
	if !ok0 || !ok1 || t1 <= t0 {
		return -1
	}
	return 100 * float64(b1-b0) / float64(t1-t0)
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
