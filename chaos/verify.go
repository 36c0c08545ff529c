package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/e2e"
)

// dbState is what Postgres holds for one tenant.
type dbState struct {
	Logs, LogsDistinct  int
	Events              map[string]string // id → type
	CustomerEventObject map[string]int    // data.object.id of customer.created → events
	Deliveries          int
	Succeeded           int
	Customers           int
}

func (e *env) state(ctx context.Context, org string) (dbState, error) {
	s := dbState{Events: map[string]string{}, CustomerEventObject: map[string]int{}}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := e.db.QueryRow(ctx, `SELECT count(*), count(DISTINCT request_id) FROM request_logs WHERE organization_id = $1`, org).
		Scan(&s.Logs, &s.LogsDistinct); err != nil {
		return s, fmt.Errorf("counting request_logs: %w", err)
	}
	rows, err := e.db.Query(ctx, `SELECT id, type, coalesce(data->'object'->>'id', '') FROM events WHERE organization_id = $1`, org)
	if err != nil {
		return s, fmt.Errorf("reading events: %w", err)
	}
	var id, typ, obj string
	if _, err := pgx.ForEachRow(rows, []any{&id, &typ, &obj}, func() error {
		s.Events[id] = typ
		if typ == "customer.created" {
			s.CustomerEventObject[obj]++
		}
		return nil
	}); err != nil {
		return s, fmt.Errorf("reading events: %w", err)
	}
	if err := e.db.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE status = 'succeeded') FROM webhook_deliveries WHERE organization_id = $1`, org).
		Scan(&s.Deliveries, &s.Succeeded); err != nil {
		return s, fmt.Errorf("counting webhook_deliveries: %w", err)
	}
	if err := e.db.QueryRow(ctx, `SELECT count(*) FROM customers WHERE organization_id = $1`, org).Scan(&s.Customers); err != nil {
		return s, fmt.Errorf("counting customers: %w", err)
	}
	return s, nil
}

// flowOpts tune verifyFlow.
type flowOpts struct {
	// extraEvents is how many events may exist beyond those the client
	// saw created: requests whose outcome the client could not know (a
	// 502 from a control plane killed mid-request may follow a commit).
	extraEvents int
	// extraCustomers is how many customers may exist beyond those the
	// client saw created: creates whose outcome the client could not know.
	extraCustomers int
	// logMayBeLost says which answered requests may lack a request log:
	// those answered just before the gateway was killed (its request logs
	// wait in memory for up to requestlog.Linger before they reach Kafka).
	logMayBeLost func(result) bool
}

// verifyFlow waits, within e.cfg.drain, until everything the tenant's
// requests started has landed — a request log per request, an event per
// create, a delivery per event — and then checks the invariants of the
// whole pipeline: gateway → Kafka → ingesters → Postgres → deliverer →
// receiver.
func (e *env) verifyFlow(ctx context.Context, rep *report, l *load, org, path string, o flowOpts) error {
	rs := l.snapshot()
	answered, failed := 0, 0
	reqIDs, mayLackIDs := map[string]bool{}, map[string]bool{}
	for _, r := range rs {
		if r.Status == 0 {
			failed++
			continue
		}
		answered++
		if r.RequestID != "" {
			reqIDs[r.RequestID] = true
		}
		if o.logMayBeLost != nil && o.logMayBeLost(r) {
			mayLackIDs[r.RequestID] = true
		}
	}
	customers, created := l.createdIDs()
	missingEvents := func(s dbState) (cus, evs []string) {
		for id := range customers {
			if s.CustomerEventObject[id] == 0 {
				cus = append(cus, id)
			}
		}
		for id := range created {
			if _, ok := s.Events[id]; !ok {
				evs = append(evs, id)
			}
		}
		return cus, evs
	}
	stored := func(s dbState) []string {
		out := make([]string, 0, len(s.Events))
		for id := range s.Events {
			out = append(out, id)
		}
		sort.Strings(out)
		return out
	}

	start := time.Now()
	deadline := start.Add(e.cfg.drain)
	lastNote := time.Time{}
	var s dbState
	for {
		var err error
		s, err = e.state(ctx, org)
		if err == nil {
			mc, me := missingEvents(s)
			undelivered := e.rcv.missing(path, stored(s))
			logsIn := s.Logs >= answered
			if o.logMayBeLost != nil {
				_, unexplained, lerr := e.missingLogsBut(ctx, org, reqIDs, mayLackIDs)
				logsIn = lerr == nil && unexplained == 0
			}
			done := logsIn && len(mc) == 0 && len(me) == 0 && len(undelivered) == 0 &&
				s.Deliveries == len(s.Events) && s.Succeeded == s.Deliveries
			if done {
				rep.note("drained in %.1fs: %d request logs, %d events, %d deliveries succeeded", time.Since(start).Seconds(), s.Logs, len(s.Events), s.Succeeded)
				break
			}
			if time.Since(lastNote) > 15*time.Second {
				lastNote = time.Now()
				rep.note("draining: request_logs %d/%d, events stored %d (missing customer.created %d, missing api events %d), undelivered %d, deliveries %d (%d succeeded)",
					s.Logs, answered, len(s.Events), len(mc), len(me), len(undelivered), s.Deliveries, s.Succeeded)
			}
		} else if time.Since(lastNote) > 15*time.Second {
			lastNote = time.Now()
			rep.note("draining: %v", err)
		}
		if dead := e.deadProcs(); len(dead) > 0 {
			rep.note("not waiting for the drain: %s died", strings.Join(dead, ", "))
			break
		}
		if time.Now().After(deadline) {
			rep.note("drain deadline (%s) reached", e.cfg.drain)
			if err != nil {
				return err
			}
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}

	// Request logs: one row per request the gateway answered. Requests the
	// client gave up on may or may not have been logged.
	logsOK := s.Logs >= answered && s.Logs <= answered+failed && s.LogsDistinct == s.Logs
	detail := fmt.Sprintf("rows %d (distinct request ids %d), requests answered %d, requests without a response %d",
		s.Logs, s.LogsDistinct, answered, failed)
	name := "request_logs rows == requests sent"
	if o.logMayBeLost != nil {
		// Every answered request has its row, but for some of those
		// answered just before a kill; which ones, not only how many.
		name = "request_logs: a row per request sent, but for some answered just before a kill"
		missing, unexplained, err := e.missingLogsBut(ctx, org, reqIDs, mayLackIDs)
		if err != nil {
			return err
		}
		logsOK = unexplained == 0 && s.Logs <= answered+failed && s.LogsDistinct == s.Logs
		detail += fmt.Sprintf("; without a row: %d answered just before a kill (of %d such), %d others (%s)",
			len(missing)-unexplained, len(mayLackIDs), unexplained, sample(missing, 5))
	} else if !logsOK {
		detail += "; " + e.missingLogs(ctx, org, reqIDs)
	}
	rep.check(name, logsOK, "%s", detail)

	mc, me := missingEvents(s)
	rep.check("every customer.created reached the events table", len(mc) == 0,
		"%d of %d created customers have their event; missing: %s", len(customers)-len(mc), len(customers), sample(mc, 5))
	rep.check("every POST /v1/events event reached the events table", len(me) == 0,
		"%d of %d; missing: %s", len(created)-len(me), len(created), sample(me, 5))
	cusEvents, dupCus := 0, 0
	for _, n := range s.CustomerEventObject {
		cusEvents += n
		if n > 1 {
			dupCus++
		}
	}
	extra := len(s.Events) - len(customers) - len(created)
	rep.check("no unexplained or duplicate events", dupCus == 0 && extra >= 0 && extra <= o.extraEvents,
		"%d events stored = %d customer.created + %d api events + %d extra (allowed ≤ %d: requests with unknown outcome); customers with >1 customer.created: %d",
		len(s.Events), len(customers), len(created), extra, o.extraEvents, dupCus)
	undelivered := e.rcv.missing(path, stored(s))
	ds := e.rcv.stats(path)
	rep.check("every stored event delivered to the receiver at least once", len(undelivered) == 0,
		"%d of %d events received; undelivered: %s", len(s.Events)-len(undelivered), len(s.Events), sample(undelivered, 5))
	rep.check("webhook_deliveries: one per event, all succeeded", s.Deliveries == len(s.Events) && s.Succeeded == s.Deliveries,
		"%d rows, %d succeeded, %d events", s.Deliveries, s.Succeeded, len(s.Events))
	rep.check("duplicate deliveries carry the same webhook-id, signatures verify", ds.DuplicatesOtherWebhookID == 0 && ds.BadSignatures == 0,
		"%d deliveries for %d events: %d duplicates, %d with another webhook-id, %d bad signatures",
		ds.Requests, ds.Distinct, ds.Duplicates, ds.DuplicatesOtherWebhookID, ds.BadSignatures)
	rep.check("customers rows == creates the client saw executed", s.Customers >= len(customers) && s.Customers <= len(customers)+o.extraCustomers,
		"%d rows in customers, %d distinct ids from 2xx non-replayed creates (%d more allowed: creates with unknown outcome)",
		s.Customers, len(customers), o.extraCustomers)
	rep.Info["deliveries"] = ds
	if extra > 0 || s.Customers > len(customers) {
		e.diagnose(ctx, rep, l, org, customers, created)
	}
	return nil
}

// diagnose explains customers and events the client did not see created:
// for each, what Postgres holds and what the client saw for the request
// that carried the same body (the sequence number in emails and event
// data), so a report names the requests involved.
func (e *env) diagnose(ctx context.Context, rep *report, l *load, org string, customers, created map[string]bool) {
	bySeq := map[int64][]result{}
	for _, r := range l.snapshot() {
		if r.Seq != 0 {
			bySeq[r.Seq] = append(bySeq[r.Seq], r)
		}
	}
	seen := func(seq int64) string {
		var parts []string
		for _, r := range bySeq[seq] {
			s := fmt.Sprintf("[%s +%.3fs %s %s replayed=%v id=%s req=%s", r.Phase, rep.at(r.Sent), r.Op, r.label(), r.Replayed, r.ID, r.RequestID)
			if r.Err != "" {
				s += " err=" + r.Err
			}
			parts = append(parts, s+"]")
		}
		if len(parts) == 0 {
			return "no request of the client carries it"
		}
		return strings.Join(parts, " ")
	}
	logged := func(reqID string) string {
		if reqID == "" {
			return "no request id"
		}
		var status int
		var at time.Time
		var key string
		err := e.db.QueryRow(ctx, `SELECT status, created_at, idempotency_key FROM request_logs WHERE organization_id = $1 AND request_id = $2`, org, reqID).Scan(&status, &at, &key)
		if err != nil {
			return "request log: " + err.Error()
		}
		return fmt.Sprintf("request log: status %d at +%.3fs idempotency_key=%q", status, rep.at(at), key)
	}
	var lines []string
	rows, err := e.db.Query(ctx, `SELECT id, coalesce(email, ''), created_at FROM customers WHERE organization_id = $1 ORDER BY created_at`, org)
	if err == nil {
		var id, email string
		var at time.Time
		_, err = pgx.ForEachRow(rows, []any{&id, &email, &at}, func() error {
			if customers[id] || len(lines) >= 20 {
				return nil
			}
			seq, _ := strconv.ParseInt(strings.TrimLeft(strings.SplitN(email, "@", 2)[0], "cps"), 10, 64)
			var reqID string
			_ = e.db.QueryRow(ctx, `SELECT coalesce(request_id, '') FROM events WHERE organization_id = $1 AND type = 'customer.created' AND data->'object'->>'id' = $2`, org, id).Scan(&reqID)
			lines = append(lines, fmt.Sprintf("customer %s (%s) created at +%.3fs, not seen created by the client; its event's request %s (%s); client: %s",
				id, email, rep.at(at), reqID, logged(reqID), seen(seq)))
			return nil
		})
	}
	if err != nil {
		lines = append(lines, "reading customers: "+err.Error())
	}
	rows, err = e.db.Query(ctx, `SELECT id, type, coalesce(request_id, ''), coalesce(data->'object'->>'n', ''), created_at FROM events WHERE organization_id = $1 AND type = 'chaos.ping' ORDER BY created_at`, org)
	if err == nil {
		var id, typ, reqID, n string
		var at time.Time
		_, err = pgx.ForEachRow(rows, []any{&id, &typ, &reqID, &n, &at}, func() error {
			if created[id] || len(lines) >= 40 {
				return nil
			}
			seq, _ := strconv.ParseInt(n, 10, 64)
			lines = append(lines, fmt.Sprintf("event %s (%s, n=%s) created at +%.3fs by request %s (%s), not seen created by the client; client: %s",
				id, typ, n, rep.at(at), reqID, logged(reqID), seen(seq)))
			return nil
		})
	}
	if err != nil {
		lines = append(lines, "reading events: "+err.Error())
	}
	for _, line := range lines {
		rep.note("diagnosis: %s", line)
	}
	rep.Info["diagnosis"] = lines
}

// loggedIDs are the request ids with a request_logs row.
func (e *env) loggedIDs(ctx context.Context, org string) (map[string]bool, error) {
	rows, err := e.db.Query(ctx, `SELECT request_id FROM request_logs WHERE organization_id = $1`, org)
	if err != nil {
		return nil, err
	}
	have, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	got := make(map[string]bool, len(have))
	for _, id := range have {
		got[id] = true
	}
	return got, nil
}

// missingLogsBut are the request ids of want without a request_logs row,
// and how many of them are not in except.
func (e *env) missingLogsBut(ctx context.Context, org string, want, except map[string]bool) (missing []string, unexplained int, err error) {
	got, err := e.loggedIDs(ctx, org)
	if err != nil {
		return nil, 0, err
	}
	missing = absent(want, got)
	for _, id := range missing {
		if !except[id] {
			unexplained++
		}
	}
	return missing, unexplained, nil
}

// absent are the keys of a that b lacks, sorted.
func absent(a, b map[string]bool) []string {
	var out []string
	for id := range a {
		if !b[id] {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// missingLogs names a few answered request ids without a request_logs row.
func (e *env) missingLogs(ctx context.Context, org string, want map[string]bool) string {
	got, err := e.loggedIDs(ctx, org)
	if err != nil {
		return err.Error()
	}
	missing, unknown := absent(want, got), absent(got, want)
	return fmt.Sprintf("%d answered ids without a row (%s); %d rows the client never saw answered (%s)",
		len(missing), sample(missing, 5), len(unknown), sample(unknown, 5))
}

func (e *env) procs() []*e2e.Proc {
	return []*e2e.Proc{e.stack.Sample, e.stack.Control, e.stack.Deliverer, e.stack.Gateway}
}

// dead reports whether nothing listens on the process's address any more.
func (e *env) dead(p *e2e.Proc) bool {
	c, err := net.DialTimeout("tcp", p.Addr, 2*time.Second)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

// deadProcs names the processes that no longer listen.
func (e *env) deadProcs() []string {
	var out []string
	for _, p := range e.procs() {
		if e.dead(p) {
			out = append(out, p.Name)
		}
	}
	return out
}

// healthy checks every process of the stack answers /healthz.
func (e *env) healthy(ctx context.Context) error {
	for _, p := range e.procs() {
		req, _ := http.NewRequestWithContext(ctx, "GET", p.URL()+"/healthz", nil)
		resp, err := e.hc.Do(req)
		if err != nil {
			if e.dead(p) {
				return fmt.Errorf("%s is dead (nothing listens on %s): %w", p.Name, p.Addr, err)
			}
			return fmt.Errorf("%s: %w", p.Name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s: /healthz %d", p.Name, resp.StatusCode)
		}
	}
	return nil
}

// waitHealthy waits up to d for every process to be healthy.
func (e *env) waitHealthy(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		err := e.healthy(ctx)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return err
		}
	}
}

// gatewayMetrics sums the named counters from the Caddy admin /metrics.
func (e *env) gatewayMetrics(ctx context.Context, names ...string) (map[string]float64, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+e.stack.Admin+"/metrics", nil)
	resp, err := e.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	for _, n := range names {
		out[n] = 0
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		base, _, _ := strings.Cut(name, "{")
		if _, want := out[base]; !want {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			out[base] += v
		}
	}
	return out, sc.Err()
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
