package deliverer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/deliverer"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/ssrf"
	"github.com/gatehouse/gatehouse/internal/testenv"
	"github.com/gatehouse/gatehouse/internal/whsign"
	"github.com/gatehouse/gatehouse/internal/wire"
)

func TestGoneDisablesEndpoint(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusGone) })
	ep, _ := e.endpoint(rc.URL, endpointOpts{live: true})
	e.start(e.config())
	ev := e.event(true, "customer.created")
	e.produce(ev)

	d := e.waitDelivery("the 410 attempt", ev.ID, ep, attemptsDone(1))
	if d.Status != "failed" || d.NextAttemptAt != nil || *d.LastStatusCode != 410 {
		t.Fatalf("delivery after 410: %+v (want failed, no further attempt)", d)
	}
	var status, reason string
	if err := e.pool.QueryRow(context.Background(), `SELECT status, disabled_reason FROM webhook_endpoints WHERE id = $1`, ep).
		Scan(&status, &reason); err != nil {
		t.Fatal(err)
	}
	if status != "disabled" || !strings.Contains(reason, "410") {
		t.Fatalf("endpoint %s (%q), want disabled for 410", status, reason)
	}
	if n := e.count(`SELECT count(*) FROM audit_logs WHERE organization_id = $1 AND actor_type = 'system' AND actor_id = 'deliverer'
		AND action = 'webhook_endpoint.disabled' AND target_id = $2 AND livemode`, e.org, ep); n != 1 {
		t.Fatalf("%d audit entries for the disabling", n)
	}
	waitFor(t, "the disabled alert", 5*time.Second, func() bool {
		k := e.alerts.kinds()
		return len(k) > 0 && k[0] == deliverer.AlertDisabled
	})
	// A disabled endpoint gets no new deliveries.
	ev2 := e.event(true, "customer.created")
	e.produce(ev2)
	ev3 := e.event(false, "customer.created") // an event the consumer must also have passed
	other := newReceiver(t, nil)
	ep2, _ := e.endpoint(other.URL, endpointOpts{})
	e.produce(ev3)
	e.waitDelivery("a later event to another endpoint", ev3.ID, ep2, func(d deliveryRow) bool { return d.Status == "succeeded" })
	if n := e.count(`SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1`, ep); n != 1 {
		t.Fatalf("disabled endpoint has %d deliveries", n)
	}
	if rc.count() != 1 {
		t.Fatalf("disabled endpoint received %d requests", rc.count())
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	e := newEnv(t)
	var date string
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		switch n {
		case 1:
			w.Header().Set("Retry-After", "120")
			w.WriteHeader(http.StatusTooManyRequests)
		case 2:
			w.Header().Set("Retry-After", date)
			w.WriteHeader(http.StatusServiceUnavailable)
		case 3:
			w.Header().Set("Retry-After", "9999999") // capped at 24 h
			w.WriteHeader(http.StatusTooManyRequests)
		}
	})
	ep, _ := e.endpoint(rc.URL, endpointOpts{live: true})
	e.start(e.config())
	ev := e.event(true, "customer.created")
	e.produce(ev)

	d := e.waitDelivery("the 429", ev.ID, ep, attemptsDone(1))
	at := e.attempts(d.ID)[0].CreatedAt
	if d.NextAttemptAt == nil || !d.NextAttemptAt.Equal(at.Add(120*time.Second)) {
		t.Fatalf("next attempt %v, want attempt time %v + 120 s", d.NextAttemptAt, at)
	}
	e.clock.Set(*d.NextAttemptAt)
	want := e.clock.Now().Add(time.Hour)
	date = want.UTC().Format(http.TimeFormat)

	d = e.waitDelivery("the 503", ev.ID, ep, attemptsDone(2))
	if d.NextAttemptAt == nil || !d.NextAttemptAt.Equal(want) {
		t.Fatalf("next attempt %v, want the Retry-After date %v", d.NextAttemptAt, want)
	}
	e.clock.Set(*d.NextAttemptAt)
	d = e.waitDelivery("the capped 429", ev.ID, ep, attemptsDone(3))
	at = e.attempts(d.ID)[2].CreatedAt
	if d.NextAttemptAt == nil || !d.NextAttemptAt.Equal(at.Add(deliverer.MaxRetryAfter)) {
		t.Fatalf("next attempt %v, want capped at 24 h after %v", d.NextAttemptAt, at)
	}
	e.clock.Set(*d.NextAttemptAt)
	e.waitDelivery("success", ev.ID, ep, func(d deliveryRow) bool { return d.Status == "succeeded" })
}

func TestRedirectNotFollowed(t *testing.T) {
	e := newEnv(t)
	target := newReceiver(t, nil)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/elsewhere", http.StatusTemporaryRedirect)
	})
	ep, _ := e.endpoint(rc.URL, endpointOpts{})
	e.start(e.config())
	ev := e.event(false, "customer.created")
	e.produce(ev)
	d := e.waitDelivery("the redirected attempt", ev.ID, ep, attemptsDone(1))
	if d.Status != "failed" || *d.LastStatusCode != 307 || d.NextAttemptAt == nil {
		t.Fatalf("delivery %+v, want failed with a retry", d)
	}
	a := e.attempts(d.ID)[0]
	if !strings.Contains(a.Error, "redirects are not followed") || !strings.Contains(a.Error, "/elsewhere") {
		t.Fatalf("attempt error %q", a.Error)
	}
	if target.count() != 0 {
		t.Fatal("the redirect was followed")
	}
}

func TestTimeout(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	ep, _ := e.endpoint(rc.URL, endpointOpts{})
	cfg := e.config()
	cfg.Timeout = 300 * time.Millisecond
	e.start(cfg)
	ev := e.event(false, "customer.created")
	e.produce(ev)
	d := e.waitDelivery("the timed-out attempt", ev.ID, ep, attemptsDone(1))
	a := e.attempts(d.ID)[0]
	if d.Status != "failed" || d.LastStatusCode != nil || a.StatusCode != nil || a.Error != "timed out after 300ms" {
		t.Fatalf("delivery %+v, attempt %+v", d, a)
	}
	if a.LatencyMS < 250 || a.LatencyMS > 5000 {
		t.Errorf("latency %d ms for a 300 ms timeout", a.LatencyMS)
	}
}

// rawReceiver answers every request with answer's bytes, then keeps the
// connection open until the test ends: a receiver that does not speak HTTP
// as a client expects.
func rawReceiver(t *testing.T, answer string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = c.Read(make([]byte, 64<<10))
				_, _ = c.Write([]byte(answer))
				<-done
			}()
		}
	}()
	return "http://" + ln.Addr().String() + "/hook"
}

// TestSwitchingProtocolsIsBoundedByTheTimeout: a 101 answer's body is the
// raw connection, which Go's client no longer ties to the request's
// context; a receiver that then says nothing held the worker, the lease and
// the endpoint's slot for as long as it kept the connection.
func TestSwitchingProtocolsIsBoundedByTheTimeout(t *testing.T) {
	e := newEnv(t)
	ep, _ := e.endpoint(rawReceiver(t, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"), endpointOpts{})
	cfg := e.config()
	cfg.Timeout = 300 * time.Millisecond
	e.start(cfg)
	ev := e.event(false, "customer.created")
	e.produce(ev)
	d := e.waitDelivery("the attempt answered 101", ev.ID, ep, attemptsDone(1))
	if d.Status != "failed" || d.NextAttemptAt == nil {
		t.Fatalf("delivery %+v, want failed with a retry", d)
	}
}

// TestMalformedAnswerIsStoredBounded: Go's client quotes up to 64 KiB of a
// malformed status line in its error; the attempt's error, shown by the API
// and the dashboard, is bounded as the response snippet is.
func TestMalformedAnswerIsStoredBounded(t *testing.T) {
	e := newEnv(t)
	ep, _ := e.endpoint(rawReceiver(t, strings.Repeat("\x01", 60<<10)+"\r\n\r\n"), endpointOpts{})
	e.start(e.config())
	ev := e.event(false, "customer.created")
	e.produce(ev)
	d := e.waitDelivery("the malformed answer's attempt", ev.ID, ep, attemptsDone(1))
	a := e.attempts(d.ID)[0]
	if !strings.Contains(a.Error, "malformed HTTP") || len(a.Error) > 2<<10 {
		t.Fatalf("attempt error of %d bytes: %.200q", len(a.Error), a.Error)
	}
}

// hanging answers no request until release is closed (or the attempt
// gives up), counting the requests waiting now (cur) and at most (peak).
type hanging struct {
	release   chan struct{}
	cur, peak atomic.Int32
}

func newHanging() *hanging { return &hanging{release: make(chan struct{})} }

func (h *hanging) respond(n int, w http.ResponseWriter, r *http.Request) {
	c := h.cur.Add(1)
	for p := h.peak.Load(); c > p && !h.peak.CompareAndSwap(p, c); p = h.peak.Load() {
	}
	select {
	case <-h.release:
	case <-r.Context().Done():
	}
	h.cur.Add(-1)
}

// TestSlowEndpointDoesNotStarveOthers: with 4 workers and at most 2
// attempts per endpoint, a hanging endpoint holds 2 workers and no more;
// another endpoint's deliveries all go through meanwhile.
func TestSlowEndpointDoesNotStarveOthers(t *testing.T) {
	e := newEnv(t)
	h := newHanging()
	release, cur, peak := h.release, &h.cur, &h.peak
	slow := newReceiver(t, h.respond)
	fast := newReceiver(t, nil)
	epSlow, _ := e.endpoint(slow.URL, endpointOpts{events: []string{"slow.thing"}})
	epFast, _ := e.endpoint(fast.URL, endpointOpts{events: []string{"fast.thing"}})
	cfg := e.config()
	cfg.Concurrency, cfg.EndpointConcurrency = 4, 2
	e.start(cfg)

	var evs, fastEvs []string
	for range 10 {
		ev := e.event(false, "slow.thing")
		e.produce(ev)
		evs = append(evs, ev.ID)
	}
	waitFor(t, "the slow endpoint to hold its share of workers", 30*time.Second, func() bool { return cur.Load() == 2 })
	for range 10 {
		ev := e.event(false, "fast.thing")
		e.produce(ev)
		fastEvs = append(fastEvs, ev.ID)
	}
	for _, id := range fastEvs {
		e.waitDelivery("fast deliveries while the slow endpoint hangs", id, epFast, func(d deliveryRow) bool { return d.Status == "succeeded" })
	}
	if p := peak.Load(); p != 2 {
		t.Fatalf("slow endpoint saw %d concurrent attempts, want 2", p)
	}
	close(release)
	for _, id := range evs {
		e.waitDelivery("slow deliveries once released", id, epSlow, func(d deliveryRow) bool { return d.Status == "succeeded" })
	}
}

// TestHangingTenantDoesNotStarveOthers: one organisation's endpoints that
// hang (until the attempt timeout, in production) hold at most
// OrgConcurrency workers, so another organisation's webhooks are delivered
// meanwhile. Before the organisation bound, 3 endpoints × 2 attempts took
// all 4 workers, and every other tenant waited for timeouts.
func TestHangingTenantDoesNotStarveOthers(t *testing.T) {
	e := newEnv(t)
	h := newHanging()
	release, cur, peak, hang := h.release, &h.cur, &h.peak, h.respond
	var hanging []string
	for range 3 {
		ep, _ := e.endpoint(newReceiver(t, hang).URL, endpointOpts{})
		hanging = append(hanging, ep)
	}
	tenant, otherOrg := e.org, "org_"+testenv.Suffix()
	e.exec(`INSERT INTO organizations (id, name) VALUES ($1, 'Other')`, otherOrg)
	e.org = otherOrg
	other, _ := e.endpoint(newReceiver(t, nil).URL, endpointOpts{})
	e.org = tenant
	cfg := e.config()
	cfg.Concurrency, cfg.EndpointConcurrency, cfg.OrgConcurrency = 4, 2, 2
	e.start(cfg)

	evs := e.produceEvents(4, "customer.created")
	waitFor(t, "the tenant to hold its share of workers", 30*time.Second, func() bool { return cur.Load() >= 2 })
	e.org = otherOrg
	for range 5 {
		ev := e.event(false, "customer.created")
		e.produce(ev)
		e.waitDelivery("the other tenant's delivery while the first one's endpoints hang", ev.ID, other,
			func(d deliveryRow) bool { return d.Status == "succeeded" })
	}
	if p := peak.Load(); p != 2 {
		t.Fatalf("the hanging tenant had %d attempts in flight, want 2 (its OrgConcurrency)", p)
	}
	close(release)
	for _, id := range evs {
		for _, ep := range hanging {
			e.waitDelivery("the hanging tenant's deliveries once released", id, ep, func(d deliveryRow) bool { return d.Status == "succeeded" })
		}
	}
}

// startTight runs a worker that holds two deliveries per endpoint, one in
// flight, and claims on its tick only once an hour: a claim before then
// must have been set off by freed room. It returns after the first claim.
func (e *env) startTight() {
	e.t.Helper()
	cfg := e.config()
	cfg.PollInterval = time.Hour
	cfg.EndpointConcurrency = 1
	cfg.MaxHeld = 8 // two per endpoint
	e.start(cfg)
	waitFor(e.t, "the poller's first claim", 10*time.Second, func() bool { return e.metric("gatehouse_deliverer_polls_total") >= 1 })
}

// TestBacklogIsClaimedAsRoomFrees: a burst to one endpoint beyond what
// the dispatcher may hold for it is stored unleased by fan-out, and the
// poller claims it as room frees, without waiting for its next tick (an
// hour away here). It used to wait: a poller that had found nothing due
// ignored freed room until the tick, which stalled bursts for up to a poll
// interval each time the endpoint's share filled up.
func TestBacklogIsClaimedAsRoomFrees(t *testing.T) {
	e := newEnv(t)
	rc, release := newHoldingReceiver(t, http.StatusOK)
	ep, _ := e.endpoint(rc.URL, endpointOpts{})
	e.startTight()

	evs := make([]wire.Event, 6)
	for i := range evs {
		evs[i] = e.event(false, "customer.created")
	}
	e.produce(evs...)
	waitFor(t, "the first attempt to hang and the burst to be stored", 30*time.Second, func() bool {
		return rc.count() == 1 && e.count(`SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1`, ep) == len(evs)
	})
	if n := e.count(`SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1 AND locked_until IS NULL`, ep); n != len(evs)-2 {
		t.Fatalf("%d deliveries stored unleased, want %d beyond the endpoint's room of 2", n, len(evs)-2)
	}
	close(release)
	waitFor(t, "every delivery of the burst", 30*time.Second, func() bool {
		return e.count(`SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1 AND status = 'succeeded'`, ep) == len(evs)
	})
}

// TestFullEndpointWithNothingDueCostsNoClaims: while one endpoint is full
// and nothing is due, deliveries to another endpoint (all on the fast
// path) set off no claims: the room they free is not the full endpoint's.
func TestFullEndpointWithNothingDueCostsNoClaims(t *testing.T) {
	e := newEnv(t)
	rcA, release := newHoldingReceiver(t, http.StatusOK)
	defer close(release)
	rcB := newReceiver(t, nil)
	a, _ := e.endpoint(rcA.URL, endpointOpts{events: []string{"customer.created"}})
	b, _ := e.endpoint(rcB.URL, endpointOpts{events: []string{"customer.updated"}})
	e.startTight()
	e.produce(e.event(false, "customer.created"), e.event(false, "customer.created")) // A full, nothing left behind
	waitFor(t, "A full", 30*time.Second, func() bool {
		return rcA.count() == 1 && e.count(`SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1 AND locked_until IS NOT NULL`, a) == 2
	})
	polls := e.metric("gatehouse_deliverer_polls_total")
	const n = 30
	for i := range n {
		e.produce(e.event(false, "customer.updated"))
		waitFor(t, "B's delivery", 30*time.Second, func() bool {
			return e.count(`SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1 AND status = 'succeeded'`, b) == i+1
		})
	}
	if got := e.metric("gatehouse_deliverer_polls_total") - polls; got > 0 {
		t.Errorf("%v claims for %d fast-path deliveries to B while nothing was due", got, n)
	}
}

// TestExpiredLeaseIsTakenOver: a delivery leased by a deliverer that died
// (locked_until in the past) is picked up; one whose lease is still live is
// left alone until the lease runs out.
func TestExpiredLeaseIsTakenOver(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	ep, secrets := e.endpoint(rc.URL, endpointOpts{})
	now := e.clock.Now()
	insert := func(lockedUntil time.Time) (string, string) {
		ev := e.event(false, "customer.created")
		e.exec(`INSERT INTO events (id, organization_id, livemode, type, api_version, data, created_at)
			VALUES ($1, $2, false, $3, $4, $5, $6)`, ev.ID, e.org, ev.Type, ev.APIVersion, string(ev.Data), now)
		id := ids.New(ids.Delivery)
		e.exec(`INSERT INTO webhook_deliveries (id, organization_id, livemode, event_id, endpoint_id, status, next_attempt_at,
			locked_until, lease_id) VALUES ($1, $2, false, $3, $4, 'pending', $5, $6, 'a-dead-deliverer')`,
			id, e.org, ev.ID, ep, now.Add(-time.Minute), lockedUntil)
		return ev.ID, id
	}
	expiredEv, expired := insert(now.Add(-time.Second))
	liveEv, _ := insert(now.Add(30 * time.Second))
	e.start(e.config())

	e.waitDelivery("the expired lease's delivery", expiredEv, ep, func(d deliveryRow) bool { return d.Status == "succeeded" })
	got := rc.received()
	if len(got) != 1 || got[0].header.Get("Webhook-Id") != expired {
		t.Fatalf("receiver got %d requests", len(got))
	}
	if err := whsign.Verify(secrets[0], got[0].header, got[0].body, 0, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	e.pollsAfterNow()
	if d := e.delivery(liveEv, ep); d.Attempts != 0 || d.LockedUntil == nil || !d.LockedUntil.Equal(now.Add(30*time.Second)) {
		t.Fatalf("a delivery under a live lease was claimed: %+v", d)
	}
	e.clock.Advance(31 * time.Second)
	e.waitDelivery("the delivery once its lease ran out", liveEv, ep, func(d deliveryRow) bool { return d.Status == "succeeded" })
}

// TestManualRetry honours the control plane's manual_pending flag: the
// attempt is recorded as manual and the flag cleared, even for a dead
// delivery or a disabled endpoint; a disabled endpoint's scheduled
// deliveries are parked instead.
func TestManualRetry(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	ep, _ := e.endpoint(rc.URL, endpointOpts{disabled: true})
	now := e.clock.Now()
	mk := func(status string, attempts int, manual bool) (string, string) {
		ev := e.event(false, "customer.created")
		e.exec(`INSERT INTO events (id, organization_id, livemode, type, api_version, data, created_at)
			VALUES ($1, $2, false, $3, $4, $5, $6)`, ev.ID, e.org, ev.Type, ev.APIVersion, string(ev.Data), now)
		id := ids.New(ids.Delivery)
		e.exec(`INSERT INTO webhook_deliveries (id, organization_id, livemode, event_id, endpoint_id, status, attempts,
			next_attempt_at, manual_pending) VALUES ($1, $2, false, $3, $4, $5, $6, $7, $8)`,
			id, e.org, ev.ID, ep, status, attempts, now, manual)
		return ev.ID, id
	}
	deadEv, _ := mk("pending", 4, true) // a dead delivery the user asked to retry
	parkedEv, _ := mk("failed", 1, false)
	neverTriedEv, _ := mk("pending", 0, false)
	e.start(e.config())

	d := e.waitDelivery("the manual attempt", deadEv, ep, func(d deliveryRow) bool { return d.Status == "succeeded" })
	if d.Manual || d.Attempts != 5 {
		t.Fatalf("after the manual attempt: %+v", d)
	}
	if as := e.attempts(d.ID); len(as) != 1 || as[0].Trigger != "manual" {
		t.Fatalf("attempts %+v, want one manual", as)
	}
	p := e.waitDelivery("the parked delivery", parkedEv, ep, func(d deliveryRow) bool { return d.LockedUntil == nil && d.NextAttemptAt == nil })
	if p.Status != "failed" || p.Attempts != 1 || len(e.attempts(p.ID)) != 0 {
		t.Fatalf("parked delivery %+v", p)
	}
	// Never attempted, but parked all the same: failed without a next
	// attempt is what recovery re-queues once the endpoint is enabled.
	p = e.waitDelivery("the parked new delivery", neverTriedEv, ep, func(d deliveryRow) bool { return d.LockedUntil == nil && d.NextAttemptAt == nil })
	if p.Status != "failed" || p.Attempts != 0 {
		t.Fatalf("parked new delivery %+v", p)
	}
	if rc.count() != 1 {
		t.Fatalf("receiver got %d requests, want only the manual one", rc.count())
	}
	// A manual retry that fails on a delivery out of retries is dead again.
	e.exec(`UPDATE webhook_endpoints SET status = 'enabled', disabled_reason = NULL WHERE id = $1`, ep)
	rc.setRespond(func(n int, w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })
	stillDeadEv, _ := mk("pending", 4, true)
	dead := e.waitDelivery("the failing manual attempt", stillDeadEv, ep, attemptsDone(5))
	if dead.Status != "dead" || dead.Manual || dead.NextAttemptAt != nil {
		t.Fatalf("after a failed manual retry of a dead delivery: %+v", dead)
	}
	// One that fails on a delivery the endpoint has received stays
	// succeeded, and the schedule does not start over.
	e.exec(`UPDATE webhook_deliveries SET status = 'pending', manual_pending = true, next_attempt_at = $2 WHERE id = $1`, d.ID, e.clock.Now())
	d = e.waitDelivery("the failing resend", deadEv, ep, attemptsDone(6))
	if d.Status != "succeeded" || d.Manual || d.NextAttemptAt != nil || *d.LastStatusCode != 500 {
		t.Fatalf("after a failed resend of a delivered event: %+v", d)
	}
}

// TestFailedResendStartsNoRetries: "Retry" on a delivery that succeeded
// is one attempt now; when it fails, the live schedule does not start over
// (days of sends, a dead letter and an alert for an event already there).
func TestFailedResendStartsNoRetries(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	ep, _ := e.endpoint(rc.URL, endpointOpts{live: true})
	e.start(e.config())
	ev := e.event(true, "customer.created")
	e.produce(ev)
	d := e.waitDelivery("the delivery", ev.ID, ep, func(d deliveryRow) bool { return d.Status == "succeeded" && d.LockedUntil == nil })
	rc.setRespond(func(n int, w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })
	e.exec(`UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $2, manual_pending = true WHERE id = $1`, d.ID, e.clock.Now())
	d = e.waitDelivery("the resend", ev.ID, ep, func(d deliveryRow) bool { return d.Attempts == 2 && d.LockedUntil == nil && !d.Manual })
	if d.Status != "succeeded" || d.NextAttemptAt != nil {
		t.Fatalf("after a failed resend of a delivered event: %+v", d)
	}
}

// TestManualRetriesKeepTheSchedule: someone pressing "Retry now" while
// their endpoint still fails does not use up the automatic retries, nor move
// them along the schedule. The worker's clock stands still throughout.
func TestManualRetriesKeepTheSchedule(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })
	ep, _ := e.endpoint(rc.URL, endpointOpts{live: true})
	cfg := e.config()
	e.start(cfg)
	ev := e.event(true, "customer.created")
	e.produce(ev)
	d := e.waitDelivery("the first attempt", ev.ID, ep, attemptsDone(1))
	first := deliverer.DefaultLiveSchedule[0]
	for i := 1; i <= deliverer.DefaultLiveSchedule.MaxAttempts(); i++ {
		e.exec(`UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $2, manual_pending = true WHERE id = $1`,
			d.ID, e.clock.Now())
		d = e.waitDelivery("a manual attempt", ev.ID, ep, func(d deliveryRow) bool {
			return d.Attempts == 1+i && d.LockedUntil == nil && !d.Manual
		})
		wait := d.NextAttemptAt.Sub(e.clock.Now())
		if d.Status != "failed" || wait < time.Duration(float64(first)*(1-deliverer.Jitter))-time.Millisecond ||
			wait > time.Duration(float64(first)*(1+deliverer.Jitter))+time.Millisecond {
			t.Fatalf("after %d failed manual retries: %s, next attempt in %s; want failed, next in %s ± %.0f%%",
				i, d.Status, wait, first, deliverer.Jitter*100)
		}
	}
	if rc.count() != 1+deliverer.DefaultLiveSchedule.MaxAttempts() {
		t.Fatalf("receiver got %d requests", rc.count())
	}
}

// TestSSRFGuardAtDelivery: without the loopback allowlist the delivery
// client refuses to connect, after DNS, and records why — the kind of
// address, not the address: the error is shown to the tenant, and what the
// platform's resolver answers for a name (an internal or split-horizon one,
// a public name pointed inside) is the platform's own business.
func TestSSRFGuardAtDelivery(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	port := rc.URL[strings.LastIndex(rc.URL, ":")+1:]
	byName, _ := e.endpoint("http://localhost:"+port+"/hook", endpointOpts{}) // resolves to loopback
	byIP, _ := e.endpoint(rc.URL, endpointOpts{})
	cfg := e.config()
	cfg.Policy = ssrf.Policy{}
	e.start(cfg)
	ev := e.event(false, "customer.created")
	e.produce(ev)
	for _, ep := range []string{byName, byIP} {
		d := e.waitDelivery("the refused attempt", ev.ID, ep, attemptsDone(1))
		a := e.attempts(d.ID)[0]
		if d.Status != "failed" || a.StatusCode != nil || !strings.Contains(a.Error, "refused") || !strings.Contains(a.Error, "loopback") {
			t.Fatalf("delivery %+v, attempt %+v", d, a)
		}
		if ep == byName && (strings.Contains(a.Error, "127.0.0.1") || strings.Contains(a.Error, "::1")) {
			t.Errorf("the attempt error names the address localhost resolved to: %q", a.Error)
		}
	}
	if rc.count() != 0 {
		t.Fatal("the guard let a request through to loopback")
	}
}

// TestEndpointAPIVersion: an endpoint pinned to an older API version gets
// the event rendered in that version.
// TestEndpointAPIVersion: an endpoint's payloads are rendered in the
// version it pins, else in its organisation's, whatever version the request
// that caused the event used (e.event's, 2026-11-01).
func TestEndpointAPIVersion(t *testing.T) {
	for _, tc := range []struct{ name, org, endpoint string }{
		{"pinned endpoint", "2026-11-01", "2026-06-01"},
		{"organisation's version", "2026-06-01", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.exec(`UPDATE organizations SET api_version = $2 WHERE id = $1`, e.org, tc.org)
			rc := newReceiver(t, nil)
			ep, _ := e.endpoint(rc.URL, endpointOpts{apiVersion: tc.endpoint})
			e.start(e.config())
			ev := e.event(false, "customer.created")
			e.produce(ev)
			e.waitDelivery("delivery", ev.ID, ep, func(d deliveryRow) bool { return d.Status == "succeeded" })
			var body struct {
				APIVersion string `json:"api_version"`
				Data       struct {
					Object map[string]any `json:"object"`
				} `json:"data"`
			}
			if err := json.Unmarshal(rc.received()[0].body, &body); err != nil {
				t.Fatal(err)
			}
			if body.APIVersion != "2026-06-01" || body.Data.Object["full_name"] != "Ada" || body.Data.Object["name"] != nil {
				t.Fatalf("payload in %s: %v", body.APIVersion, body.Data.Object)
			}
		})
	}
}

// TestFailingEndpointAlertsAndDisables: failing_since thresholds raise one
// alert each, and five days of failure disable the endpoint (audited).
func TestFailingEndpointAlertsAndDisables(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })
	epDay, _ := e.endpoint(rc.URL+"/day", endpointOpts{})
	epFive, _ := e.endpoint(rc.URL+"/five", endpointOpts{})
	now := e.clock.Now()
	e.exec(`UPDATE webhook_endpoints SET failing_since = $2 WHERE id = $1`, epDay, now.Add(-25*time.Hour))
	e.exec(`UPDATE webhook_endpoints SET failing_since = $2 WHERE id = $1`, epFive, now.Add(-5*24*time.Hour-time.Minute))
	w, err := deliverer.NewWorker(e.config())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	ev := e.event(false, "customer.created")
	e.produce(ev)
	e.waitDelivery("day", ev.ID, epDay, attemptsDone(1))
	e.waitDelivery("five", ev.ID, epFive, attemptsDone(1))

	var level int
	var status string
	_ = e.pool.QueryRow(context.Background(), `SELECT failing_alert_level, status FROM webhook_endpoints WHERE id = $1`, epDay).Scan(&level, &status)
	if level != 2 || status != "enabled" {
		t.Fatalf("endpoint failing 25 h: level %d, %s", level, status)
	}
	_ = e.pool.QueryRow(context.Background(), `SELECT status FROM webhook_endpoints WHERE id = $1`, epFive).Scan(&status)
	if status != "disabled" {
		t.Fatalf("endpoint failing 5 days is %s", status)
	}
	if n := e.count(`SELECT count(*) FROM audit_logs WHERE target_id = $1 AND actor_type = 'system' AND action = 'webhook_endpoint.disabled'
		AND data->>'reason' = 'failing'`, epFive); n != 1 {
		t.Fatalf("%d audit entries", n)
	}
	waitFor(t, "both alerts", 5*time.Second, func() bool { return len(e.alerts.kinds()) == 2 })
	// The same threshold is not alerted twice.
	ev2 := e.event(false, "customer.created")
	e.produce(ev2)
	e.waitDelivery("day again", ev2.ID, epDay, attemptsDone(1))
	// Alerts are sent off the delivery path; Run returns once every alert
	// raised has reached the notifier, so a repeated one would be seen.
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("worker did not stop")
	}
	if k := e.alerts.kinds(); len(k) != 2 {
		t.Fatalf("alerts %v", k)
	}
}

// TestRotatedSecretSignsTheNextDelivery: a delivery made after a rotation
// committed is signed with the new secret, even though the old one was
// cached a moment before; an old secret expired by the rotation no longer
// signs, one given a grace period still does.
func TestRotatedSecretSignsTheNextDelivery(t *testing.T) {
	for _, tc := range []struct {
		name  string
		grace time.Duration // the rotation's expires_in
	}{
		{"old secret expired at once", 0},
		{"old secret kept a day", 24 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			rc := newReceiver(t, nil)
			ep, old := e.endpoint(rc.URL, endpointOpts{})
			e.start(e.config())
			succeeded := func(d deliveryRow) bool { return d.Status == "succeeded" }
			ev := e.event(false, "customer.created")
			e.produce(ev)
			e.waitDelivery("the delivery before the rotation", ev.ID, ep, succeeded)

			fresh := e.rotate(ep, tc.grace)
			ev2 := e.event(false, "customer.created")
			e.produce(ev2)
			e.waitDelivery("the delivery after the rotation", ev2.ID, ep, succeeded)
			got := rc.received()[1]
			if err := whsign.Verify(fresh, got.header, got.body, 0, e.clock.Now()); err != nil {
				t.Errorf("not signed with the new secret (%q): %v", got.header.Get("Webhook-Signature"), err)
			}
			err := whsign.Verify(old[0], got.header, got.body, 0, e.clock.Now())
			if tc.grace == 0 && err == nil {
				t.Error("still signed with the secret the rotation expired")
			}
			if tc.grace > 0 && err != nil {
				t.Errorf("not signed with the old secret during its grace period: %v", err)
			}
		})
	}
}

// TestQueuedDeliveriesFollowEndpointChanges: deliveries already queued in
// the deliverer when their endpoint changes follow the change. Four events
// are queued behind an attempt that hangs (one attempt at a time to the
// endpoint); then the endpoint is disabled (the queued deliveries are
// parked, as for any disabled endpoint), moved to another URL, or has its
// secret rotated.
func TestQueuedDeliveriesFollowEndpointChanges(t *testing.T) {
	for _, tc := range []struct {
		name string
		// change changes endpoint ep and returns the new secret if it
		// makes one; check then checks the three deliveries queued
		// meanwhile (old is the original secret).
		change func(e *env, ep string, moved *receiver) string
		check  func(t *testing.T, e *env, queued []deliveryRow, rc, moved *receiver, old, fresh string)
	}{
		{
			name: "disabled",
			change: func(e *env, ep string, _ *receiver) string {
				e.exec(`UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = 'Disabled through the API.' WHERE id = $1`, ep)
				return ""
			},
			check: func(t *testing.T, e *env, queued []deliveryRow, rc, _ *receiver, _, _ string) {
				for _, d := range queued {
					if d.Status != "failed" || d.NextAttemptAt != nil || d.Attempts != 0 || len(e.attempts(d.ID)) != 0 {
						t.Errorf("queued delivery to a disabled endpoint %+v, want parked: failed, never attempted, nothing scheduled", d)
					}
				}
				if rc.count() != 1 {
					t.Errorf("the disabled endpoint received %d requests, want only the one in flight", rc.count())
				}
			},
		},
		{
			name: "moved to another URL",
			change: func(e *env, ep string, moved *receiver) string {
				e.exec(`UPDATE webhook_endpoints SET url = $2 WHERE id = $1`, ep, moved.URL+"/new")
				return ""
			},
			check: func(t *testing.T, e *env, queued []deliveryRow, rc, moved *receiver, _, _ string) {
				for _, d := range queued {
					if d.Status != "succeeded" {
						t.Errorf("queued delivery %+v", d)
					}
				}
				if rc.count() != 1 || moved.count() != 3 {
					t.Errorf("old URL received %d requests, new URL %d; want 1 (the one in flight) and 3", rc.count(), moved.count())
				}
			},
		},
		{
			name: "secret rotated, the old one expired",
			change: func(e *env, ep string, _ *receiver) string {
				return e.rotate(ep, 0)
			},
			check: func(t *testing.T, e *env, queued []deliveryRow, rc, _ *receiver, old, fresh string) {
				for _, d := range queued {
					if d.Status != "succeeded" {
						t.Errorf("queued delivery %+v", d)
					}
				}
				for _, got := range rc.received()[1:] {
					if err := whsign.Verify(fresh, got.header, got.body, 0, e.clock.Now()); err != nil {
						t.Errorf("queued delivery not signed with the new secret: %v", err)
					}
					if err := whsign.Verify(old, got.header, got.body, 0, e.clock.Now()); err == nil {
						t.Error("queued delivery still signed with the expired secret")
					}
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			rc, release := newHoldingReceiver(t, http.StatusOK)
			moved := newReceiver(t, nil)
			ep, secrets := e.endpoint(rc.URL, endpointOpts{})
			cfg := e.config()
			cfg.EndpointConcurrency = 1
			cfg.EndpointTTL = time.Nanosecond // whatever was read before the change is stale
			e.start(cfg)
			evs := e.produceEvents(4, "customer.created")
			waitFor(t, "the first attempt to hang and the others to be queued", 30*time.Second, func() bool {
				return rc.count() == 1 && e.count(`SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1`, ep) == 4
			})
			fresh := tc.change(e, ep, moved)
			close(release)
			settled := func(d deliveryRow) bool {
				return d.LockedUntil == nil && (d.Status == "succeeded" || d.NextAttemptAt == nil)
			}
			first := e.waitDelivery("the attempt in flight", evs[0], ep, settled)
			if first.Status != "succeeded" {
				t.Fatalf("the attempt in flight: %+v", first)
			}
			var queued []deliveryRow
			for _, id := range evs[1:] {
				queued = append(queued, e.waitDelivery("a queued delivery", id, ep, settled))
			}
			tc.check(t, e, queued, rc, moved, secrets[0], fresh)
		})
	}
}

// TestRetryRequestedDuringAnAttemptIsKept: a retry asked for
// (POST /v1/webhook-deliveries/{id}/retry) while an attempt of the same
// delivery is in flight, manual or scheduled, is a new manual attempt made
// after it, not absorbed by it.
func TestRetryRequestedDuringAnAttemptIsKept(t *testing.T) {
	for _, tc := range []struct {
		name   string
		manual bool // the attempt in flight
	}{
		{"during a manual attempt", true},
		{"during a scheduled attempt", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			rc, release := newHoldingReceiver(t, http.StatusInternalServerError)
			ep, _ := e.endpoint(rc.URL, endpointOpts{})
			now := e.clock.Now()
			ev := e.event(false, "customer.created")
			e.exec(`INSERT INTO events (id, organization_id, livemode, type, api_version, data, created_at)
				VALUES ($1, $2, false, $3, $4, $5, $6)`, ev.ID, e.org, ev.Type, ev.APIVersion, string(ev.Data), now)
			id := ids.New(ids.Delivery)
			e.exec(`INSERT INTO webhook_deliveries (id, organization_id, livemode, event_id, endpoint_id, status, attempts,
				next_attempt_at, manual_pending) VALUES ($1, $2, false, $3, $4, 'pending', 0, $5, $6)`, id, e.org, ev.ID, ep, now, tc.manual)
			e.start(e.config())
			waitFor(t, "the first attempt to reach the receiver", 10*time.Second, func() bool { return rc.count() == 1 })
			e.clock.Advance(time.Second) // the attempts' order shows in their times
			// The user asks for a retry now: RetryDelivery's UPDATE.
			e.exec(`UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $2, manual_pending = true, updated_at = $2
				WHERE id = $1`, id, e.clock.Now())
			close(release)
			e.waitDelivery("the first attempt's result", ev.ID, ep, func(d deliveryRow) bool { return d.Attempts >= 1 && d.LockedUntil == nil })
			e.pollsAfterNow()
			if d := e.delivery(ev.ID, ep); rc.count() < 2 && !d.Manual {
				t.Fatalf("the retry was dropped: %+v, %d request(s) received", d, rc.count())
			}
			d := e.waitDelivery("the retry", ev.ID, ep, func(d deliveryRow) bool { return d.Status == "succeeded" })
			as := e.attempts(d.ID)
			first := "scheduled"
			if tc.manual {
				first = "manual"
			}
			if d.Attempts != 2 || d.Manual || len(as) != 2 || as[0].Trigger != first || as[1].Trigger != "manual" {
				t.Fatalf("after the retry: %+v, attempts %+v; want a %s attempt, then a manual one", d, as, first)
			}
		})
	}
}

// TestAlertsHideURLSecrets: alerts are logged and mailed, so the endpoint
// URL in them keeps scheme, host and path only; tokens in the query,
// fragment or user info stay out.
func TestAlertsHideURLSecrets(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusGone) })
	url := strings.Replace(rc.URL, "http://", "http://user:pa55@", 1) + "/hooks?token=s3cret#frag"
	e.endpoint(url, endpointOpts{})
	e.start(e.config())
	e.produce(e.event(false, "customer.created"))
	waitFor(t, "the disabled alert", 30*time.Second, func() bool { return len(e.alerts.all()) > 0 })
	if a := e.alerts.all()[0]; a.Kind != deliverer.AlertDisabled || a.URL != rc.URL+"/hooks" {
		t.Fatalf("alert %s about %q, want %s about %q", a.Kind, a.URL, deliverer.AlertDisabled, rc.URL+"/hooks")
	}
}

// A retry is the same webhook: the same webhook-id and the same body, byte
// for byte, though the first attempt is built from the Kafka message and the
// retry from the stored event (which, as jsonb, reordered keys and rewrote
// numbers; migration 0013).
func TestRetryCarriesTheSameBody(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			w.WriteHeader(http.StatusInternalServerError)
		}
	})
	ep, _ := e.endpoint(rc.URL, endpointOpts{})
	e.start(e.config())
	ev := e.event(false, "customer.created")
	ev.Data = json.RawMessage(`{"object":{"object":"customer","id":"cus_1","email":"a@b.c","amount":1.50,"big":1E2}}`)
	e.produce(ev)
	d := e.waitDelivery("first attempt", ev.ID, ep, attemptsDone(1))
	e.clock.Set(d.NextAttemptAt.Add(time.Second))
	e.waitDelivery("success", ev.ID, ep, func(d deliveryRow) bool { return d.Status == "succeeded" })
	r := rc.received()
	if len(r) != 2 || r[0].header.Get("Webhook-Id") != r[1].header.Get("Webhook-Id") {
		t.Fatalf("%d requests; want the same webhook twice", len(r))
	}
	if string(r[0].body) != string(r[1].body) {
		t.Errorf("same webhook-id, different bodies:\n first: %s\n retry: %s", r[0].body, r[1].body)
	}
	if !bytes.Contains(r[0].body, ev.Data) {
		t.Errorf("the body does not carry the event's data as given: %s", r[0].body)
	}
}

// TestShortRetryAfterDoesNotShortenTheSchedule: a receiver in maintenance
// answering 503 with a short Retry-After (as load balancers and rate
// limiters do) is not retried sooner than the schedule says, so its
// deliveries still get the schedule's days of retries instead of using up
// every attempt within seconds.
func TestShortRetryAfterDoesNotShortenTheSchedule(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	ep, _ := e.endpoint(rc.URL, endpointOpts{live: true})
	e.start(e.config())
	ev := e.event(true, "customer.created")
	e.produce(ev)

	for attempt := 1; attempt <= 2; attempt++ {
		d := e.waitDelivery("attempt "+strconv.Itoa(attempt), ev.ID, ep, func(d deliveryRow) bool {
			return d.Attempts == attempt && d.LockedUntil == nil
		})
		at := e.attempts(d.ID)[attempt-1].CreatedAt
		base := deliverer.DefaultLiveSchedule[attempt-1]
		if d.NextAttemptAt == nil || d.NextAttemptAt.Sub(at) < time.Duration(float64(base)*(1-deliverer.Jitter)) {
			t.Fatalf("after attempt %d the next comes %v after it, want at least the schedule's %s (Retry-After: 1 asks for no less than 1 s)",
				attempt, d.NextAttemptAt.Sub(at), base)
		}
		e.clock.Set(*d.NextAttemptAt)
	}
}

// TestDisableAfterShorterThanTheFirstAlert: DisableAfter below the first
// alert threshold (1 h) still disables an endpoint failing that long; the
// check used to wait for the first threshold.
func TestDisableAfterShorterThanTheFirstAlert(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })
	ep, _ := e.endpoint(rc.URL, endpointOpts{})
	e.exec(`UPDATE webhook_endpoints SET failing_since = $2 WHERE id = $1`, ep, e.clock.Now().Add(-40*time.Minute))
	cfg := e.config()
	cfg.DisableAfter = 30 * time.Minute
	e.start(cfg)
	ev := e.event(false, "customer.created")
	e.produce(ev)
	e.waitDelivery("the failed attempt", ev.ID, ep, attemptsDone(1))
	if n := e.count(`SELECT count(*) FROM webhook_endpoints WHERE id = $1 AND status = 'disabled'`, ep); n != 1 {
		t.Fatal("an endpoint failing for 40 minutes with DisableAfter 30 minutes is still enabled")
	}
}
