package deliverer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/controlplane/events"
	"github.com/gatehouse/gatehouse/internal/ssrf"
	"github.com/gatehouse/gatehouse/internal/wire"
)

func TestScheduleNext(t *testing.T) {
	s := DefaultLiveSchedule
	if s.MaxAttempts() != 10 {
		t.Fatalf("live schedule gives %d attempts", s.MaxAttempts())
	}
	var total time.Duration
	for _, d := range s {
		total += d
	}
	if total < 72*time.Hour || total > 80*time.Hour {
		t.Fatalf("live schedule spans %s, want about 3 days", total)
	}
	for attempts := 1; attempts <= len(s); attempts++ {
		for range 200 {
			d, ok := s.Next(attempts)
			base := s[attempts-1]
			if !ok || d < time.Duration(float64(base)*0.8) || d > time.Duration(float64(base)*1.2) {
				t.Fatalf("Next(%d) = %s, %v; want %s ± 20%%", attempts, d, ok, base)
			}
		}
	}
	if _, ok := s.Next(len(s) + 1); ok {
		t.Fatal("a retry after the last attempt")
	}
	if DefaultSandboxSchedule.MaxAttempts() != 4 {
		t.Fatal("sandbox schedule")
	}
}

func TestParseSchedule(t *testing.T) {
	s, err := ParseSchedule(" 5s, 1m ,5m")
	if err != nil || s.String() != "5s,1m0s,5m0s" {
		t.Fatalf("ParseSchedule = %v, %v", s, err)
	}
	for _, bad := range []string{"", ",", "5s,soon", "-1s", "0s"} {
		if _, err := ParseSchedule(bad); err == nil {
			t.Errorf("ParseSchedule(%q) accepted", bad)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name, h string
		want    time.Duration
		ok      bool
	}{
		{"seconds", "120", 120 * time.Second, true},
		{"zero", "0", 0, true},
		{"http date", now.Add(time.Hour).Format(http.TimeFormat), time.Hour, true},
		{"date in the past", now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"capped seconds", "604800", MaxRetryAfter, true},
		{"capped date", now.Add(72 * time.Hour).Format(http.TimeFormat), MaxRetryAfter, true},
		{"empty", "", 0, false},
		{"negative", "-5", 0, false},
		{"garbage", "soon", 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, ok := retryAfter(tc.h, now)
			if d != tc.want || ok != tc.ok {
				t.Fatalf("retryAfter(%q) = %s, %v; want %s, %v", tc.h, d, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestMatches(t *testing.T) {
	cases := []struct {
		patterns []string
		typ      string
		want     bool
	}{
		{[]string{"*"}, "customer.created", true},
		{[]string{"customer.created"}, "customer.created", true},
		{[]string{"customer.created"}, "customer.updated", false},
		{[]string{"customer.*"}, "customer.updated", true},
		{[]string{"customer.*"}, "customer.subscription.created", true},
		{[]string{"customer.*"}, "customers.created", false},
		{[]string{"customer.*"}, "customer", false},
		{[]string{"invoice.*", "customer.deleted"}, "customer.deleted", true},
		{nil, "customer.created", false},
	}
	for _, tc := range cases {
		if got := matches(tc.patterns, tc.typ); got != tc.want {
			t.Errorf("matches(%v, %s) = %v", tc.patterns, tc.typ, got)
		}
	}
}

func TestDispatcherFairness(t *testing.T) {
	d := newDispatcher(dispatchLimits{perEndpoint: 2, perOrg: 100, maxHeld: 100, maxPerEndpoint: 50, maxPerOrg: 100})
	push := func(ep string, n int) {
		for i := range n {
			if !d.reserve("org_"+ep, ep) {
				t.Fatalf("no room for %s #%d", ep, i)
			}
			d.push(&job{d: delivery{ID: ep + string(rune('a'+i)), EndpointID: ep}})
		}
	}
	push("slow", 10)
	push("fast", 3)
	// Turns alternate, and slow never has more than 2 in flight.
	var order []string
	var running []*job
	for range 4 {
		j := d.next()
		order = append(order, j.d.EndpointID)
		running = append(running, j)
	}
	if want := []string{"slow", "fast", "slow", "fast"}; !equal(order, want) {
		t.Fatalf("order %v, want %v", order, want)
	}
	// Both endpoints are at their limit: nothing starts until one ends.
	done := make(chan *job)
	go func() { done <- d.next() }()
	select {
	case j := <-done:
		t.Fatalf("next returned %s with every endpoint at its limit", j.d.ID)
	case <-time.After(50 * time.Millisecond):
	}
	d.finished(running[0]) // a slow attempt ends: slow may run another
	if j := <-done; j.d.EndpointID != "slow" {
		t.Fatalf("got %s", j.d.EndpointID)
	}
	d.finished(running[1])
	if j := d.next(); j.d.EndpointID != "fast" {
		t.Fatalf("got %s", j.d.EndpointID)
	}
	// Per-endpoint and global holding limits.
	d2 := newDispatcher(dispatchLimits{perEndpoint: 1, perOrg: 1, maxHeld: 3, maxPerEndpoint: 2, maxPerOrg: 3})
	if first, second, third := d2.reserve("o", "a"), d2.reserve("o", "a"), d2.reserve("o", "a"); !first || !second || third {
		t.Fatal("per-endpoint holding limit not applied")
	}
	if !d2.reserve("p", "b") || d2.reserve("p", "c") {
		t.Fatal("global holding limit not applied")
	}
	d2.unreserve("a")
	if !d2.reserve("p", "c") {
		t.Fatal("unreserve did not free room")
	}
	dropped := d.close()
	if len(dropped) != 10-3 {
		t.Fatalf("close dropped %d queued jobs, want the 7 slow ones never started", len(dropped))
	}
	if d.next() != nil {
		t.Fatal("next after close")
	}
}

// TestDispatcherTenantFairness: one organisation's endpoints together run at
// most perOrg attempts and hold at most maxPerOrg deliveries, so another
// tenant's webhooks find workers and room while they hang; once the
// organisation has room again, the endpoints that waited for it go first.
func TestDispatcherTenantFairness(t *testing.T) {
	d := newDispatcher(dispatchLimits{perEndpoint: 2, perOrg: 3, maxHeld: 100, maxPerEndpoint: 50, maxPerOrg: 12})
	n := 0
	push := func(org, ep string, k int) {
		for range k {
			n++
			if !d.reserve(org, ep) {
				t.Fatalf("no room for %s at %s", org, ep)
			}
			d.push(&job{d: delivery{ID: fmt.Sprint(ep, n), OrganizationID: org, EndpointID: ep}})
		}
	}
	push("A", "a1", 4)
	push("A", "a2", 4)
	push("A", "a3", 4)
	push("B", "b", 2)
	var order []string
	var running []*job
	for range 5 {
		j := d.next()
		order = append(order, j.d.EndpointID)
		running = append(running, j)
	}
	if want := []string{"a1", "a2", "a3", "b", "b"}; !equal(order, want) {
		t.Fatalf("order %v, want %v: A at most 3 in flight, B not waiting behind it", order, want)
	}
	done := make(chan *job)
	go func() { done <- d.next() }()
	select {
	case j := <-done:
		t.Fatalf("next returned %s with A at its limit and B's queue empty", j.d.ID)
	case <-time.After(50 * time.Millisecond):
	}
	d.finished(running[0]) // one of A's attempts ends: a3, which waited longest, goes next
	if j := <-done; j.d.EndpointID != "a3" {
		t.Fatalf("got %s, want a3", j.d.EndpointID)
	}
	if d.reserve("A", "a4") {
		t.Fatal("A holds 12 deliveries, its limit, and was given room for another")
	}
	if !d.reserve("B", "b") {
		t.Fatal("B found no room while A was full")
	}
	if c := d.claimLimits(); !equal(c.fullOrgs, []string{"A"}) {
		t.Fatalf("claims skip organisations %v, want A alone", c.fullOrgs)
	}
}

// TestPollerClaimsAgainWhenRoomServesAWaitingEndpoint: the poller claims
// before its tick only when the room freed may serve deliveries waiting in
// the table: room at an endpoint fan-out left deliveries behind for, or
// one the last claim left short of room, or any room after a claim that
// found deliveries. Room elsewhere does not count.
func TestPollerClaimsAgainWhenRoomServesAWaitingEndpoint(t *testing.T) {
	const step = 1
	d := newDispatcher(dispatchLimits{perEndpoint: 1, perOrg: 8, maxHeld: 8, maxPerEndpoint: 2, maxPerOrg: 8}) // two held per endpoint
	n := 0
	hold := func(ep string) *job {
		n++
		if !d.reserve("org", ep) {
			t.Fatalf("no room at %s", ep)
		}
		j := &job{d: delivery{ID: fmt.Sprint(ep, n), EndpointID: ep}}
		d.push(j)
		return j
	}

	// A is full and fan-out stored the rest of its burst unleased; a claim
	// (a tick) runs and can take nothing for A.
	a1, _ := hold("A"), hold("A")
	d.leftBehind("org", "A")
	mark := d.startClaim()
	d.claimed(step)
	// Deliveries to B come and go: their room is not A's.
	for range 3 {
		d.done(hold("B"))
		if d.claimAgain(mark, step, false) {
			t.Fatal("claimed again for room at B while only A may have deliveries waiting")
		}
	}
	// A's room frees: its backlog is claimed now, not at the tick.
	d.done(a1)
	if !d.claimAgain(mark, step, false) {
		t.Fatal("A's backlog waits for the tick although A has room")
	}

	// A claim that found deliveries: any room freed may serve more.
	mark = d.startClaim()
	d.claimed(step)
	if d.claimAgain(mark, step, true) {
		t.Fatal("claimed again before any room freed")
	}
	d.done(hold("C"))
	if !d.claimAgain(mark, step, true) {
		t.Fatal("after a claim that found deliveries, freed room did not set off another")
	}

	// Fan-out leaves deliveries behind at an endpoint whose room freed
	// while they were being stored: claim at once.
	mark = d.startClaim()
	d.claimed(step)
	d.leftBehind("org", "D")
	if !d.claimAgain(mark, step, false) {
		t.Fatal("deliveries left behind at an endpoint with room wait for the tick")
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestPayloadVersions(t *testing.T) {
	ev := wire.Event{V: 1, ID: "evt_1", OrganizationID: "org_1", Type: "customer.updated", Created: 1700000000, APIVersion: "2026-11-01",
		Data: json.RawMessage(`{"object":{"id":"cus_1","object":"customer","name":"Ada","email":null},"previous_attributes":{"name":"Ad"}}`)}
	cases := []struct {
		name, endpointVersion, want string
	}{
		{"event's own version", "", `{"id":"evt_1","object":"event","type":"customer.updated","created":1700000000,"livemode":false,"api_version":"2026-11-01","data":{"object":{"id":"cus_1","object":"customer","name":"Ada","email":null},"previous_attributes":{"name":"Ad"}},"request":{"id":null,"idempotency_key":null}}`},
		{"same version", "2026-11-01", `{"id":"evt_1","object":"event","type":"customer.updated","created":1700000000,"livemode":false,"api_version":"2026-11-01","data":{"object":{"id":"cus_1","object":"customer","name":"Ada","email":null},"previous_attributes":{"name":"Ad"}},"request":{"id":null,"idempotency_key":null}}`},
		{"older version", "2026-06-01", `{"id":"evt_1","object":"event","type":"customer.updated","created":1700000000,"livemode":false,"api_version":"2026-06-01","data":{"object":{"id":"cus_1","object":"customer","full_name":"Ada","email":null},"previous_attributes":{"full_name":"Ad"}},"request":{"id":null,"idempotency_key":null}}`},
		{"unknown version is ignored", "1999-01-01", `{"id":"evt_1","object":"event","type":"customer.updated","created":1700000000,"livemode":false,"api_version":"2026-11-01","data":{"object":{"id":"cus_1","object":"customer","name":"Ada","email":null},"previous_attributes":{"name":"Ad"}},"request":{"id":null,"idempotency_key":null}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := events.PayloadFor(ev, tc.endpointVersion)
			if err != nil || string(b) != tc.want {
				t.Fatalf("payload =\n%s, %v\nwant\n%s", b, err, tc.want)
			}
		})
	}
	old := ev
	old.APIVersion = "2026-06-01"
	old.Data = json.RawMessage(`{"object":{"id":"cus_1","object":"customer","full_name":"Ada"}}`)
	b, _ := events.PayloadFor(old, "2026-11-01")
	var got struct {
		Data struct{ Object map[string]any } `json:"data"`
	}
	_ = json.Unmarshal(b, &got)
	if got.Data.Object["name"] != "Ada" || got.Data.Object["full_name"] != nil {
		t.Fatalf("upgrade: %s", b)
	}

	// Data an event's sender wrote with both names (POST /v1/events takes
	// any object): the renamed member wins and no name appears twice.
	both := ev
	both.Data = json.RawMessage(`{"object":{"id":"cus_1","object":"customer","full_name":"Old","name":"Ada"}}`)
	b, _ = events.PayloadFor(both, "2026-06-01")
	if !strings.Contains(string(b), `"data":{"object":{"id":"cus_1","object":"customer","full_name":"Ada"}}`) {
		t.Fatalf("downgrade of data with both names: %s", b)
	}
}

func TestCleanText(t *testing.T) {
	if got := cleanText([]byte("ok\x00\xffdone")); got != "ok\uFFFDdone" {
		t.Fatalf("cleanText = %q", got)
	}
}

// While Postgres fails, the endpoint is read once per readBackoff, not once
// per attempt: the attempts in between go on with the last snapshot at once
// instead of each waiting out a read that fails the same way.
func TestEndpointReadFailuresAreNotRepeated(t *testing.T) {
	c := newEndpointCache(nil, time.Minute)
	reads := 0
	c.load = func(context.Context, string) (endpointSnap, error) {
		reads++
		return endpointSnap{}, errors.New("connection refused")
	}
	stale := endpointSnap{URL: "https://example.com/old", Status: "enabled", ReadAt: time.Now().Add(-time.Hour)}
	j := &job{d: delivery{EndpointID: "we_1"}, ep: stale}
	for i := range 3 {
		snap, exists, err := c.current(context.Background(), j)
		if err == nil || !exists || snap.URL != stale.URL {
			t.Fatalf("attempt %d: %+v, %v, %v; want the last snapshot with the error", i, snap, exists, err)
		}
	}
	if reads != 1 {
		t.Fatalf("%d reads for 3 attempts within the back-off, want 1", reads)
	}
	// Pruning keeps the entry, and so its back-off.
	c.prune()
	if _, _, err := c.current(context.Background(), j); !errors.Is(err, errReadRecently) || reads != 1 {
		t.Fatalf("after a prune: %v, %d reads", err, reads)
	}
	// After the back-off the endpoint is read again, and what it says is used.
	c.entries["we_1"].failedAt = time.Now().Add(-2 * time.Minute)
	c.load = func(context.Context, string) (endpointSnap, error) {
		reads++
		return endpointSnap{URL: "https://example.com/new", Status: "disabled", ReadAt: time.Now()}, nil
	}
	if snap, _, err := c.current(context.Background(), j); err != nil || snap.Status != "disabled" || reads != 2 {
		t.Fatalf("after the ttl: %+v, %v, %d reads", snap, err, reads)
	}
}

// A failed attempt's error is stored and shown to the endpoint's owner: a
// name that does not resolve is said so, without the platform's internal
// DNS server that net.DNSError names.
func TestAttemptErrorKeepsTheResolverAddressOut(t *testing.T) {
	err := &url.Error{Op: "Post", URL: "https://missing.example.com/hooks", Err: &net.OpError{Op: "dial", Net: "tcp",
		Err: &net.DNSError{Err: "no such host", Name: "missing.example.com", Server: "10.9.8.7:53", IsNotFound: true}}}
	class, text := classifyErr(err, 10*time.Second)
	if class != "network_error" || !strings.Contains(text, "missing.example.com") || !strings.Contains(text, "no such host") {
		t.Fatalf("classifyErr = %q, %q", class, text)
	}
	if strings.Contains(text, "10.9.8.7") {
		t.Fatalf("attempt error %q names the internal resolver", text)
	}
}

// A receiver answering with huge headers fails the attempt once the bound
// is passed, rather than having them read into memory.
func TestClientBoundsResponseHeaders(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 4096)
		_, _ = c.Read(buf)
		_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 4*maxResponseHeaderBytes) + "\r\nContent-Length: 0\r\n\r\n"))
	}()
	c := newClient(ssrf.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}, 1)
	resp, err := c.Post("http://"+ln.Addr().String()+"/hook", "application/json", strings.NewReader("{}"))
	if err == nil {
		_ = resp.Body.Close()
		t.Fatalf("headers of %d bytes accepted", 4*maxResponseHeaderBytes)
	}
	if !strings.Contains(err.Error(), "header") {
		t.Fatalf("error %v does not name the headers", err)
	}
}

// TestLeftBehindAtAFullOrganisationDoesNotClaimAgain: fan-out stores
// deliveries unleased for an endpoint of an organisation that is full
// (reserve refused for the organisation, not the endpoint). Claims skip that
// organisation (fullOrgs), so the poller waits for the organisation's room,
// as it does for a full endpoint. It used to claim on every fan-out round:
// an endpoint holding nothing counted a whole endpoint's room.
func TestLeftBehindAtAFullOrganisationDoesNotClaimAgain(t *testing.T) {
	const step = 1
	d := newDispatcher(dispatchLimits{perEndpoint: 1, perOrg: 2, maxHeld: 100, maxPerEndpoint: 4, maxPerOrg: 8})
	n := 0
	for _, ep := range []string{"x1", "x2"} {
		for range 4 {
			n++
			if !d.reserve("A", ep) {
				t.Fatalf("no room at %s", ep)
			}
			d.push(&job{d: delivery{ID: fmt.Sprint(ep, n), OrganizationID: "A", EndpointID: ep}})
		}
	}
	// A tick's claim: A is full, so it is skipped.
	mark := d.startClaim()
	if c := d.claimLimits(); !equal(c.fullOrgs, []string{"A"}) {
		t.Fatalf("fullOrgs %v, want [A]", c.fullOrgs)
	}
	d.claimed(step)
	// Fan-out: an event for A's third endpoint y finds no room (A is full)
	// and is stored unleased.
	if d.reserve("A", "y") {
		t.Fatal("A is full but y was given room")
	}
	wasted := 0
	for range 10 { // ten fan-out rounds while A stays full
		d.leftBehind("A", "y")
		if d.claimAgain(mark, step, false) {
			wasted++
			// the poller claims: A is still among the skipped organisations
			if c := d.claimLimits(); !equal(c.fullOrgs, []string{"A"}) {
				t.Fatalf("fullOrgs %v", c.fullOrgs)
			}
			mark = d.startClaim()
			d.claimed(step)
		}
	}
	if wasted > 0 {
		t.Fatalf("%d of 10 fan-out rounds for a full organisation set off a claim that skips that organisation (no room freed anywhere)", wasted)
	}
	// A frees room: whatever its endpoints have due, those holding nothing
	// included (a claim skipped them all), is claimed now, not at the tick
	// (the endpoints holding A's deliveries were left short of A's room).
	mark = d.startClaim()
	d.claimed(step)
	if d.claimAgain(mark, step, false) {
		t.Fatal("claimed again before A had room")
	}
	j := d.next()
	d.finished(j)
	d.done(j)
	if !d.claimAgain(mark, step, false) {
		t.Fatal("room freed at a full organisation waits for the tick")
	}
}
