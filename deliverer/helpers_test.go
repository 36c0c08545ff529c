package deliverer_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap/zaptest"

	"github.com/gatehouse/gatehouse/deliverer"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/secretbox"
	"github.com/gatehouse/gatehouse/internal/ssrf"
	"github.com/gatehouse/gatehouse/internal/testenv"
	"github.com/gatehouse/gatehouse/internal/whsign"
	"github.com/gatehouse/gatehouse/internal/wire"
)

// clock is the test's time: the worker schedules by it, the test moves it.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now().Truncate(time.Second)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.t) {
		c.t = t
	}
}

func (c *clock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

// loopback is the test policy: receivers are httptest servers on loopback,
// which the operator allowlist lets through (as `make run` does).
var loopback = ssrf.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}}

type env struct {
	t        *testing.T
	pool     *pgxpool.Pool
	brokers  []string
	topic    string
	dlqTopic string
	clock    *clock
	box      *secretbox.Box
	org      string
	reg      *prometheus.Registry
	writer   *kafka.Writer
	alerts   *alertSink
}

// testMasterKey encrypts the tests' webhook secrets. Not the published
// development key, which the deliverer process refuses (the chaos test runs
// it with this one).
const testMasterKey = "ZGVsaXZlcmVyLXRlc3QtbWFzdGVyLWtleS0zMmJ5dGU="

// newEnv gives the test its own database, topics and organisation.
func newEnv(t *testing.T) *env {
	t.Helper()
	pool, _ := testenv.Pool(t)
	brokers := testenv.Kafka(t)
	box, err := secretbox.New(testMasterKey)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, pool: pool, brokers: brokers, clock: newClock(), box: box, org: "org_" + testenv.Suffix(),
		reg: prometheus.NewRegistry(), alerts: &alertSink{}}
	e.topic = testenv.KafkaTopic(t, brokers, "deliverer", 2)
	e.dlqTopic = testenv.KafkaTopic(t, brokers, "deliverer", 1)
	e.exec(`INSERT INTO organizations (id, name) VALUES ($1, 'Test org')`, e.org)
	e.writer = &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: e.topic, Balancer: &kafka.Hash{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	t.Cleanup(func() { e.writer.Close() })
	return e
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.pool.Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

// config is a worker configuration for this env; tests adjust it.
func (e *env) config() deliverer.WorkerConfig {
	return deliverer.WorkerConfig{
		Brokers: e.brokers, Topic: e.topic, GroupID: "deliverer-test-" + testenv.Suffix(), DeadLetterTopic: e.dlqTopic,
		DB: e.pool, Box: e.box, Policy: loopback, SpoolDir: e.t.TempDir(),
		PollInterval: 20 * time.Millisecond, StatsEvery: time.Second,
		Now: e.clock.Now, Logger: zaptest.NewLogger(e.t), Registry: e.reg, Notifier: e.alerts,
	}
}

// start runs a worker until the test ends.
func (e *env) start(cfg deliverer.WorkerConfig) *deliverer.Worker {
	e.t.Helper()
	w, err := deliverer.NewWorker(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				e.t.Errorf("worker: %v", err)
			}
		case <-time.After(30 * time.Second):
			e.t.Error("worker did not stop")
		}
	})
	return w
}

// endpointOpts shape an endpoint.
type endpointOpts struct {
	live       bool
	events     []string
	disabled   bool
	apiVersion string
	secrets    int // number of signing secrets; 1 by default
}

// endpoint creates an endpoint with encrypted secrets the way the
// control plane stores them, and returns its id and secrets (newest first).
func (e *env) endpoint(url string, o endpointOpts) (string, []string) {
	e.t.Helper()
	if o.events == nil {
		o.events = []string{"*"}
	}
	if o.secrets == 0 {
		o.secrets = 1
	}
	id := ids.New(ids.WebhookEndpoint)
	status := "enabled"
	if o.disabled {
		status = "disabled"
	}
	var ver *string
	if o.apiVersion != "" {
		ver = &o.apiVersion
	}
	e.exec(`INSERT INTO webhook_endpoints (id, organization_id, livemode, url, enabled_events, status, api_version, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, id, e.org, o.live, url, o.events, status, ver, e.clock.Now().Add(-time.Second))
	var secrets []string
	for i := range o.secrets {
		s := whsign.NewSecret()
		sid := "whsec_row_" + testenv.Suffix()
		e.exec(`INSERT INTO webhook_endpoint_secrets (id, endpoint_id, ciphertext, created_at) VALUES ($1, $2, $3, $4)`,
			sid, id, e.box.Seal([]byte(s), []byte(sid)), time.Now().Add(-time.Duration(i)*time.Minute))
		secrets = append(secrets, s)
	}
	return id, secrets
}

// rotate does what the control plane's RotateSecret does, in one
// transaction: the endpoint's unexpired secrets expire after grace (0:
// now), and a new secret is added. It returns the new secret.
func (e *env) rotate(endpoint string, grace time.Duration) string {
	e.t.Helper()
	now := e.clock.Now()
	s := whsign.NewSecret()
	sid := "whsec_row_" + testenv.Suffix()
	err := pgx.BeginFunc(context.Background(), e.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(context.Background(), `UPDATE webhook_endpoint_secrets
			SET expires_at = LEAST(COALESCE(expires_at, 'infinity'), $3)
			WHERE endpoint_id = $1 AND (expires_at IS NULL OR expires_at > $2)`, endpoint, now, now.Add(grace)); err != nil {
			return err
		}
		_, err := tx.Exec(context.Background(), `INSERT INTO webhook_endpoint_secrets (id, endpoint_id, ciphertext, created_at)
			VALUES ($1, $2, $3, $4)`, sid, endpoint, e.box.Seal([]byte(s), []byte(sid)), time.Now())
		return err
	})
	if err != nil {
		e.t.Fatalf("rotating the secret of %s: %v", endpoint, err)
	}
	return s
}

// event is a customer.created event of the env's organisation.
func (e *env) event(live bool, typ string) wire.Event {
	return wire.Event{V: 1, ID: ids.NewAt(ids.Event, e.clock.Now()), OrganizationID: e.org, Livemode: live, Type: typ,
		Created: e.clock.Now().Unix(), APIVersion: "2026-11-01",
		Data:      json.RawMessage(`{"object":{"id":"cus_1","object":"customer","name":"Ada","email":"ada@example.com"}}`),
		RequestID: "req_" + testenv.Suffix()}
}

// produceEvents produces n sandbox events of type typ, one by one, and
// returns their ids.
func (e *env) produceEvents(n int, typ string) []string {
	e.t.Helper()
	out := make([]string, n)
	for i := range out {
		ev := e.event(false, typ)
		e.produce(ev)
		out[i] = ev.ID
	}
	return out
}

func (e *env) produce(evs ...wire.Event) {
	e.t.Helper()
	msgs := make([]kafka.Message, len(evs))
	for i, ev := range evs {
		b, _ := json.Marshal(ev)
		msgs[i] = kafka.Message{Key: []byte(ev.OrganizationID), Value: b}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		err := e.writer.WriteMessages(ctx, msgs...)
		if err == nil {
			return
		}
		// A new topic's metadata reaches every broker component a little
		// after creation.
		if !errors.Is(err, kafka.UnknownTopicOrPartition) || ctx.Err() != nil {
			e.t.Fatalf("producing events: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFor polls cond until it holds (no fixed sleeps: the condition is what
// the test waits for).
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pollsAfterNow waits until the worker's poller has run a claim that
// began after this call (the second to finish from now): whatever it would
// claim at the clock's current time, it has. Tests that show nothing is
// claimed wait for this, not for a guess of poll intervals.
func (e *env) pollsAfterNow() {
	e.t.Helper()
	start := e.metric("gatehouse_deliverer_polls_total")
	waitFor(e.t, "the poller to claim twice", 10*time.Second, func() bool {
		return e.metric("gatehouse_deliverer_polls_total") >= start+2
	})
}

// metric is the value of the worker's unlabelled counter name, 0 before
// it is first gathered.
func (e *env) metric(name string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

func (e *env) count(sql string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

type deliveryRow struct {
	ID             string
	Status         string
	Attempts       int
	LastStatusCode *int
	NextAttemptAt  *time.Time
	LockedUntil    *time.Time
	Manual         bool
}

func (e *env) delivery(eventID, endpointID string) deliveryRow {
	e.t.Helper()
	var d deliveryRow
	err := e.pool.QueryRow(context.Background(), `SELECT id, status, attempts, last_status_code, next_attempt_at, locked_until, manual_pending
		FROM webhook_deliveries WHERE event_id = $1 AND endpoint_id = $2`, eventID, endpointID).
		Scan(&d.ID, &d.Status, &d.Attempts, &d.LastStatusCode, &d.NextAttemptAt, &d.LockedUntil, &d.Manual)
	if err != nil {
		e.t.Fatalf("reading delivery of %s to %s: %v", eventID, endpointID, err)
	}
	return d
}

type attemptRow struct {
	StatusCode *int
	LatencyMS  int
	Snippet    string
	Error      string
	Trigger    string
	CreatedAt  time.Time
}

func (e *env) attempts(deliveryID string) []attemptRow {
	e.t.Helper()
	rows, err := e.pool.Query(context.Background(), `SELECT status_code, latency_ms, response_snippet, error, trigger, created_at
		FROM webhook_attempts WHERE delivery_id = $1 ORDER BY created_at, id`, deliveryID)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []attemptRow
	for rows.Next() {
		var a attemptRow
		if err := rows.Scan(&a.StatusCode, &a.LatencyMS, &a.Snippet, &a.Error, &a.Trigger, &a.CreatedAt); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

// waitDelivery waits for the (event, endpoint) delivery to satisfy cond.
func (e *env) waitDelivery(what, eventID, endpointID string, cond func(deliveryRow) bool) deliveryRow {
	e.t.Helper()
	var d deliveryRow
	waitFor(e.t, what, 60*time.Second, func() bool {
		var n int
		_ = e.pool.QueryRow(context.Background(), `SELECT count(*) FROM webhook_deliveries WHERE event_id = $1 AND endpoint_id = $2`,
			eventID, endpointID).Scan(&n)
		if n == 0 {
			return false
		}
		d = e.delivery(eventID, endpointID)
		return cond(d)
	})
	return d
}

// receiver is a local webhook endpoint that records what it gets and
// answers with respond.
type receiver struct {
	*httptest.Server
	mu      sync.Mutex
	reqs    []received
	respond func(n int, w http.ResponseWriter, r *http.Request) // n counts from 1
}

type received struct {
	header http.Header
	body   []byte
	at     time.Time
}

func newReceiver(t *testing.T, respond func(n int, w http.ResponseWriter, r *http.Request)) *receiver {
	rc := &receiver{respond: respond}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.reqs = append(rc.reqs, received{header: r.Header.Clone(), body: body, at: time.Now()})
		n := len(rc.reqs)
		respond := rc.respond
		rc.mu.Unlock()
		if respond != nil {
			respond(n, w, r)
		}
	}))
	t.Cleanup(rc.Close)
	return rc
}

// newHoldingReceiver is a receiver that holds its first request until
// release is closed, then answers it with status; later requests get 200.
func newHoldingReceiver(t *testing.T, status int) (rc *receiver, release chan struct{}) {
	release = make(chan struct{})
	rc = newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			w.WriteHeader(status)
		}
	})
	return rc, release
}

// setRespond changes how the receiver answers from now on.
func (rc *receiver) setRespond(f func(n int, w http.ResponseWriter, r *http.Request)) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.respond = f
}

func (rc *receiver) received() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.reqs...)
}

func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.reqs)
}

// alertSink is a Notifier that keeps alerts for assertions.
type alertSink struct {
	mu     sync.Mutex
	alerts []deliverer.Alert
}

func (s *alertSink) Notify(_ context.Context, a deliverer.Alert) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.alerts = append(s.alerts, a)
	return nil
}

func (s *alertSink) all() []deliverer.Alert {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]deliverer.Alert(nil), s.alerts...)
}

func (s *alertSink) kinds() []deliverer.AlertKind {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []deliverer.AlertKind
	for _, a := range s.alerts {
		out = append(out, a.Kind)
	}
	return out
}

// readDeadLetters reads n messages from the dead-letter topic.
func readDeadLetters(t *testing.T, brokers []string, topic string, n int) []kafka.Message {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []kafka.Message
	for len(out) < n {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("reading dead letter %d of %d: %v", len(out)+1, n, err)
		}
		out = append(out, m)
	}
	return out
}

// attemptsDone is a waitDelivery condition: n attempts made and recorded,
// the lease given back.
func attemptsDone(n int) func(deliveryRow) bool {
	return func(d deliveryRow) bool { return d.Attempts == n && d.LockedUntil == nil }
}
