package deliverer

import (
	"sync"
)

// dispatcher holds the deliveries this process has leased and hands them to
// the worker pool fairly: at most perEndpoint attempts to one endpoint run at
// once, and endpoints take turns, so one slow endpoint cannot occupy the
// pool while others wait. Memory is bounded too: at most maxHeld deliveries
// (queued or in flight) in all, and maxPerEndpoint for one endpoint, which
// the claim query honours so that a backlog on one endpoint cannot crowd the
// others out of the process.
//
// A delivery is held from its claim (or its fast-path insert) until its
// result is durable; its HTTP attempt is "in flight" in between.
type dispatcher struct {
	perEndpoint    int
	maxHeld        int
	maxPerEndpoint int

	mu     sync.Mutex
	cond   *sync.Cond
	eps    map[string]*epState
	ring   []string // endpoints with queued work and free concurrency, in turn order
	jobs   map[string]*job
	held   int
	closed bool
	room   chan struct{} // signalled when held drops, for the poller
	// released counts slots given back, ever: the poller claims again once
	// enough were freed since its last claim, whoever took them meanwhile.
	released int
	// behind is set when fan-out stored deliveries unleased for want of
	// room: they wait in the table for the poller.
	behind bool
}

type epState struct {
	queue    []*job
	inflight int
	held     int
	inRing   bool
}

func newDispatcher(perEndpoint, maxHeld, maxPerEndpoint int) *dispatcher {
	d := &dispatcher{
		perEndpoint: perEndpoint, maxHeld: maxHeld, maxPerEndpoint: maxPerEndpoint,
		eps: map[string]*epState{}, jobs: map[string]*job{}, room: make(chan struct{}, 1),
	}
	d.cond = sync.NewCond(&d.mu)
	return d
}

func (d *dispatcher) ep(id string) *epState {
	st := d.eps[id]
	if st == nil {
		st = &epState{}
		d.eps[id] = st
	}
	return st
}

// reserve takes a slot for a delivery to endpoint, if there is room.
func (d *dispatcher) reserve(endpoint string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || d.held >= d.maxHeld {
		return false
	}
	st := d.ep(endpoint)
	if st.held >= d.maxPerEndpoint {
		return false
	}
	st.held++
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
	st.held--
	d.held--
	d.released++
	if st.held == 0 && st.inflight == 0 && len(st.queue) == 0 {
		delete(d.eps, endpoint)
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
// concurrency.
func (d *dispatcher) schedule(id string, st *epState) {
	if !st.inRing && len(st.queue) > 0 && st.inflight < d.perEndpoint {
		st.inRing = true
		d.ring = append(d.ring, id)
		d.cond.Signal()
	}
}

// next blocks until a job may start and returns it, or returns nil once the
// dispatcher is closed.
func (d *dispatcher) next() *job {
	d.mu.Lock()
	defer d.mu.Unlock()
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
	j := st.queue[0]
	st.queue[0] = nil
	st.queue = st.queue[1:]
	st.inflight++
	d.schedule(id, st) // back of the ring: endpoints take turns
	return j
}

// finished marks j's HTTP attempt over, freeing endpoint concurrency; the
// job stays held until done.
func (d *dispatcher) finished(j *job) {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.eps[j.d.EndpointID]
	st.inflight--
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

// leftBehind notes that fan-out stored deliveries it had no room for, and
// wakes the poller: room may have freed while they were being stored.
func (d *dispatcher) leftBehind() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.behind = true
	d.signalRoom()
}

// startClaim is called as the poller starts a claim: it clears behind
// (the claim sees whatever was stored before) and returns the release
// count to measure freed room from.
func (d *dispatcher) startClaim() (mark int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.behind = false
	return d.released
}

// claimAgain reports whether the poller should claim now rather than at
// its next tick: at least step slots were released since the claim that
// returned mark, and deliveries may be waiting for them — that claim found
// some (found), fan-out left some behind since, or an endpoint has less
// than step room left (a claim stops at an endpoint's room, not at the end
// of its due deliveries).
func (d *dispatcher) claimAgain(mark, step int, found bool) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.released-mark < step {
		return false
	}
	if found || d.behind {
		return true
	}
	for _, st := range d.eps {
		if d.maxPerEndpoint-st.held < step {
			return true
		}
	}
	return false
}

// claimLimits describes the held deliveries for the claim query: every
// held delivery id (never claimed twice), and each endpoint's remaining room.
func (d *dispatcher) claimLimits() (heldIDs []string, endpoints []string, rooms []int32) {
	d.mu.Lock()
	defer d.mu.Unlock()
	heldIDs = make([]string, 0, len(d.jobs))
	for id := range d.jobs {
		heldIDs = append(heldIDs, id)
	}
	for id, st := range d.eps {
		endpoints = append(endpoints, id)
		rooms = append(rooms, int32(max(d.maxPerEndpoint-st.held, 0)))
	}
	return heldIDs, endpoints, rooms
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
		st.queue = nil
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
