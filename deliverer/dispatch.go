package deliverer

import (
	"sync"
)

// dispatcher holds the deliveries this process has leased and hands them to
// the worker pool fairly: at most perEndpoint attempts to one endpoint run at
// once, and endpoints take turns, so one slow endpoint cannot occupy the
// pool while others wait; and at most perOrg attempts for one organisation,
// so one tenant's endpoints, hanging until the attempt timeout, cannot hold
// every worker while other tenants' webhooks wait. Memory is bounded too: at
// most maxHeld deliveries (queued or in flight) in all, maxPerEndpoint for
// one endpoint and maxPerOrg for one organisation, which the claim query
// honours so that a backlog on one endpoint or tenant cannot crowd the
// others out of the process.
//
// A delivery is held from its claim (or its fast-path insert) until its
// result is durable; its HTTP attempt is "in flight" in between.
type dispatcher struct {
	dispatchLimits

	mu     sync.Mutex
	cond   *sync.Cond
	eps    map[string]*epState
	orgs   map[string]*orgState
	ring   []string // endpoints with queued work and free concurrency, in turn order
	jobs   map[string]*job
	held   int
	closed bool
	room   chan struct{} // signalled when held drops, for the poller
	// released counts slots given back, ever: after a claim that found
	// deliveries, the poller claims again once enough were freed since.
	released int
	// short holds the endpoints that may have due deliveries in the table
	// for want of room, with their organisation: fan-out stored some
	// unleased, or the last claim left them with less than a step of room
	// (their own or their organisation's). The poller claims again as soon
	// as one of them has a step of room.
	short map[string]string
}

type epState struct {
	org      string
	queue    []*job
	inflight int
	held     int
	inRing   bool
	waiting  bool // in its organisation's waiting list
}

type orgState struct {
	inflight int
	held     int
	// waiting lists, in turn order, the endpoints with queued work that
	// wait for the organisation's concurrency.
	waiting []string
}

// dispatchLimits are the dispatcher's bounds (WorkerConfig).
type dispatchLimits struct {
	perEndpoint, perOrg                int // attempts in flight
	maxHeld, maxPerEndpoint, maxPerOrg int // deliveries held
}

func newDispatcher(l dispatchLimits) *dispatcher {
	d := &dispatcher{
		dispatchLimits: l,
		eps:            map[string]*epState{}, orgs: map[string]*orgState{}, jobs: map[string]*job{}, room: make(chan struct{}, 1), short: map[string]string{},
	}
	d.cond = sync.NewCond(&d.mu)
	return d
}

// reserve takes a slot for a delivery to org's endpoint, if there is room.
func (d *dispatcher) reserve(org, endpoint string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || d.held >= d.maxHeld {
		return false
	}
	st, o := d.eps[endpoint], d.orgs[org]
	if st != nil && st.held >= d.maxPerEndpoint || o != nil && o.held >= d.maxPerOrg {
		return false
	}
	if st == nil {
		st = &epState{org: org}
		d.eps[endpoint] = st
	}
	if o == nil {
		o = &orgState{}
		d.orgs[org] = o
	}
	st.held++
	o.held++
	d.held++
	return true
}

// unreserve gives back a slot reserve took but push did not use.
func (d *dispatcher) unreserve(endpoint string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.releaseLocked(endpoint)
}

func (d *dispatcher) releaseLocked(endpoint string) {
	st := d.eps[endpoint]
	o := d.orgs[st.org]
	st.held--
	o.held--
	d.held--
	d.released++
	if st.held == 0 && st.inflight == 0 && len(st.queue) == 0 {
		delete(d.eps, endpoint)
	}
	if o.held == 0 {
		delete(d.orgs, st.org)
	}
	d.signalRoom()
}

func (d *dispatcher) signalRoom() {
	select {
	case d.room <- struct{}{}:
	default:
	}
}

// push queues a job for which reserve succeeded. It reports false (and
// gives the slot back) when the delivery is already held, which the claim
// query prevents but a caller must not rely on, or the dispatcher is closed.
func (d *dispatcher) push(j *job) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, dup := d.jobs[j.d.ID]; dup || d.closed {
		d.releaseLocked(j.d.EndpointID)
		return false
	}
	d.jobs[j.d.ID] = j
	st := d.eps[j.d.EndpointID]
	st.queue = append(st.queue, j)
	d.schedule(j.d.EndpointID, st)
	return true
}

// schedule puts the endpoint in the ring if it has work and free
// concurrency, or in its organisation's waiting list if the organisation
// has none.
func (d *dispatcher) schedule(id string, st *epState) {
	if st.inRing || st.waiting || len(st.queue) == 0 || st.inflight >= d.perEndpoint {
		return
	}
	if o := d.orgs[st.org]; o.inflight >= d.perOrg {
		st.waiting = true
		o.waiting = append(o.waiting, id)
		return
	}
	st.inRing = true
	d.ring = append(d.ring, id)
	d.cond.Signal()
}

// next blocks until a job may start and returns it, or returns nil once the
// dispatcher is closed.
func (d *dispatcher) next() *job {
	d.mu.Lock()
	defer d.mu.Unlock()
	for {
		for len(d.ring) == 0 && !d.closed {
			d.cond.Wait()
		}
		if d.closed {
			return nil
		}
		id := d.ring[0]
		d.ring[0] = ""
		d.ring = d.ring[1:]
		st := d.eps[id]
		st.inRing = false
		o := d.orgs[st.org]
		if o.inflight >= d.perOrg {
			// Its organisation filled up since it joined the ring.
			d.schedule(id, st)
			continue
		}
		j := st.queue[0]
		st.queue[0] = nil
		st.queue = st.queue[1:]
		st.inflight++
		o.inflight++
		d.schedule(id, st) // back of the ring: endpoints take turns
		return j
	}
}

// finished marks j's HTTP attempt over, freeing endpoint concurrency; the
// job stays held until done.
func (d *dispatcher) finished(j *job) {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.eps[j.d.EndpointID]
	o := d.orgs[st.org]
	st.inflight--
	o.inflight--
	// The organisation has room again: the endpoints that waited for it
	// take their turns first.
	waiting := o.waiting
	o.waiting = nil
	for _, id := range waiting {
		if w := d.eps[id]; w != nil {
			w.waiting = false
			d.schedule(id, w)
		}
	}
	d.schedule(j.d.EndpointID, st)
}

// done drops j once its result is durable (or its lease released).
func (d *dispatcher) done(j *job) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.jobs[j.d.ID] != j {
		return
	}
	delete(d.jobs, j.d.ID)
	d.releaseLocked(j.d.EndpointID)
}

// free is how many more deliveries may be held.
func (d *dispatcher) free() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0
	}
	return d.maxHeld - d.held
}

// leftBehind notes that fan-out stored deliveries to org's endpoint it had
// no room for, and wakes the poller: room may have freed while they were
// being stored.
func (d *dispatcher) leftBehind(org, endpoint string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.short[endpoint] = org
	d.signalRoom()
}

// startClaim is called as the poller starts a claim, which will take what
// it can for every endpoint: it forgets the short ones and returns the
// release count to measure freed room from.
func (d *dispatcher) startClaim() (mark int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.short)
	return d.released
}

// claimed is called once the claim's jobs are pushed: endpoints left with
// less than step room may have more due (a claim stops at an endpoint's
// room, not at the end of its deliveries).
func (d *dispatcher) claimed(step int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, st := range d.eps {
		if d.roomLocked(st.org, id) < step {
			d.short[id] = st.org
		}
	}
}

// roomLocked is how many more deliveries to org's endpoint may be held: its
// own room, bounded by its organisation's.
func (d *dispatcher) roomLocked(org, endpoint string) int {
	room := d.maxPerEndpoint
	if st := d.eps[endpoint]; st != nil {
		room -= st.held
	}
	if o := d.orgs[org]; o != nil {
		room = min(room, d.maxPerOrg-o.held)
	}
	return room
}

// claimAgain reports whether the poller should claim now rather than at
// its next tick: the claim that returned mark found deliveries (found)
// and step slots were released since, or an endpoint that may have due
// deliveries waiting for room now has step of it. Room freed at other
// endpoints does not count for a full one, so a full endpoint with nothing
// due costs no claims while the rest deliver.
func (d *dispatcher) claimAgain(mark, step int, found bool) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if found && d.released-mark >= step {
		return true
	}
	for id, org := range d.short {
		if d.roomLocked(org, id) >= step {
			return true
		}
	}
	return false
}

// claimRooms describes the held deliveries for the claim query: every held
// delivery id (never claimed twice), the remaining room of each endpoint
// holding some, and the organisations with none left.
type claimRooms struct {
	held, endpoints []string
	epRooms         []int32
	fullOrgs        []string
}

func (d *dispatcher) claimLimits() claimRooms {
	d.mu.Lock()
	defer d.mu.Unlock()
	// Empty, not nil: pgx sends a nil slice as NULL, and x <> ALL(NULL)
	// holds for no x.
	c := claimRooms{held: make([]string, 0, len(d.jobs)), fullOrgs: []string{}}
	for id := range d.jobs {
		c.held = append(c.held, id)
	}
	for id, st := range d.eps {
		c.endpoints = append(c.endpoints, id)
		c.epRooms = append(c.epRooms, int32(max(d.maxPerEndpoint-st.held, 0)))
	}
	for id, o := range d.orgs {
		if o.held >= d.maxPerOrg {
			c.fullOrgs = append(c.fullOrgs, id)
		}
	}
	return c
}

// leases lists the held jobs, for lease renewal.
func (d *dispatcher) leases() []*job {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*job, 0, len(d.jobs))
	for _, j := range d.jobs {
		out = append(out, j)
	}
	return out
}

// close stops handing out work and returns the jobs that were queued but
// not started, now dropped, so their leases can be released.
func (d *dispatcher) close() []*job {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	var dropped []*job
	for _, st := range d.eps {
		dropped = append(dropped, st.queue...)
		st.queue, st.waiting = nil, false
	}
	for _, o := range d.orgs {
		o.waiting = nil
	}
	d.ring = nil
	d.cond.Broadcast()
	return dropped
}

// stats returns held and in-flight counts.
func (d *dispatcher) stats() (held, inflight int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, st := range d.eps {
		inflight += st.inflight
	}
	return d.held, inflight
}
