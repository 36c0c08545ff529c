package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gatehouse/gatehouse/internal/ids"
)

// opKind is one kind of request in the steady mix.
type opKind string

const (
	opGet         opKind = "GET /v1/customers/{id}"
	opCreateKeyed opKind = "POST /v1/customers +Idempotency-Key"
	opReplay      opKind = "POST /v1/customers replay"
	opCreatePlain opKind = "POST /v1/customers"
	opEvent       opKind = "POST /v1/events"
	opSetup       opKind = "setup"
)

// keyed reports whether the request carries an Idempotency-Key.
func (o opKind) keyed() bool { return o == opCreateKeyed || o == opReplay }

// customerOp reports whether the request goes to the sample API.
func (o opKind) customerOp() bool {
	return o == opGet || o == opCreateKeyed || o == opReplay || o == opCreatePlain
}

// mix is the steady load: reads dominate, every write kind is present.
var mix = []struct {
	op     opKind
	weight int
}{
	{opGet, 45}, {opCreateKeyed, 20}, {opReplay, 5}, {opCreatePlain, 10}, {opEvent, 20},
}

// result is one request as the client saw it.
type result struct {
	Seq       int64 // the request's number, in the bodies it sends (emails, event data)
	Op        opKind
	Phase     string
	Sent      time.Time
	Latency   time.Duration
	Status    int // 0: no HTTP response (Err says why)
	Code      string
	Err       string
	RequestID string
	// Authed: the response carries Api-Version, which the gateway sets only
	// once api_key has authenticated the request.
	Authed   bool
	Replayed bool
	ID       string // the object id of a 2xx body
	// BadReplay: a replay that was not answered as a replay of the
	// original (another id, or no Idempotent-Replayed header).
	BadReplay bool
}

// label is the status histogram bucket of r.
func (r result) label() string {
	switch {
	case r.Status == 0:
		return "conn_error"
	case r.Code != "":
		return strconv.Itoa(r.Status) + " " + r.Code
	default:
		return strconv.Itoa(r.Status)
	}
}

// client sends requests to the gateway with one API key.
type client struct {
	base string
	key  string
	hc   *http.Client
}

func newHTTPClient() *http.Client {
	return &http.Client{
		Timeout: 20 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second,
			DisableCompression: true,
		},
	}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (c *client) do(method, path string, body []byte, header map[string]string) (response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return response{}, err
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return response{}, fmt.Errorf("reading the response: %w", err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// keyedCreate is a completed keyed create, replayable.
type keyedCreate struct {
	seq  int64
	key  string
	body []byte
	id   string
}

// load is the steady traffic of one scenario's tenant, and the tally of
// everything that tenant's key sent through the gateway.
type load struct {
	name string
	c    *client
	rate int

	seq     atomic.Int64
	skipped atomic.Int64
	phase   atomic.Pointer[string]

	mu        sync.Mutex
	results   []result
	customers []string        // ids to read
	created   map[string]bool // customers created (2xx, executed — not replayed)
	events    map[string]bool // events created by POST /v1/events (2xx)
	pool      []keyedCreate   // replayable keyed creates
	// poolSince: only creates sent after it join the pool (see
	// resetReplayPool).
	poolSince time.Time
}

func newLoad(name string, c *client, rate int) *load {
	l := &load{name: name, c: c, rate: rate, created: map[string]bool{}, events: map[string]bool{}}
	l.setPhase("setup")
	return l
}

func (l *load) setPhase(p string) { l.phase.Store(&p) }

// resetReplayPool forgets the replayable keys, for when their records
// are known to be gone (a Redis restart without persistence).
func (l *load) resetReplayPool() {
	l.mu.Lock()
	l.pool = nil
	// Creates still in flight may complete later; their records went the
	// same way.
	l.poolSince = time.Now()
	l.mu.Unlock()
}

func (l *load) pick() opKind {
	n := rand.IntN(100)
	for _, m := range mix {
		if n < m.weight {
			return m.op
		}
		n -= m.weight
	}
	return opGet
}

// one sends a request of kind op and records it.
func (l *load) one(op opKind) result {
	n := l.seq.Add(1)
	var (
		method = "POST"
		path   = "/v1/customers"
		body   []byte
		header map[string]string
		replay *keyedCreate
	)
	switch op {
	case opGet:
		method = "GET"
		l.mu.Lock()
		if len(l.customers) > 0 {
			path = "/v1/customers/" + l.customers[rand.IntN(len(l.customers))]
		} else {
			path = "/v1/customers/" + ids.New(ids.Customer) // a 404 until some exist
		}
		l.mu.Unlock()
	case opCreateKeyed:
		body = fmt.Appendf(nil, `{"email":"c%d@%s.chaos.example","name":"Chaos %d"}`, n, l.name, n)
		header = map[string]string{"Idempotency-Key": fmt.Sprintf("%s-%d-%d", l.name, time.Now().UnixNano(), n)}
	case opReplay:
		l.mu.Lock()
		if len(l.pool) > 0 {
			k := l.pool[rand.IntN(len(l.pool))]
			replay = &k
		}
		l.mu.Unlock()
		if replay == nil {
			return l.one(opCreateKeyed)
		}
		body = replay.body
		header = map[string]string{"Idempotency-Key": replay.key}
	case opCreatePlain:
		body = fmt.Appendf(nil, `{"email":"p%d@%s.chaos.example"}`, n, l.name)
	case opEvent:
		path = "/v1/events"
		body = fmt.Appendf(nil, `{"type":"chaos.ping","data":{"n":%d,"scenario":%q}}`, n, l.name)
	}
	if replay != nil {
		n = replay.seq // the body is the original's
	}
	return l.sendSeq(n, op, method, path, body, header, replay)
}

// sendSeq performs one request and records its result; seq is the number
// its body carries.
func (l *load) sendSeq(seq int64, op opKind, method, path string, body []byte, header map[string]string, replay *keyedCreate) result {
	r := result{Seq: seq, Op: op, Phase: *l.phase.Load(), Sent: time.Now()}
	resp, err := l.c.do(method, path, body, header)
	r.Latency = time.Since(r.Sent)
	if err != nil {
		r.Err = err.Error()
		l.record(r, nil, nil)
		return r
	}
	r.Status = resp.status
	r.RequestID = resp.header.Get("Request-Id")
	r.Authed = resp.header.Get("Api-Version") != ""
	r.Replayed = resp.header.Get("Idempotent-Replayed") == "true"
	var obj struct {
		ID    string `json:"id"`
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(resp.body, &obj)
	r.Code = obj.Error.Code
	if r.Status/100 == 2 {
		r.ID = obj.ID
	}
	if replay != nil && r.Status/100 == 2 && (!r.Replayed || r.ID != replay.id) {
		r.BadReplay = true
	}
	var kc *keyedCreate
	if op.keyed() && r.Status/100 == 2 && !r.Replayed && r.ID != "" {
		kc = &keyedCreate{seq: seq, key: header["Idempotency-Key"], body: body, id: r.ID}
	}
	l.record(r, kc, replay)
	return r
}

func (l *load) record(r result, kc, replay *keyedCreate) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.results = append(l.results, r)
	if r.Status/100 != 2 || r.ID == "" {
		return
	}
	switch {
	case r.Op == opEvent:
		l.events[r.ID] = true
	case r.Op.customerOp() && r.Op != opGet && !r.Replayed:
		// Executed by the sample API (a "replay" that was not answered as
		// one executed again, and counts as a creation).
		l.created[r.ID] = true
		if len(l.customers) < 500 {
			l.customers = append(l.customers, r.ID)
		}
	}
	if kc != nil && replay == nil && r.Sent.After(l.poolSince) {
		l.pool = append(l.pool, *kc)
		if len(l.pool) > 200 {
			l.pool = l.pool[len(l.pool)-200:]
		}
	}
}

// run sends the mix at l.rate requests/s until ctx ends, open loop with at
// most maxInflight requests outstanding (ticks beyond that are counted as
// skipped, not queued), then waits for the requests in flight.
func (l *load) run(ctx context.Context) {
	const maxInflight = 256
	interval := time.Second / time.Duration(l.rate)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	sem := make(chan struct{}, maxInflight)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		select {
		case sem <- struct{}{}:
		default:
			l.skipped.Add(1)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			l.one(l.pick())
		}()
	}
}

// start runs the steady load in the background; the returned function
// stops it and waits for the requests in flight.
func (l *load) start() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// snapshot copies the results.
func (l *load) snapshot() []result {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]result(nil), l.results...)
}

func (l *load) createdIDs() (customers, events map[string]bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	customers = make(map[string]bool, len(l.created))
	for k := range l.created {
		customers[k] = true
	}
	events = make(map[string]bool, len(l.events))
	for k := range l.events {
		events[k] = true
	}
	return customers, events
}

// histogram counts results by label.
func histogram(rs []result) map[string]int {
	h := map[string]int{}
	for _, r := range rs {
		h[r.label()]++
	}
	return h
}

// formatHist renders a histogram as "200×5100  503 idempotency_unavailable×40".
func formatHist(h map[string]int) string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return h[keys[i]] > h[keys[j]] || h[keys[i]] == h[keys[j]] && keys[i] < keys[j] })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s×%d", k, h[k])
	}
	if len(parts) == 0 {
		return "(none)"
	}
	return strings.Join(parts, "  ")
}
