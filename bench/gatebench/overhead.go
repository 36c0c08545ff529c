package main

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// Variants of the overhead suite. "plain" is (b) of issue 9: the same
// binary and Caddyfile with none of our directives; "full" is (c).
func overheadVariants(emitEvents bool) []Variant {
	all := Features{RequestID: true, APIKey: true, RateLimit: true, Idempotency: true, RequestLog: true, EmitEvents: emitEvents}
	noRL, noLog := all, all
	noRL.RateLimit = false
	noLog.RequestLog = false
	allIPs, noRLIPs := all, noRL
	allIPs.TrustLocal, noRLIPs.TrustLocal = true, true
	return []Variant{
		{Name: "plain", About: "(b) plain Caddy reverse_proxy from our binary, none of our directives", Features: Features{}},
		{Name: "auth", About: "plain + request_id + api_key (issue 3)", Features: Features{RequestID: true, APIKey: true}},
		{Name: "full", About: "(c) the full gateway chain", Features: all},
		{Name: "full-no-rate-limit", About: "full without rate_limit (issue 4)", Features: noRL},
		{Name: "full-no-request-log", About: "full without request_log (issue 6)", Features: noLog},
		{Name: "full-xff", About: "full, trusting X-Forwarded-For from 127.0.0.1 (issue 4, many clients)", Features: allIPs},
		{Name: "full-no-rate-limit-xff", About: "full-xff without rate_limit (issue 4, many clients)", Features: noRLIPs},
	}
}

// target is one thing the load generators drive.
type target struct {
	Name    string `json:"name"`
	Variant string `json:"variant"` // "" = direct to the upstream
	Request string `json:"request"`
	// MaxOnly targets run at maximum throughput only (vegeta, which drives
	// the fixed rates, cannot vary X-Forwarded-For per request).
	MaxOnly bool `json:"max_only,omitempty"`
	req     Request
}

// comparison is an on/off pair with the issue's targets.
type comparison struct {
	Name  string `json:"name"`
	Issue string `json:"issue"`
	On    string `json:"on"`
	Off   string `json:"off"`
	// MinThroughputRatio and MaxP99AddedUS are the issue's targets (0: none).
	MinThroughputRatio float64 `json:"target_min_throughput_ratio,omitempty"`
	MaxP99AddedUS      float64 `json:"target_max_p99_added_us,omitempty"`

	// ThroughputRatio is on ÷ off at max throughput: the median of the
	// per-round ratios (each round measures both back to back).
	ThroughputRatio     float64   `json:"throughput_ratio"`
	ThroughputRatioEach []float64 `json:"throughput_ratio_per_round"`
	// P99Added* are median per-round differences on − off, in µs.
	P50AddedFixedUS float64   `json:"p50_added_at_fixed_rate_us"`
	P99AddedFixedUS float64   `json:"p99_added_at_fixed_rate_us"`
	P99AddedEach    []float64 `json:"p99_added_at_fixed_rate_per_round_us"`
	P99AddedMaxUS   float64   `json:"p99_added_at_max_us"`
	// P99AddedLight* are the same at the light rate: the p99 of every
	// round's requests pooled (a tail percentile from all the samples,
	// thousands per side, rather than a median of noisy per-round p99s),
	// and per round for the spread.
	P99AddedLightUS   float64   `json:"p99_added_at_light_rate_us"`
	P99AddedLightEach []float64 `json:"p99_added_at_light_rate_per_round_us"`
	// P99At is the rate the p99 target is judged at: "fixed" (issue 9's
	// 50 % of plain Caddy's max) or "light" (issues 3–5 name no load).
	P99At string `json:"p99_target_judged_at"`
	// SaturatedRuns counts fixed-rate runs of either side that could not
	// hold the rate: their latencies are queueing, not overhead.
	SaturatedRuns int `json:"fixed_rate_saturated_runs"`
	// Met: throughput ratio (max) and p99 added (fixed rate) within target.
	Met *bool `json:"met,omitempty"`
}

// measurement is one run of one target.
type measurement struct {
	Target string `json:"target"`
	Round  int    `json:"round"`
	Load
	GatewayCores float64 `json:"gateway_cpu_cores,omitempty"`
	CPUPerKRPS   float64 `json:"gateway_cpu_cores_per_1000_rps,omitempty"`
	RSSMiB       float64 `json:"gateway_rss_mib_after,omitempty"`
	// CPU is CPU seconds per 1,000 requests (= cores per 1,000 requests/s)
	// of every process on the request's path: gateway, the load generator,
	// Redis, Kafka, Postgres, the sample API (fixed-rate runs only).
	CPU map[string]float64 `json:"cpu_cores_per_1000_rps,omitempty"`
}

// stats summarises a target's runs in one mode.
type stats struct {
	Runs       int     `json:"runs"`
	RPS        float64 `json:"rps"` // medians…
	RPSMin     float64 `json:"rps_min"`
	RPSMax     float64 `json:"rps_max"`
	P50us      float64 `json:"p50_us"`
	P99us      float64 `json:"p99_us"`
	P999us     float64 `json:"p999_us"`
	Errors     int64   `json:"errors"` // …and totals
	Non2xx     int64   `json:"non_2xx"`
	CPUPerKRPS float64 `json:"gateway_cpu_cores_per_1000_rps,omitempty"`
	// CPU is the median of each process's CPU per 1,000 requests.
	CPU map[string]float64 `json:"cpu_cores_per_1000_rps,omitempty"`
	// SaturatedRuns did not reach the fixed rate (see Load.Saturated).
	SaturatedRuns int `json:"saturated_runs,omitempty"`
}

type targetSummary struct {
	Target  string `json:"target"`
	Variant string `json:"variant"`
	Request string `json:"request"`
	Max     stats  `json:"max"`
	Fixed   stats  `json:"fixed_rate"`
	Light   stats  `json:"light_rate"`
	// Resource figures of the variant's gateway process.
	RSSMiB     float64 `json:"gateway_rss_mib,omitempty"`      // VmRSS after all its load
	PeakRSSMiB float64 `json:"gateway_peak_rss_mib,omitempty"` // VmHWM
}

// overheadResult is the suite's output for one upstream.
type overheadResult struct {
	Upstream    string            `json:"upstream"`
	Description string            `json:"description"`
	Connections int               `json:"wrk_connections"`
	Threads     int               `json:"wrk_threads"`
	Seconds     float64           `json:"seconds_per_run"`
	Rounds      int               `json:"rounds"`
	FixedPct    float64           `json:"fixed_rate_pct_of_plain_max"`
	FixedRate   map[string]int    `json:"fixed_rate_per_request"` // request kind → rate
	LightPct    float64           `json:"light_rate_pct_of_plain_max"`
	LightRate   map[string]int    `json:"light_rate_per_request"`
	Variants    []Variant         `json:"variants"`
	Targets     []targetSummary   `json:"targets"`
	Comparisons []comparison      `json:"comparisons"`
	Runs        []measurement     `json:"runs"`
	LoadAvg     map[string]string `json:"loadavg"`
	Services    services          `json:"service_pids"` // whose CPU the fixed-rate runs attribute
	// Counters are each variant's non-zero Gatehouse counters after the
	// suite: rate-limit Redis errors (requests let through unchecked),
	// idempotency outcomes, request-log sends.
	Counters map[string]map[string]float64 `json:"gateway_counters"`
	// RateLimitRedisErrors sums caddy_gatehouse_ratelimit_redis_errors_total
	// over the variants: requests whose limits could not be decided.
	RateLimitRedisErrors float64 `json:"ratelimit_redis_errors"`

	// (c)/(b) for GET at max throughput, issue 9's headline figure.
	ThroughputRatioVsPlainCaddy float64 `json:"throughput_ratio_vs_plain_caddy"`
	// (c)/(b) for POST with Idempotency-Key vs plain POST.
	ThroughputRatioVsPlainCaddyPOST float64 `json:"throughput_ratio_vs_plain_caddy_post"`
	// p99 added by (c) over (b) at 50 % of (b)'s maximum, GET, µs.
	P99AddedAtHalfLoadUS float64 `json:"p99_added_at_half_load_us"`
	// RedisRoundTrip is a bare Redis round trip at the light GET rate, in
	// the light rounds: the floor of what rate_limit and idempotency add.
	RedisRoundTrip *roundTripFloor `json:"redis_round_trip_at_light_rate,omitempty"`
}

type overheadConfig struct {
	vegeta  string
	seconds time.Duration
	warmup  time.Duration
	// stackWarmup drives the full gateway before anything is measured. A
	// Kafka broker started for the run compiles its hot paths for the first
	// minute or so of load: C2 took ~0.6 of a core, and the broker's CPU per
	// logged request fell from 84–91 µs to ~30 µs once it was done (profile
	// suite, three runs right after a fresh start; in session 12, six
	// 10 s runs after a fresh start: 91, 63, 54, 29, 19, 33 µs, so it takes
	// more than 45 s of load). Without it, the first rounds' variants with
	// request_log pay the compiler. (C1 only, -XX:TieredStopAtLevel=1,
	// warms up sooner but settles higher: 52 … 30–39 µs.)
	stackWarmup time.Duration
	rounds      int
	threads     int
	conns       int
	fixedPct    float64
	lightPct    float64
}

// fixedRun drives one target at rate with vegeta and attributes the CPU
// every process on the request's path spent meanwhile.
func fixedRun(ctx context.Context, e *env, cfg overheadConfig, svcs services, upstreamName, base string, req Request,
	tg target, g *gateway, rate int) (measurement, error) {
	var before procStat
	if g != nil {
		before = readProc(g.pid())
	}
	svcBefore := svcs.ticks()
	l, err := vegetaRate(ctx, cfg.vegeta, e.dir, base, req, rate, cfg.seconds)
	if err != nil {
		return measurement{}, err
	}
	svcAfter := svcs.ticks()
	m := measurement{Target: tg.Name, Load: l, CPU: map[string]float64{}}
	if l.Requests > 0 {
		perK := func(sec float64) float64 { return round3(sec * 1000 / float64(l.Requests)) }
		m.CPU["generator"] = perK(l.GeneratorCPU)
		for name, t := range svcAfter {
			if name == "sampleapi" && upstreamName != "sampleapi" {
				continue
			}
			m.CPU[name] = perK(float64(t-svcBefore[name]) / clockTicks)
		}
	}
	if g != nil {
		// CPU seconds per 1,000 requests is cores per 1,000 requests/s,
		// whatever the window the readings span.
		after := readProc(g.pid())
		cpu := cpuSeconds(before, after)
		m.GatewayCores = round3(cpu / l.Seconds)
		if l.Requests > 0 {
			m.CPUPerKRPS = round3(cpu * 1000 / float64(l.Requests))
			m.CPU["gateway"] = m.CPUPerKRPS
		}
		m.RSSMiB = mib(after.rssKiB)
	}
	return m, nil
}

// runOverhead runs every target at max throughput then at a fixed rate,
// round after round, in an order that changes each round, and summarises
// medians and paired on/off ratios.
func runOverhead(ctx context.Context, e *env, cfg overheadConfig, upstreamName, upstream string, t tenant, logf func(string, ...any)) (*overheadResult, error) {
	res := &overheadResult{Upstream: upstreamName, Connections: cfg.conns, Threads: cfg.threads, Seconds: cfg.seconds.Seconds(),
		Rounds: cfg.rounds, FixedPct: cfg.fixedPct, LightPct: cfg.lightPct, LoadAvg: map[string]string{"before": loadavg()}}
	custPath := "/v1/customers/" + t.Customer
	res.Description = "GET " + custPath + " (and POST /v1/customers)"
	if upstreamName == "sampleapi" {
		res.Description += " on the sample API, which reads the customer from Postgres"
	} else {
		res.Description += " on an in-process Go server returning fixed JSON"
	}
	res.Variants = overheadVariants(e.emitEvents)
	svcs := findServices(ctx, e)
	res.Services = svcs

	gws := map[string]*gateway{}
	defer func() {
		for _, g := range gws {
			g.stop()
		}
	}()
	for _, v := range res.Variants {
		g, err := e.startVariant(ctx, upstreamName, v, upstream,
			"RATE_LIMIT_LIVE=1000000", "RATE_LIMIT_SANDBOX=1000000", "RATE_LIMIT_ORG_LIVE=1000000",
			"RATE_LIMIT_ORG_SANDBOX=1000000", "RATE_LIMIT_IP=1000000")
		if err != nil {
			return nil, err
		}
		gws[v.Name] = g
	}

	get := Request{Name: "GET", Method: "GET", Path: custPath}
	post := Request{Name: "POST", Method: "POST", Path: "/v1/customers", ContentType: "application/x-www-form-urlencoded",
		Body: "email=bench%40example.com&name=Bench+Customer&description=created+by+make+bench"}
	postKey := post
	postKey.Name, postKey.IdempotencyKeys = "POST+Idempotency-Key", true
	// Every request from its own client address: no two requests share a
	// rate-limit script run, which concurrent requests of one client do.
	getIPs := get
	getIPs.Name, getIPs.DistinctIPs = "GET, own IP each", true
	// The order keeps each on/off pair next to each other; rounds alternate
	// forward and backward (A B B A …) so that drift in the machine's
	// background load falls on both sides of every pair alike.
	targets := []target{
		{Name: "direct GET", Request: "GET", req: get},
		{Name: "plain GET", Variant: "plain", Request: "GET", req: get},
		{Name: "auth GET", Variant: "auth", Request: "GET", req: get},
		{Name: "full-no-rate-limit GET", Variant: "full-no-rate-limit", Request: "GET", req: get},
		{Name: "full GET", Variant: "full", Request: "GET", req: get},
		{Name: "full-no-request-log GET", Variant: "full-no-request-log", Request: "GET", req: get},
		{Name: "plain POST", Variant: "plain", Request: "POST", req: post},
		{Name: "full POST+Idempotency-Key", Variant: "full", Request: "POST+Idempotency-Key", req: postKey},
		{Name: "full POST", Variant: "full", Request: "POST", req: post},
		{Name: "full-no-rate-limit-xff GET, own IP each", Variant: "full-no-rate-limit-xff", Request: "GET", req: getIPs, MaxOnly: true},
		{Name: "full-xff GET, own IP each", Variant: "full-xff", Request: "GET", req: getIPs, MaxOnly: true},
	}
	base := func(tg target) string {
		if tg.Variant == "" {
			return "http://" + upstream
		}
		return "http://" + gws[tg.Variant].addr
	}
	stage := func(tg target) Request {
		return e.signed(t, tg.req) // a fresh signature for every stage
	}

	if cfg.stackWarmup > 0 {
		full := targets[slices.IndexFunc(targets, func(tg target) bool { return tg.Name == "full POST+Idempotency-Key" })]
		logf("warming the stack up: %s for %s", full.Name, cfg.stackWarmup)
		if _, err := wrkMax(ctx, e.dir, base(full), stage(full), cfg.threads, cfg.conns, cfg.stackWarmup); err != nil {
			return nil, err
		}
	}
	// Probe and warm up every target (connections, key cache, JIT-free Go
	// but cold pools and caches all the same).
	for _, tg := range targets {
		if err := probe(ctx, base(tg), stage(tg)); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", upstreamName, tg.Name, err)
		}
		if _, err := wrkMax(ctx, e.dir, base(tg), stage(tg), cfg.threads, cfg.conns, cfg.warmup); err != nil {
			return nil, err
		}
	}

	order := func(round int) []target {
		o := slices.Clone(targets)
		if round%2 == 1 {
			slices.Reverse(o)
		}
		return o
	}
	runs := map[string]map[string][]measurement{"max": {}, "rate": {}, "light": {}}

	for round := range cfg.rounds {
		for _, tg := range order(round) {
			l, err := wrkMax(ctx, e.dir, base(tg), stage(tg), cfg.threads, cfg.conns, cfg.seconds)
			if err != nil {
				return nil, err
			}
			m := measurement{Target: tg.Name, Round: round + 1, Load: l}
			if g := gws[tg.Variant]; g != nil {
				m.RSSMiB = mib(readProc(g.pid()).rssKiB)
			}
			runs["max"][tg.Name] = append(runs["max"][tg.Name], m)
			res.Runs = append(res.Runs, m)
			logf("  %-10s max   round %d  %-28s %8.0f rps  p50 %7.0fµs  p99 %7.0fµs  err %d non2xx %d",
				upstreamName, round+1, tg.Name, l.RPS, l.P50us, l.P99us, l.Errors, l.Non2xx)
		}
	}
	rates := func(pct float64) map[string]int {
		out := map[string]int{}
		for _, kind := range []string{"GET", "POST"} {
			var plain []float64
			for _, m := range runs["max"]["plain "+kind] {
				plain = append(plain, m.RPS)
			}
			out[kind] = max(1, int(median(plain)*pct/100))
		}
		out["POST+Idempotency-Key"] = out["POST"]
		return out
	}
	// Two fixed rates: issue 9's 50 % of plain Caddy's max, and a light
	// load at which the 2-core machine is far from saturation, so that the
	// p99 difference is the chain's own latency rather than queueing.
	res.FixedRate, res.LightRate = rates(cfg.fixedPct), rates(cfg.lightPct)
	for _, phase := range []struct {
		mode  string
		rates map[string]int
	}{{"rate", res.FixedRate}, {"light", res.LightRate}} {
		for round := range cfg.rounds {
			for _, tg := range order(round) {
				if tg.MaxOnly {
					continue
				}
				m, err := fixedRun(ctx, e, cfg, svcs, upstreamName, base(tg), stage(tg), tg, gws[tg.Variant], phase.rates[tg.Request])
				if err != nil {
					return nil, err
				}
				m.Round, m.Mode = round+1, phase.mode
				runs[phase.mode][tg.Name] = append(runs[phase.mode][tg.Name], m)
				res.Runs = append(res.Runs, m)
				logf("  %-10s %-5s round %d  %-28s %8.0f rps  p50 %7.0fµs  p99 %7.0fµs  err %d non2xx %d  cpu %.3f cores",
					upstreamName, phase.mode, round+1, tg.Name, m.RPS, m.P50us, m.P99us, m.Errors, m.Non2xx, m.GatewayCores)
			}
			if phase.mode == "light" {
				if res.RedisRoundTrip == nil {
					res.RedisRoundTrip = &roundTripFloor{What: "PING from go-redis, paced at the light GET rate", Rate: phase.rates["GET"]}
				}
				if err := res.RedisRoundTrip.pingAtRate(ctx, e.rdb, phase.rates["GET"], cfg.seconds); err != nil {
					return nil, fmt.Errorf("redis round trip: %w", err)
				}
				f := res.RedisRoundTrip
				logf("  %-10s light round %d  bare Redis round trip (PING) at %d/s: p99 %.0fµs",
					upstreamName, round+1, f.Rate, f.P99EachUS[len(f.P99EachUS)-1])
			}
		}
	}
	if f := res.RedisRoundTrip; f != nil {
		f.summarise()
	}

	res.Counters = map[string]map[string]float64{}
	for name, g := range gws {
		c := gatewayCounters(ctx, g.admin)
		res.Counters[name] = c
		res.RateLimitRedisErrors += c["caddy_gatehouse_ratelimit_redis_errors_total"]
	}
	for _, tg := range targets {
		s := targetSummary{Target: tg.Name, Variant: tg.Variant, Request: tg.Request,
			Max: summarise(runs["max"][tg.Name]), Fixed: summarise(runs["rate"][tg.Name]), Light: summarise(runs["light"][tg.Name])}
		if g := gws[tg.Variant]; g != nil {
			p := readProc(g.pid())
			s.RSSMiB, s.PeakRSSMiB = mib(p.rssKiB), mib(p.hwmKiB)
		}
		res.Targets = append(res.Targets, s)
	}

	pairs := []comparison{
		{Name: "full gateway vs plain Caddy (GET)", Issue: "9", On: "full GET", Off: "plain GET", MinThroughputRatio: 0.80, MaxP99AddedUS: 1000, P99At: "fixed"},
		{Name: "full gateway with Idempotency-Key vs plain Caddy (POST)", Issue: "9", On: "full POST+Idempotency-Key", Off: "plain POST", MinThroughputRatio: 0.80, MaxP99AddedUS: 1000, P99At: "fixed"},
		{Name: "request_id + api_key on vs off", Issue: "3", On: "auth GET", Off: "plain GET", MinThroughputRatio: 0.95, MaxP99AddedUS: 300, P99At: "light"},
		{Name: "rate_limit (4 policies) on vs off", Issue: "4", On: "full GET", Off: "full-no-rate-limit GET", MinThroughputRatio: 0.90, MaxP99AddedUS: 500, P99At: "light"},
		{Name: "POST with vs without Idempotency-Key", Issue: "5", On: "full POST+Idempotency-Key", Off: "full POST", MaxP99AddedUS: 1000, P99At: "light"},
		{Name: "request_log on vs off", Issue: "6", On: "full GET", Off: "full-no-request-log GET", MinThroughputRatio: 0.95},
		{Name: "rate_limit on vs off, every request from its own IP (no shared script runs)", Issue: "4",
			On: "full-xff GET, own IP each", Off: "full-no-rate-limit-xff GET, own IP each", MinThroughputRatio: 0.90},
		{Name: "plain Caddy vs direct (GET)", Issue: "-", On: "plain GET", Off: "direct GET"},
		{Name: "full gateway vs direct (GET)", Issue: "-", On: "full GET", Off: "direct GET"},
	}
	for _, c := range pairs {
		res.Comparisons = append(res.Comparisons, compare(c, runs))
	}
	res.ThroughputRatioVsPlainCaddy = res.Comparisons[0].ThroughputRatio
	res.ThroughputRatioVsPlainCaddyPOST = res.Comparisons[1].ThroughputRatio
	res.P99AddedAtHalfLoadUS = res.Comparisons[0].P99AddedFixedUS
	res.LoadAvg["after"] = loadavg()
	return res, nil
}

// compare pairs the on and off runs of each round.
func compare(c comparison, runs map[string]map[string][]measurement) comparison {
	on, off := runs["max"][c.On], runs["max"][c.Off]
	for i := range min(len(on), len(off)) {
		if off[i].RPS > 0 {
			c.ThroughputRatioEach = append(c.ThroughputRatioEach, round3(on[i].RPS/off[i].RPS))
		}
	}
	c.ThroughputRatio = round3(median(c.ThroughputRatioEach))
	var p99max, p50fixed []float64
	for i := range min(len(on), len(off)) {
		p99max = append(p99max, on[i].P99us-off[i].P99us)
	}
	c.P99AddedMaxUS = round1(median(p99max))
	on, off = runs["rate"][c.On], runs["rate"][c.Off]
	for i := range min(len(on), len(off)) {
		for _, m := range []measurement{on[i], off[i]} {
			if m.Saturated {
				c.SaturatedRuns++
			}
		}
		c.P99AddedEach = append(c.P99AddedEach, round1(on[i].P99us-off[i].P99us))
		p50fixed = append(p50fixed, on[i].P50us-off[i].P50us)
	}
	c.P99AddedFixedUS = round1(median(c.P99AddedEach))
	c.P50AddedFixedUS = round1(median(p50fixed))
	on, off = runs["light"][c.On], runs["light"][c.Off]
	var onLat, offLat []float64
	for i := range min(len(on), len(off)) {
		c.P99AddedLightEach = append(c.P99AddedLightEach, round1(on[i].P99us-off[i].P99us))
		onLat = append(onLat, on[i].latencies...)
		offLat = append(offLat, off[i].latencies...)
	}
	if len(onLat) > 0 && len(offLat) > 0 {
		slices.Sort(onLat)
		slices.Sort(offLat)
		c.P99AddedLightUS = round1(percentile(onLat, 99) - percentile(offLat, 99))
	}
	if c.MinThroughputRatio > 0 || c.MaxP99AddedUS > 0 {
		p99 := c.P99AddedFixedUS
		if c.P99At == "light" {
			p99 = c.P99AddedLightUS
		}
		met := (c.MinThroughputRatio == 0 || c.ThroughputRatio >= c.MinThroughputRatio) &&
			(c.MaxP99AddedUS == 0 || p99 <= c.MaxP99AddedUS)
		c.Met = &met
	}
	return c
}

func summarise(ms []measurement) stats {
	var s stats
	var rps, p50, p99, p999, cpu []float64
	for _, m := range ms {
		rps = append(rps, m.RPS)
		p50 = append(p50, m.P50us)
		p99 = append(p99, m.P99us)
		p999 = append(p999, m.P999us)
		if m.CPUPerKRPS > 0 {
			cpu = append(cpu, m.CPUPerKRPS)
		}
		s.Errors += m.Errors
		s.Non2xx += m.Non2xx
		if m.Saturated {
			s.SaturatedRuns++
		}
	}
	s.Runs = len(ms)
	if len(ms) == 0 {
		return s
	}
	s.RPS, s.RPSMin, s.RPSMax = round1(median(rps)), round1(slices.Min(rps)), round1(slices.Max(rps))
	s.P50us, s.P99us, s.P999us = round1(median(p50)), round1(median(p99)), round1(median(p999))
	if len(cpu) > 0 {
		s.CPUPerKRPS = round3(median(cpu))
	}
	byProc := map[string][]float64{}
	for _, m := range ms {
		for k, v := range m.CPU {
			byProc[k] = append(byProc[k], v)
		}
	}
	if len(byProc) > 0 {
		s.CPU = map[string]float64{}
		for k, v := range byProc {
			s.CPU[k] = round3(median(v))
		}
	}
	return s
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
