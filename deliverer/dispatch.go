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
	// released counts slots given back, ever: after a claim that found
	// deliveries, the poller claims again once enough were freed since.
	released int
	// short holds the endpoints that may have due deliveries in the table
	// for want of room: fan-out stored some unleased, or the last claim
	// left them with less than a step of room. The poller claims again as
	// soon as one of them has a step of room.
	short map[string]bool
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
		eps: map[string]*epState{}, jobs: map[string]*job{}, room: make(chan struct{}, 1), short: map[string]bool{},
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

// leftBehind notes that fan-out stored deliveries to endpoint it had no
// room for, and wakes the poller: room may have freed while they were
// being stored.
func (d *dispatcher) leftBehind(endpoint string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.short[endpoint] = true
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
		if d.maxPerEndpoint-st.held < step {
			d.short[id] = true
		}
	}
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
	for id := range d.short {
		held := 0
		if st := d.eps[id]; st != nil {
			held = st.held
		}
		if d.maxPerEndpoint-held >= step {
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
