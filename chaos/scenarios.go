package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gatehouse/gatehouse/e2e"
	keyformat "github.com/gatehouse/gatehouse/internal/apikey"
)

// scenario is one fault under load.
type scenario struct {
	name  string
	title string
	run   func(ctx context.Context, e *env, rep *report) error
}

func scenarios(c config) []scenario {
	return []scenario{
		{"kafka-outage", fmt.Sprintf("Kafka stopped %s under steady load", c.kafkaDown), kafkaOutage},
		{"redis-outage", fmt.Sprintf("Redis stopped %s under steady load", c.redisDown), redisOutage},
		{"redis-hang", fmt.Sprintf("Redis frozen (SIGSTOP: connections open, no answers) %s under steady load", c.redisDown), redisHang},
		{"postgres-outage", fmt.Sprintf("Postgres stopped %s under steady load", c.pgDown), postgresOutage},
		{"kill9-deliverer", "kill -9 of the deliverer during a burst of events", killDeliverer},
		{"kill9-controlplane", "kill -9 of the control plane (ingesters, events API) under load, three times", killControlPlane},
		{"kill9-gateway", "kill -9 of the gateway under load, three times", killGateway},
		{"gateway-reload", "gateway config reloads under load", gatewayReload},
		{"deliverer-kill9-proof", "the deliverer's own proof: kill -9 during 10,000 events to 3 endpoints (TestChaosKill9)", delivererProof},
	}
}

func ok2xx(r result) bool { return r.Status/100 == 2 && !r.BadReplay }

// tenant seeds an organisation for one scenario, registers its webhook
// endpoint on the receiver and creates the customers the load reads.
func (e *env) tenant(ctx context.Context, rep *report) (*load, e2e.Tenant, string, error) {
	tn, err := e.stack.Seed(ctx, "chaos "+rep.Name)
	if err != nil {
		return nil, tn, "", fmt.Errorf("seeding the tenant: %w", err)
	}
	l := newLoad(rep.Name, &client{base: e.stack.Gateway.URL(), key: tn.SandboxKey, hc: e.hc}, e.cfg.rate)
	path := "/hooks/" + rep.Name
	body, _ := json.Marshal(map[string]any{"url": e.rcv.url(path), "enabled_events": []string{"*"}, "description": "chaos " + rep.Name})
	resp, err := l.c.do("POST", "/v1/webhook-endpoints", body, nil)
	r := result{Op: opSetup, Phase: "setup", Sent: time.Now()}
	if err != nil {
		r.Err = err.Error()
	} else {
		r.Status, r.RequestID = resp.status, resp.header.Get("Request-Id")
		r.Authed = resp.header.Get("Api-Version") != ""
	}
	l.record(r, nil, nil)
	if err != nil || resp.status != 200 {
		return nil, tn, "", fmt.Errorf("creating the webhook endpoint: %v %d %s", err, resp.status, resp.body)
	}
	var ep struct{ ID, Secret string }
	if err := json.Unmarshal(resp.body, &ep); err != nil || ep.Secret == "" {
		return nil, tn, "", fmt.Errorf("webhook endpoint without a secret: %s", resp.body)
	}
	e.rcv.register(path, ep.Secret)
	for range 20 {
		if r := l.one(opCreateKeyed); r.Status != 200 {
			return nil, tn, "", fmt.Errorf("creating the customers to read: %s %s", r.label(), r.Err)
		}
	}
	rep.note("tenant %s, key …%s, endpoint %s → %s", tn.OrgID, keyformat.Last4(tn.SandboxKey), ep.ID, e.rcv.url(path))
	return l, tn, path, nil
}

// begin seeds the scenario's tenant, starts its load and, unless before is
// 0, runs the phase "before" for that long. stop ends the load; calling it
// again does nothing.
func (e *env) begin(ctx context.Context, rep *report, before time.Duration) (l *load, tn e2e.Tenant, path string, stop func(), err error) {
	l, tn, path, err = e.tenant(ctx, rep)
	if err != nil {
		return nil, tn, "", nil, err
	}
	stop = l.start()
	if before > 0 {
		if err := steady(ctx, l, rep, "before", before); err != nil {
			stop()
			return nil, tn, "", nil, err
		}
	}
	return l, tn, path, stop, nil
}

// steady runs the phase named p for d under the already running load.
func steady(ctx context.Context, l *load, rep *report, p string, d time.Duration) error {
	l.setPhase(p)
	rep.note("phase %s (%s)", p, d)
	return sleep(ctx, d)
}

// endLoad stops the load and fills the report's request figures.
func endLoad(rep *report, l *load, stop func(), expect func(result) bool) []result {
	stop()
	rs := l.snapshot()
	rep.SkippedTicks = l.skipped.Load()
	rep.tally(rs, expect)
	rep.note("load stopped: %d requests", len(rs))
	return rs
}

// clientErrorCheck is the invariant over every response of the scenario.
func clientErrorCheck(rep *report, what string) {
	rep.check(what, rep.Unexpected == 0, "%d unexpected of %d requests (%d connection errors); statuses %s",
		rep.Unexpected, rep.RequestsSent, rep.ConnectionErrors, formatHist(rep.Statuses))
}

// outboxDelta reads the gateway's outbox counters.
func (e *env) outbox(ctx context.Context) map[string]float64 {
	m, err := e.gatewayMetrics(ctx,
		"caddy_gatehouse_requestlog_spooled_total", "caddy_gatehouse_requestlog_dropped_total",
		"caddy_gatehouse_events_spooled_total", "caddy_gatehouse_events_dropped_total")
	if err != nil {
		return map[string]float64{}
	}
	return m
}

// ---------------------------------------------------------------------------

func kafkaOutage(ctx context.Context, e *env, rep *report) error {
	before := e.outbox(ctx)
	l, tn, path, stop, err := e.begin(ctx, rep, 10*time.Second)
	if err != nil {
		return err
	}
	defer stop()
	l.setPhase("fault")
	rep.note("stopping Kafka")
	if err := e.svc.stop(ctx, "kafka", func(s string) { rep.note("%s", s) }); err != nil {
		return err
	}
	rep.note("Kafka stopped; staying down %s", e.cfg.kafkaDown)
	if err := sleep(ctx, e.cfg.kafkaDown); err != nil {
		return err
	}
	l.setPhase("recovery")
	rep.note("starting Kafka")
	t0 := time.Now()
	if err := e.svc.start(ctx, "kafka"); err != nil {
		return err
	}
	rep.note("Kafka ready (%.1fs to start)", time.Since(t0).Seconds())
	if err := steady(ctx, l, rep, "after", 15*time.Second); err != nil {
		return err
	}
	endLoad(rep, l, stop, ok2xx)
	clientErrorCheck(rep, "no client errors caused by the outage (every response 2xx)")
	after := e.outbox(ctx)
	spooledLogs := after["caddy_gatehouse_requestlog_spooled_total"] - before["caddy_gatehouse_requestlog_spooled_total"]
	spooledEvents := after["caddy_gatehouse_events_spooled_total"] - before["caddy_gatehouse_events_spooled_total"]
	dropped := after["caddy_gatehouse_requestlog_dropped_total"] - before["caddy_gatehouse_requestlog_dropped_total"] +
		after["caddy_gatehouse_events_dropped_total"] - before["caddy_gatehouse_events_dropped_total"]
	rep.Info["gateway_outbox_spooled"] = map[string]float64{"request_logs": spooledLogs, "events": spooledEvents}
	rep.check("gateway outbox dropped nothing", dropped == 0, "spooled to disk during the outage: %.0f request logs, %.0f events; dropped %.0f",
		spooledLogs, spooledEvents, dropped)
	return e.verifyFlow(ctx, rep, l, tn.OrgID, path, flowOpts{})
}

// ---------------------------------------------------------------------------

func redisOutage(ctx context.Context, e *env, rep *report) error {
	l, tn, path, stop, err := e.begin(ctx, rep, 8*time.Second)
	if err != nil {
		return err
	}
	defer stop()
	// Keys whose records the outage will test (see the survival probe).
	var survivors []keyedCreate
	for range 10 {
		n := l.seq.Add(1)
		k := keyedCreate{seq: n, key: fmt.Sprintf("%s-survivor-%d", l.name, n), body: fmt.Appendf(nil, `{"email":"s%d@%s.chaos.example"}`, n, l.name)}
		if r := l.sendSeq(n, opCreateKeyed, "POST", "/v1/customers", k.body, map[string]string{"Idempotency-Key": k.key}, nil); r.Status == 200 {
			k.id = r.ID
			survivors = append(survivors, k)
		}
	}
	// Replays of pre-outage keys after the restart are the probe's
	// business, not the steady mix's.
	l.resetReplayPool()
	l.setPhase("fault")
	stopIssued := time.Now()
	rep.note("stopping Redis")
	if err := e.svc.stop(ctx, "redis", func(s string) { rep.note("%s", s) }); err != nil {
		return err
	}
	stopDone := time.Now()
	rep.note("Redis stopped; staying down %s", e.cfg.redisDown)
	if err := sleep(ctx, e.cfg.redisDown); err != nil {
		return err
	}
	l.setPhase("recovery")
	startIssued := time.Now()
	rep.note("starting Redis")
	if err := e.svc.start(ctx, "redis"); err != nil {
		return err
	}
	startDone := time.Now()
	// Keys completed before the restart are gone with Redis's memory.
	l.resetReplayPool()
	rep.note("Redis ready (%.1fs to start); probing keyed creates until one succeeds", startDone.Sub(startIssued).Seconds())
	rs, recovered, err := redisRecovery(ctx, l, rep, stop, stopIssued, startDone, "was ready",
		"only keyed requests refused, only while Redis is away, only with 503 idempotency_unavailable")
	if err != nil {
		return err
	}

	var plainDown, plainDownOK, keyedDown, keyedDown503, keyedDownExecuted int
	for _, r := range rs {
		if r.Sent.Before(stopDone) || !r.Sent.Before(startIssued.Add(-200*time.Millisecond)) {
			continue
		}
		if r.Op.keyed() {
			keyedDown++
			switch {
			case r.Status == 503 && r.Code == "idempotency_unavailable":
				keyedDown503++
			case r.Status/100 == 2:
				keyedDownExecuted++
			}
		} else {
			plainDown++
			if ok2xx(r) {
				plainDownOK++
			}
		}
	}
	rep.check("rate limits fail open: requests without Idempotency-Key succeed while Redis is down", plainDown > 0 && plainDownOK == plainDown,
		"%d of %d succeeded", plainDownOK, plainDown)
	rep.check("keyed requests while Redis is down: 503 idempotency_unavailable, never executed", keyedDown > 0 && keyedDown503 == keyedDown && keyedDownExecuted == 0,
		"%d of %d got 503 idempotency_unavailable; %d executed unprotected", keyedDown503, keyedDown, keyedDownExecuted)
	rep.check("automatic recovery (no process restarted) within 15 s", recovered >= 0 && recovered <= 15*time.Second,
		"first keyed create succeeded %.2fs after Redis was ready (down from +%.1fs to +%.1fs)", recovered.Seconds(), rep.at(stopIssued), rep.at(startDone))

	// Survival probe: replays of keys completed before the outage. The
	// services run Redis without persistence, so a restart forgets the
	// records and a client's retry runs again. Reported, not judged: it is
	// a property of how Redis is deployed.
	replayed, reexecuted := 0, 0
	for _, k := range survivors {
		r := l.sendSeq(k.seq, opReplay, "POST", "/v1/customers", k.body, map[string]string{"Idempotency-Key": k.key}, &k)
		switch {
		case r.Status == 200 && r.Replayed && r.ID == k.id:
			replayed++
		case r.Status == 200:
			reexecuted++
		}
	}
	rep.Info["idempotency_records_across_redis_restart"] = fmt.Sprintf("%d of %d pre-outage keys replayed, %d executed again (Redis runs with --save '' --appendonly no in scripts/services.sh)",
		replayed, len(survivors), reexecuted)
	return e.verifyFlow(ctx, rep, l, tn.OrgID, path, flowOpts{})
}

// ---------------------------------------------------------------------------

// keyedRecovery sends keyed creates every 200 ms until one succeeds and
// returns how long after since that was (-1 if not within 30 s).
func keyedRecovery(ctx context.Context, l *load, since time.Time) (time.Duration, error) {
	for time.Since(since) < 30*time.Second {
		if r := l.one(opCreateKeyed); r.Status == 200 {
			return time.Since(since), nil
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return -1, err
		}
	}
	return -1, nil
}

// redisRecovery is the end of a Redis scenario once Redis is back (since):
// keyedRecovery, then the steady "after"
// phase, then the load ends with keyed requests allowed their 503 during
// the fault (clientCheck names that check). It returns the results and how
// long after since keyed creates worked again (-1 if not within 30 s).
func redisRecovery(ctx context.Context, l *load, rep *report, stop func(), faultAt, since time.Time, event, clientCheck string) ([]result, time.Duration, error) {
	recovered, err := keyedRecovery(ctx, l, since)
	if err != nil {
		return nil, -1, err
	}
	rep.note("keyed creates succeed again %.2fs after Redis %s", recovered.Seconds(), event)
	if err := steady(ctx, l, rep, "after", 10*time.Second); err != nil {
		return nil, -1, err
	}
	rs := endLoad(rep, l, stop, keyedMay503(faultAt))
	clientErrorCheck(rep, clientCheck)
	return rs, recovered, nil
}

// keyedMay503 is what a client may see while Redis is away and recovering:
// keyed requests answered or refused with 503 idempotency_unavailable,
// everything else answered. A keyed request sent just before the fault
// and still in flight when it began (answered at or after faultAt) may
// meet it too.
func keyedMay503(faultAt time.Time) func(result) bool {
	return func(r result) bool {
		inFault := r.Phase == "fault" || r.Phase == "recovery" || !r.Sent.Add(r.Latency).Before(faultAt)
		if r.Op.keyed() && inFault {
			return ok2xx(r) || r.Status == 503 && r.Code == "idempotency_unavailable"
		}
		return ok2xx(r)
	}
}

// redisHang freezes Redis instead of stopping it: connections stay open and
// nothing answers, so every call waits for its deadline — the case the
// circuit breaker of caddymodule/redispool exists for. After a few
// timeouts the gateway must answer at once: rate limits fail open, keyed
// requests get 503, and it recovers by itself when Redis thaws.
func redisHang(ctx context.Context, e *env, rep *report) error {
	l, tn, path, stop, err := e.begin(ctx, rep, 8*time.Second)
	if err != nil {
		return err
	}
	defer stop()
	line, err := e.svc.verifyOwn("redis")
	if err != nil {
		return err
	}
	pid, err := e.svc.ownPid("redis")
	if err != nil {
		return err
	}
	rep.note("%s", line)
	l.setPhase("fault")
	faultAt := time.Now()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return fmt.Errorf("SIGSTOP redis: %w", err)
	}
	frozen := time.Now()
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	defer thaw() // never leave it frozen
	rep.note("Redis frozen (SIGSTOP pid %d); staying frozen %s", pid, e.cfg.redisDown)
	if err := sleep(ctx, e.cfg.redisDown); err != nil {
		return err
	}
	l.setPhase("recovery")
	thaw()
	thawAt := time.Now()
	rep.note("Redis thawed (SIGCONT); probing keyed creates until one succeeds")
	rs, recovered, err := redisRecovery(ctx, l, rep, stop, faultAt, thawAt, "thawed",
		"rate limits fail open, keyed requests 503 idempotency_unavailable, nothing else refused")
	if err != nil {
		return err
	}

	// The circuit opens after three batches time out (rate_limit's and
	// idempotency's deadline is 500 ms): from 2 s into the freeze, requests
	// must not wait for Redis any more.
	settled := frozen.Add(2 * time.Second)
	var early, open []time.Duration
	for _, r := range rs {
		if r.Status == 0 || r.Sent.Before(frozen) || !r.Sent.Before(thawAt) {
			continue
		}
		if r.Sent.Before(settled) {
			early = append(early, r.Latency)
		} else {
			open = append(open, r.Latency)
		}
	}
	e1, o := latencyOf(early), latencyOf(open)
	rep.Info["latency_first_2s_of_freeze"] = e1
	rep.Info["latency_rest_of_freeze"] = o
	rep.check("no request waits long while Redis is frozen", len(early) > 0 && e1.MaxMs < 2000,
		"first 2 s: %d requests, p99 %.0f ms, max %.0f ms (bound 2,000 ms)", len(early), e1.P99ms, e1.MaxMs)
	rep.check("circuit open: requests stop waiting for Redis", len(open) > 0 && o.P99ms < 100,
		"from 2 s to the thaw: %d requests, p50 %.1f ms, p99 %.1f ms, max %.0f ms (p99 bound 100 ms)", len(open), o.P50ms, o.P99ms, o.MaxMs)
	rep.check("automatic recovery (no process restarted) within 15 s", recovered >= 0 && recovered <= 15*time.Second,
		"first keyed create succeeded %.2fs after Redis thawed", recovered.Seconds())
	return e.verifyFlow(ctx, rep, l, tn.OrgID, path, flowOpts{})
}

// ---------------------------------------------------------------------------

// probe is a request with a well-formed key that does not exist.
type probe struct {
	sent   time.Time
	status int
	code   string
}

func postgresOutage(ctx context.Context, e *env, rep *report) error {
	l, tn, path, stop, err := e.begin(ctx, rep, 0)
	if err != nil {
		return err
	}
	defer stop()

	// Unknown keys, a fresh one each time (the negative cache would
	// otherwise answer), 5 per second.
	var (
		pmu    sync.Mutex
		probes []probe
	)
	pctx, pcancel := context.WithCancel(ctx)
	pdone := make(chan struct{})
	go func() {
		defer close(pdone)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-pctx.Done():
				return
			case <-t.C:
			}
			key, err := keyformat.Generate(keyformat.Secret, keyformat.Sandbox)
			if err != nil {
				continue
			}
			c := &client{base: e.stack.Gateway.URL(), key: key, hc: e.hc}
			p := probe{sent: time.Now()}
			if resp, err := c.do("GET", "/v1/customers", nil, nil); err == nil {
				p.status = resp.status
				var obj struct {
					Error struct{ Code string } `json:"error"`
				}
				_ = json.Unmarshal(resp.body, &obj)
				p.code = obj.Error.Code
			}
			pmu.Lock()
			probes = append(probes, p)
			pmu.Unlock()
		}
	}()
	defer func() { pcancel(); <-pdone }()

	if err := steady(ctx, l, rep, "before", 8*time.Second); err != nil {
		return err
	}
	l.setPhase("fault")
	stopIssued := time.Now()
	rep.note("stopping Postgres")
	if err := e.svc.stop(ctx, "postgres", func(s string) { rep.note("%s", s) }); err != nil {
		return err
	}
	stopDone := time.Now()
	rep.note("Postgres stopped; staying down %s", e.cfg.pgDown)
	if err := sleep(ctx, e.cfg.pgDown); err != nil {
		return err
	}
	l.setPhase("recovery")
	startIssued := time.Now()
	rep.note("starting Postgres")
	if err := e.svc.start(ctx, "postgres"); err != nil {
		return err
	}
	startDone := time.Now()
	rep.note("Postgres ready (%.1fs to start); probing creates until one succeeds", startDone.Sub(startIssued).Seconds())
	recovered, err := keyedRecovery(ctx, l, startDone)
	if err != nil {
		return err
	}
	rep.note("creates succeed again %.2fs after Postgres was ready", recovered.Seconds())
	if err := steady(ctx, l, rep, "after", 10*time.Second); err != nil {
		return err
	}
	pcancel()
	<-pdone
	rs := endLoad(rep, l, stop, func(r result) bool {
		if r.Phase == "fault" || r.Phase == "recovery" {
			// The upstreams need Postgres; the gateway must still have
			// authenticated the cached key.
			return ok2xx(r) || r.Status >= 500 && r.Code != "auth_unavailable"
		}
		return ok2xx(r)
	})
	clientErrorCheck(rep, "cached key never refused by authentication (2xx, or upstream 5xx while Postgres is away)")

	var down, authed, refused int
	for _, r := range rs {
		if r.Sent.Before(stopDone) || !r.Sent.Before(startIssued) {
			continue
		}
		down++
		if r.Status == 401 || r.Code == "auth_unavailable" || r.Status == 0 {
			refused++
		} else if r.Authed {
			authed++
		}
	}
	rep.check("cached key authenticated by the gateway while Postgres is down", down > 0 && authed == down && refused == 0,
		"%d of %d requests passed api_key (Api-Version set); %d refused by authentication", authed, down, refused)

	var before, before401, during, during503, during401 int
	for _, p := range probes {
		switch {
		case p.sent.Before(stopIssued):
			before++
			if p.status == 401 && p.code == "api_key_invalid" {
				before401++
			}
		case !p.sent.Before(stopDone.Add(500*time.Millisecond)) && p.sent.Before(startIssued.Add(-200*time.Millisecond)):
			during++
			switch {
			case p.status == 503 && p.code == "auth_unavailable":
				during503++
			case p.status == 401:
				during401++
			}
		}
	}
	rep.check("unknown key: 401 with Postgres up, 503 auth_unavailable (never 401) while it is down",
		before > 0 && before401 == before && during > 0 && during503 == during && during401 == 0,
		"before: %d of %d got 401 api_key_invalid; down: %d of %d got 503 auth_unavailable, %d got 401", before401, before, during503, during, during401)
	rep.check("automatic recovery (no process restarted) within 15 s", recovered >= 0 && recovered <= 15*time.Second,
		"first create succeeded %.2fs after Postgres was ready (down from +%.1fs to +%.1fs)", recovered.Seconds(), rep.at(stopIssued), rep.at(startDone))
	return e.verifyFlow(ctx, rep, l, tn.OrgID, path, flowOpts{})
}

// ---------------------------------------------------------------------------

func killDeliverer(ctx context.Context, e *env, rep *report) error {
	l, tn, path, stop, err := e.begin(ctx, rep, 8*time.Second)
	if err != nil {
		return err
	}
	defer stop()
	// A burst of events on top of the steady load.
	const burst, burstRate = 800, 100
	l.setPhase("burst")
	rep.note("burst: %d events at %d/s on top of the steady load", burst, burstRate)
	bdone := make(chan struct{})
	go func() {
		defer close(bdone)
		t := time.NewTicker(time.Second / burstRate)
		defer t.Stop()
		var wg sync.WaitGroup
		for range burst {
			select {
			case <-ctx.Done():
				wg.Wait()
				return
			case <-t.C:
			}
			wg.Go(func() { l.one(opEvent) })
		}
		wg.Wait()
	}()
	if err := sleep(ctx, 3*time.Second); err != nil {
		return err
	}
	delivered := e.rcv.stats(path)
	e.stack.Deliverer.Kill()
	rep.note("kill -9 deliverer (after %d deliveries to this tenant's endpoint)", delivered.Requests)
	l.setPhase("down")
	if err := sleep(ctx, 3*time.Second); err != nil {
		return err
	}
	t0 := time.Now()
	if err := e.stack.Restart(ctx, e.stack.Deliverer); err != nil {
		return fmt.Errorf("restarting the deliverer: %w", err)
	}
	rep.note("deliverer restarted and healthy (%.1fs)", time.Since(t0).Seconds())
	l.setPhase("burst-after")
	select {
	case <-bdone:
	case <-ctx.Done():
		return ctx.Err()
	}
	rep.note("burst sent")
	if err := steady(ctx, l, rep, "after", 8*time.Second); err != nil {
		return err
	}
	endLoad(rep, l, stop, ok2xx)
	clientErrorCheck(rep, "no client errors (the deliverer is off the request path)")
	return e.verifyFlow(ctx, rep, l, tn.OrgID, path, flowOpts{})
}

// ---------------------------------------------------------------------------

// killWindow is one kill -9: when it was sent, when the process was dead
// (Kill waits for it) and when the restarted process was healthy again.
type killWindow struct{ kill, dead, back time.Time }

// killRestart kills p three times under the running load, each time
// leaving it down for down, restarting it and running the load for after.
// beforeKill, if not nil, runs just before each kill.
func (e *env) killRestart(ctx context.Context, l *load, rep *report, p *e2e.Proc, what string, down, after time.Duration, beforeKill func()) ([]killWindow, error) {
	var windows []killWindow
	for i := 1; i <= 3; i++ {
		if beforeKill != nil {
			beforeKill()
		}
		killed := time.Now()
		p.Kill()
		dead := time.Now()
		l.setPhase(fmt.Sprintf("down-%d", i))
		rep.note("kill -9 %s (%d)", what, i)
		if err := sleep(ctx, down); err != nil {
			return nil, err
		}
		t0 := time.Now()
		if err := e.stack.Restart(ctx, p); err != nil {
			return nil, fmt.Errorf("restarting the %s: %w", what, err)
		}
		windows = append(windows, killWindow{killed, dead, time.Now()})
		rep.note("%s restarted and healthy (%.1fs)", what, time.Since(t0).Seconds())
		if err := steady(ctx, l, rep, fmt.Sprintf("after-%d", i), after); err != nil {
			return nil, err
		}
	}
	return windows, nil
}

func killControlPlane(ctx context.Context, e *env, rep *report) error {
	l, tn, path, stop, err := e.begin(ctx, rep, 8*time.Second)
	if err != nil {
		return err
	}
	defer stop()
	windows, err := e.killRestart(ctx, l, rep, e.stack.Control, "control plane", 2*time.Second, 10*time.Second, nil)
	if err != nil {
		return err
	}
	inWindow := func(t time.Time) bool {
		for _, w := range windows {
			if !t.Before(w.kill.Add(-time.Second)) && t.Before(w.back) {
				return true
			}
		}
		return false
	}
	unknownOutcome := 0
	rs := endLoad(rep, l, stop, func(r result) bool {
		if r.Op == opEvent && inWindow(r.Sent) {
			return ok2xx(r) || r.Status == 502 || r.Status == 503 || r.Status == 504
		}
		return ok2xx(r)
	})
	for _, r := range rs {
		if r.Op == opEvent && r.Status/100 != 2 {
			unknownOutcome++
		}
	}
	clientErrorCheck(rep, "customers unaffected; POST /v1/events fails (502) only while the control plane is down")
	return e.verifyFlow(ctx, rep, l, tn.OrgID, path, flowOpts{extraEvents: unknownOutcome})
}

// ---------------------------------------------------------------------------

// killGateway kills the gateway under load and starts it again, three
// times. What a client saw succeed is never lost: every create answered 2xx
// has its customer.created event stored and delivered, because emit_events
// writes the event to its spool before it releases the response. Requests
// in flight at the kill have an unknown outcome (their customers and
// events may or may not exist), and the request logs of requests answered
// just before it may be lost: they wait in memory for up to
// requestlog.Linger (100 ms).
func killGateway(ctx context.Context, e *env, rep *report) error {
	l, tn, path, stop, err := e.begin(ctx, rep, 8*time.Second)
	if err != nil {
		return err
	}
	defer stop()
	// Each kill comes the instant the client has a create's 2xx: the
	// moment its event would still be in memory without write-through.
	var lastCreates []string
	createThenKill := func() {
		if r := l.one(opCreatePlain); ok2xx(r) && r.ID != "" {
			lastCreates = append(lastCreates, r.ID)
		}
	}
	windows, err := e.killRestart(ctx, l, rep, e.stack.Gateway, "gateway", time.Second, 8*time.Second, createThenKill)
	if err != nil {
		return err
	}
	// A request meets a kill if it was still waiting for its answer at the
	// kill, or was sent before the restarted gateway had served a second
	// (a client may try a keep-alive connection of the dead process).
	metKill := func(r result) bool {
		for _, w := range windows {
			if !r.Sent.Add(r.Latency).Before(w.kill) && r.Sent.Before(w.back.Add(time.Second)) {
				return true
			}
		}
		return false
	}
	// requestlog.Linger (100 ms, not imported: it would build Caddy into
	// this driver), then the send, and margin for a busy machine.
	const logLinger = 100*time.Millisecond + 250*time.Millisecond
	answeredJustBefore := func(r result) bool {
		done := r.Sent.Add(r.Latency)
		for _, w := range windows {
			// Up to the moment the process was gone: a response can
			// still leave it while the kill is being delivered.
			if done.Before(w.dead) && w.kill.Sub(done) < logLinger {
				return true
			}
		}
		return false
	}
	rs := endLoad(rep, l, stop, func(r result) bool { return ok2xx(r) || (r.Status == 0 && metKill(r)) })
	// Only a request in flight at a kill may have acted; one sent while the
	// gateway was down was refused at connect.
	inFlightAtKill := func(r result) bool {
		for _, w := range windows {
			if r.Sent.Before(w.dead) && !r.Sent.Add(r.Latency).Before(w.kill) {
				return true
			}
		}
		return false
	}
	unknownCreates, unknownEvents := 0, 0
	for _, r := range rs {
		if r.Status != 0 || !inFlightAtKill(r) {
			continue
		}
		switch r.Op {
		case opCreateKeyed, opCreatePlain:
			unknownCreates++
		case opEvent:
			unknownEvents++
		}
	}
	rep.note("requests in flight at a kill, without an answer (unknown outcome): %d creates, %d POST /v1/events", unknownCreates, unknownEvents)
	clientErrorCheck(rep, "only requests meeting a kill fail (no answer); everything else 2xx")
	if err := e.verifyFlow(ctx, rep, l, tn.OrgID, path, flowOpts{
		extraEvents: unknownCreates + unknownEvents, extraCustomers: unknownCreates, logMayBeLost: answeredJustBefore,
	}); err != nil {
		return err
	}
	st, err := e.state(ctx, tn.OrgID)
	if err != nil {
		return err
	}
	withEvent := 0
	for _, id := range lastCreates {
		if st.CustomerEventObject[id] == 1 {
			withEvent++
		}
	}
	rep.check("the create answered the instant before each kill has its event", len(lastCreates) == 3 && withEvent == 3,
		"%d of 3 creates sent just before a kill answered 2xx; %d of them have their customer.created event", len(lastCreates), withEvent)
	return nil
}

// ---------------------------------------------------------------------------

func gatewayReload(ctx context.Context, e *env, rep *report) error {
	l, tn, path, stop, err := e.begin(ctx, rep, 5*time.Second)
	if err != nil {
		return err
	}
	defer stop()
	l.setPhase("reloading")
	const reloads = 6
	okReloads := 0
	for i := range reloads {
		// A real change each time (the per-IP limit), so every reload
		// provisions new module instances rather than being skipped.
		cmd := exec.CommandContext(ctx, filepath.Join(e.stack.Bin, "gateway"), "reload", "--config", filepath.Join(e2e.Root(), "Caddyfile"),
			"--adapter", "caddyfile", "--address", e.stack.Admin, "--force")
		cmd.Env = append(append([]string(nil), e.stack.Env...), fmt.Sprintf("RATE_LIMIT_IP=%d", 100000+i))
		t0 := time.Now()
		out, err := cmd.CombinedOutput()
		if err != nil {
			rep.note("reload %d failed: %v %s", i+1, err, tailString(string(out), 500))
		} else {
			okReloads++
			rep.note("reload %d done (%.0f ms)", i+1, float64(time.Since(t0).Microseconds())/1000)
		}
		if err := sleep(ctx, 2500*time.Millisecond); err != nil {
			return err
		}
	}
	if err := steady(ctx, l, rep, "after", 5*time.Second); err != nil {
		return err
	}
	endLoad(rep, l, stop, ok2xx)
	rep.check("every reload applied", okReloads == reloads, "%d of %d `gateway reload --force` succeeded", okReloads, reloads)
	clientErrorCheck(rep, "no dropped requests (zero connection errors, zero non-2xx) across reloads")
	return e.verifyFlow(ctx, rep, l, tn.OrgID, path, flowOpts{})
}

// ---------------------------------------------------------------------------

// delivererProof runs the deliverer package's kill -9 proof against the
// chaos services rather than duplicating it.
func delivererProof(ctx context.Context, e *env, rep *report) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "test", "-count=1", "-timeout", "15m", "-run", "^TestChaosKill9$", "-v", "./deliverer/")
	cmd.Dir = e2e.Root()
	cmd.Env = append(os.Environ(), "GATEHOUSE_CHAOS=1")
	rep.note("go test -run TestChaosKill9 ./deliverer/ (GATEHOUSE_CHAOS=1) against the chaos services")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	runErr := cmd.Run()
	var figures map[string]any
	sc := bufio.NewScanner(bytes.NewReader(out.Bytes()))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, `{"`) && strings.Contains(line, `"chaos_kill9"`) {
			_ = json.Unmarshal([]byte(line), &figures)
			break
		}
	}
	rep.note("test finished: %v", errOr(runErr, "ok"))
	if figures == nil {
		rep.Info["output_tail"] = tailString(out.String(), 3000)
		return fmt.Errorf("no figures from TestChaosKill9 (%v):\n%s", runErr, tailString(out.String(), 3000))
	}
	rep.Info["figures"] = figures
	num := func(k string) float64 { f, _ := figures[k].(float64); return f }
	rep.check("every (event, endpoint) pair delivered at least once", num("pairs_delivered") == num("pairs_expected"),
		"%.0f of %.0f pairs (%.0f events × %.0f endpoints); killed after %.0f deliveries; all delivered %.1fs after the kill",
		num("pairs_delivered"), num("pairs_expected"), num("events"), num("endpoints"), num("killed_after_requests"), num("seconds_from_kill_to_all_delivered"))
	rep.check("duplicates carry the same webhook-id, signatures verify", num("duplicates_with_other_webhook_id") == 0 && num("bad_signatures_in_sample") == 0,
		"%.0f duplicates, %.0f with another webhook-id, %.0f bad signatures in the sample",
		num("duplicates"), num("duplicates_with_other_webhook_id"), num("bad_signatures_in_sample"))
	rep.check("delivery rows: one per pair", num("delivery_rows") == num("pairs_expected"), "%.0f rows, %.0f attempts", num("delivery_rows"), num("attempt_rows"))
	rep.check("go test passed", runErr == nil, "%v", errOr(runErr, "ok"))
	return nil
}

func errOr(err error, ok string) string {
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "exit status " + fmt.Sprint(ee.ExitCode())
		}
		return err.Error()
	}
	return ok
}
