package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// runProfile drives one variant at max throughput, or at -profile-rate
// (GET, static upstream unless told otherwise) while Caddy's admin endpoint records a CPU profile
// and the allocations made meanwhile. It writes <out>/profile-<variant>-cpu.pprof
// and -allocs.pprof (a delta: view with `go tool pprof -sample_index=alloc_space`)
// for `go tool pprof bin/gateway <file>`. It is how the hot path's costs are
// found; it measures nothing the results record.
func runProfile(ctx context.Context, e *env, c config, upstream string, t tenant, logf func(string, ...any)) error {
	var v Variant
	for _, cand := range overheadVariants(e.emitEvents) {
		if cand.Name == c.ProfileVariant {
			v = cand
		}
	}
	if v.Name == "" {
		return fmt.Errorf("unknown variant %q", c.ProfileVariant)
	}
	g, err := e.startVariant(ctx, "profile", v, upstream,
		"RATE_LIMIT_LIVE=1000000", "RATE_LIMIT_SANDBOX=1000000", "RATE_LIMIT_ORG_LIVE=1000000",
		"RATE_LIMIT_ORG_SANDBOX=1000000", "RATE_LIMIT_IP=1000000")
	if err != nil {
		return err
	}
	defer g.stop()
	req := Request{Name: "GET", Method: "GET", Path: "/v1/customers/" + t.Customer}
	if c.ProfilePOST {
		req = Request{Name: "POST+Idempotency-Key", Method: "POST", Path: "/v1/customers", ContentType: "application/x-www-form-urlencoded",
			Body: "email=bench%40example.com&name=Bench+Customer", IdempotencyKeys: true}
	}
	req = e.signed(t, req)
	base := "http://" + g.addr
	if err := probe(ctx, base, req); err != nil {
		return err
	}
	if _, err := wrkMax(ctx, e.dir, base, req, c.Threads, c.Conns, c.Warmup); err != nil {
		return err
	}
	if err := os.MkdirAll(c.Out, 0o755); err != nil {
		return err
	}
	secs := int(c.Duration.Seconds())
	prefix := filepath.Join(c.Out, "profile-"+v.Name)
	base0, err := fetch(ctx, "http://"+g.admin+"/debug/pprof/allocs")
	if err != nil {
		return err
	}
	type result struct {
		l   Load
		err error
	}
	svcs := findServices(ctx, e)
	before, gwBefore := svcs.ticks(), readProc(g.pid())
	done := make(chan result, 1)
	go func() {
		var l Load
		var err error
		if c.ProfileRate > 0 {
			l, err = vegetaRate(ctx, c.Vegeta, e.dir, base, req, c.ProfileRate, c.Duration+time.Second)
		} else {
			l, err = wrkMax(ctx, e.dir, base, req, c.Threads, c.Conns, c.Duration+time.Second)
		}
		done <- result{l, err}
	}()
	cpu, err := fetch(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", g.admin, secs))
	if err != nil {
		return err
	}
	allocs, err := fetch(ctx, "http://"+g.admin+"/debug/pprof/allocs")
	if err != nil {
		return err
	}
	r := <-done
	if r.err != nil {
		return r.err
	}
	after, gwAfter := svcs.ticks(), readProc(g.pid())
	perReq := fmt.Sprintf("gateway %.1f (RSS %.0f MiB, peak %.0f)", cpuSeconds(gwBefore, gwAfter)*1e6/float64(r.l.Requests),
		mib(gwAfter.rssKiB), mib(gwAfter.hwmKiB))
	for name, t := range after {
		perReq += fmt.Sprintf(", %s %.1f", name, float64(t-before[name])/clockTicks*1e6/float64(r.l.Requests))
	}
	for name, b := range map[string][]byte{"-cpu.pprof": cpu, "-allocs-before.pprof": base0, "-allocs.pprof": allocs} {
		if err := os.WriteFile(prefix+name, b, 0o644); err != nil {
			return err
		}
	}
	logf("profile %s: %.0f rps, p99 %.0f µs, %d requests; CPU µs/request: %s", v.Name, r.l.RPS, r.l.P99us, r.l.Requests, perReq)
	logf("go tool pprof -diff_base %s-allocs-before.pprof %s-allocs.pprof; go tool pprof %s-cpu.pprof",
		prefix, prefix, prefix)
	return nil
}

func fetch(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(resp.Body)
}
