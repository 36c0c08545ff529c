package main

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"
)

// accuracyResult is issue 4's accuracy benchmark.
type accuracyResult struct {
	Gateways      int     `json:"gateways"`
	Limit         int     `json:"limit_per_second"`
	Burst         int     `json:"burst"`
	RatePerGW     int     `json:"offered_rate_per_gateway"`
	Seconds       float64 `json:"seconds"`
	Offered       int64   `json:"offered"`
	Admitted      int64   `json:"admitted_2xx"`
	Limited       int64   `json:"limited_429"`
	Other         int64   `json:"other_status_or_errors"`
	Ideal         float64 `json:"ideal"` // limit × seconds + burst
	ErrorPct      float64 `json:"error_pct"`
	SpanSeconds   float64 `json:"send_span_seconds"`    // first to last request sent
	IdealFromSpan float64 `json:"ideal_from_send_span"` // limit × span + burst
	ErrorPctSpan  float64 `json:"error_pct_vs_send_span"`
	TargetPct     float64 `json:"target_within_pct"`
	Met           bool    `json:"met"`
	// RedisErrors are decisions the gateways could not make (fail_open
	// lets those requests through, which would inflate Admitted).
	RedisErrors float64 `json:"ratelimit_redis_errors"`
	PerGateway  []Load  `json:"per_gateway"`
	Upstream    string  `json:"upstream"`
	Note        string  `json:"note"`
}

// runAccuracy starts two full gateways sharing Redis with a per-key limit
// of limit/s and drives both at rate/s with the same key.
func runAccuracy(ctx context.Context, e *env, vegeta string, limit, rate int, d time.Duration, t tenant, logf func(string, ...any)) (*accuracyResult, error) {
	v := overheadVariants(e.emitEvents)[2] // full
	env := []string{fmt.Sprintf("RATE_LIMIT_LIVE=%d", limit), fmt.Sprintf("RATE_LIMIT_SANDBOX=%d", limit),
		"RATE_LIMIT_ORG_LIVE=1000000", "RATE_LIMIT_ORG_SANDBOX=1000000", "RATE_LIMIT_IP=1000000"}
	var gws []*gateway
	defer func() {
		for _, g := range gws {
			g.stop()
		}
	}()
	for i := range 2 {
		g, err := e.startVariant(ctx, fmt.Sprintf("accuracy%d", i+1), v, e.static.addr, env...)
		if err != nil {
			return nil, err
		}
		gws = append(gws, g)
	}
	// A different customer path than the overhead suite's is irrelevant to
	// the limit; the static upstream answers any. Warm each gateway's key
	// cache with one request, then let the bucket refill completely.
	req := e.signed(t, Request{Name: "GET", Method: "GET", Path: "/v1/customers/cus_accuracy"})
	for _, g := range gws {
		if err := probe(ctx, "http://"+g.addr, req); err != nil {
			return nil, fmt.Errorf("accuracy warm-up: %w", err)
		}
	}
	time.Sleep(2 * time.Second)

	res := &accuracyResult{Gateways: len(gws), Limit: limit, Burst: limit, RatePerGW: rate, Seconds: d.Seconds(),
		Upstream: "static", TargetPct: 2,
		Note: "admitted counts 2xx across both gateways; ideal = limit × seconds + burst (GCRA lets a full burst through at the start); the per-key policy is the binding one, the other three are raised out of the way"}
	loads := make([]Load, len(gws))
	errs := make([]error, len(gws))
	var wg sync.WaitGroup
	for i, g := range gws {
		wg.Go(func() {
			loads[i], errs[i] = vegetaRate(ctx, vegeta, e.dir+"/"+g.name, "http://"+g.addr, req, rate, d)
		})
	}
	wg.Wait()
	var first, last time.Time
	for i, l := range loads {
		if errs[i] != nil {
			return nil, errs[i]
		}
		res.PerGateway = append(res.PerGateway, l)
		res.Offered += l.Requests
		for code, n := range l.Status {
			switch {
			case code >= 200 && code < 300:
				res.Admitted += n
			case code == 429:
				res.Limited += n
			default:
				res.Other += n
			}
		}
		if first.IsZero() || l.First.Before(first) {
			first = l.First
		}
		if l.Last.After(last) {
			last = l.Last
		}
	}
	for _, g := range gws {
		res.RedisErrors += gatewayCounters(ctx, g.admin)["caddy_gatehouse_ratelimit_redis_errors_total"]
	}
	res.Ideal = float64(limit)*d.Seconds() + float64(limit)
	res.ErrorPct = round2(100 * (float64(res.Admitted) - res.Ideal) / res.Ideal)
	res.SpanSeconds = round3(last.Sub(first).Seconds())
	res.IdealFromSpan = round1(float64(limit)*last.Sub(first).Seconds() + float64(limit))
	res.ErrorPctSpan = round2(100 * (float64(res.Admitted) - res.IdealFromSpan) / res.IdealFromSpan)
	res.Met = math.Abs(res.ErrorPct) <= res.TargetPct && res.Other == 0 && res.RedisErrors == 0
	logf("  accuracy: offered %d, admitted %d (ideal %.0f, error %+.2f%%), 429 %d, other %d, Redis errors %.0f",
		res.Offered, res.Admitted, res.Ideal, res.ErrorPct, res.Limited, res.Other, res.RedisErrors)
	return res, nil
}
