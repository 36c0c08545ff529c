package deliverer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/gatehouse/gatehouse/controlplane/events"
	"github.com/gatehouse/gatehouse/internal/kafkabatch"
	"github.com/gatehouse/gatehouse/internal/outbox"
	"github.com/gatehouse/gatehouse/internal/pgerr"
	"github.com/gatehouse/gatehouse/internal/secretbox"
	"github.com/gatehouse/gatehouse/internal/ssrf"
	"github.com/gatehouse/gatehouse/internal/wire"
)

// DefaultGroupID is the deliverer's Kafka consumer group: instances share
// the events topic's partitions.
const DefaultGroupID = "deliverer"

// WorkerConfig wires a Worker. Zero values take the defaults noted.
type WorkerConfig struct {
	Brokers []string
	// Topic is consumed; wire.TopicEvents by default.
	Topic string
	// GroupID is the consumer group; DefaultGroupID by default.
	GroupID string
	// DeadLetterTopic receives exhausted deliveries; wire.TopicDeadLetter.
	DeadLetterTopic string
	DB              *pgxpool.Pool
	// Box opens the endpoints' signing secrets (MASTER_KEY).
	Box *secretbox.Box
	// Policy is the SSRF policy applied when connecting to endpoints.
	Policy ssrf.Policy
	// SpoolDir holds the dead-letter producer's disk spool (required).
	SpoolDir string
	// LiveSchedule and SandboxSchedule are the retry waits
	// (DefaultLiveSchedule, DefaultSandboxSchedule).
	LiveSchedule    Schedule
	SandboxSchedule Schedule
	// Concurrency is the number of attempts in flight at once across all
	// endpoints; 64.
	Concurrency int
	// EndpointConcurrency bounds attempts in flight to one endpoint; 10.
	EndpointConcurrency int
	// OrgConcurrency bounds attempts in flight for one organisation's
	// endpoints, so that a tenant whose endpoints hang until the timeout
	// leaves workers to the others; half of Concurrency (32), but at least
	// two endpoints' worth, so that one slow endpoint does not stall its
	// own organisation's others either. Set it to Concurrency where one
	// organisation owns every endpoint.
	OrgConcurrency int
	// MaxHeld bounds the deliveries held in memory (queued or in flight);
	// 8 × Concurrency.
	MaxHeld int
	// Timeout bounds one attempt, connection to last byte read; 15 s.
	Timeout time.Duration
	// Lease is how long a claim holds a delivery before another deliverer
	// may take it over; renewed while held. 30 s: a crashed deliverer's
	// deliveries are attempted again at most about 30 s after it died.
	Lease time.Duration
	// PollInterval is how often due deliveries (retries, anything the fast
	// path did not take) are claimed; 250 ms.
	PollInterval time.Duration
	// ClaimBatch is the most deliveries one claim takes; 200.
	ClaimBatch int
	// BatchSize and BatchWait shape a consumer round: up to BatchSize
	// messages, waiting at most BatchWait for more once one is there;
	// 500 and 5 ms.
	BatchSize int
	BatchWait time.Duration
	// ShutdownGrace is how long in-flight attempts may finish at shutdown;
	// 10 s.
	ShutdownGrace time.Duration
	// DisableAfter disables an endpoint that has failed continuously for
	// this long; 5 days. Negative turns it off.
	DisableAfter time.Duration
	// FailingThresholds raise an alert as an endpoint's failing_since
	// passes each; 1 h, 24 h, 72 h.
	FailingThresholds []time.Duration
	// DeadAlertEvery limits alerts about dead deliveries to one per
	// endpoint per period; 1 h.
	DeadAlertEvery time.Duration
	// SecretTTL is the longest decrypted secrets are cached; 5 s. A
	// rotation is seen sooner: see EndpointTTL.
	SecretTTL time.Duration
	// EndpointTTL is how old what an attempt knows of its endpoint (status,
	// URL, API version, signing secrets' version) may be; anything older is
	// read again first. So a delivery queued before its endpoint was
	// disabled, moved or had its secret rotated follows the change once it
	// is this old. 1 s. While Postgres fails, attempts go on with the last
	// state read for 10 s after each failed read (endpoints.go), so a change
	// made then takes up to that long to reach them.
	EndpointTTL time.Duration
	// StatsEvery is how often the queue-lag gauges are sampled; 10 s.
	StatsEvery time.Duration
	// Notifier receives alerts; a LogNotifier by default.
	Notifier Notifier
	// Now is the clock behind every scheduling decision; time.Now.
	Now      func() time.Time
	Logger   *zap.Logger
	Registry prometheus.Registerer

	limits dispatchLimits
	// checkFailingAfter is how long an endpoint fails before checkFailing
	// looks at it: the first alert threshold or DisableAfter, whichever
	// comes first (0: never).
	checkFailingAfter time.Duration
}

// Worker consumes platform.events.v1 and delivers webhooks:
//
//   - the consumer fans each event out to matching endpoints, inserting
//     deliveries (and the event row) before committing offsets, and hands
//     the new deliveries straight to the dispatcher, leased (the fast path);
//   - the poller claims due deliveries with a lease (retries, manual
//     retries, deliveries the fast path had no room for, and those of a
//     deliverer that died: its leases expire);
//   - the dispatcher feeds a bounded pool of attempt workers, fairly across
//     endpoints and at most EndpointConcurrency per endpoint;
//   - the result writer records attempts and new delivery states in
//     batches, one transaction each, then dead-letters and alerts.
type Worker struct {
	cfg     WorkerConfig
	db      *pgxpool.Pool
	log     *zap.Logger
	m       *metrics
	disp    *dispatcher
	client  *http.Client
	secrets *secretCache
	eps     *endpointCache
	dlq     *outbox.Producer
	sender  *outbox.KafkaSender
	results chan *result

	notifySem chan struct{}
	epWarned  atomic.Int64 // unix nanoseconds of the last warnEndpointRead
	notifyWG  sync.WaitGroup
}

// NewWorker checks cfg, applies defaults and returns a worker; call Run.
func NewWorker(cfg WorkerConfig) (*Worker, error) {
	if len(cfg.Brokers) == 0 || cfg.DB == nil || cfg.Box == nil || cfg.SpoolDir == "" {
		return nil, errors.New("deliverer: brokers, a database, the master key and a spool directory are required")
	}
	if cfg.Topic == "" {
		cfg.Topic = wire.TopicEvents
	}
	if cfg.GroupID == "" {
		cfg.GroupID = DefaultGroupID
	}
	if cfg.DeadLetterTopic == "" {
		cfg.DeadLetterTopic = wire.TopicDeadLetter
	}
	if len(cfg.LiveSchedule) == 0 {
		cfg.LiveSchedule = DefaultLiveSchedule
	}
	if len(cfg.SandboxSchedule) == 0 {
		cfg.SandboxSchedule = DefaultSandboxSchedule
	}
	setDefault(&cfg.Concurrency, 64)
	setDefault(&cfg.EndpointConcurrency, 10)
	setDefault(&cfg.OrgConcurrency, min(cfg.Concurrency, max(cfg.Concurrency/2, 2*cfg.EndpointConcurrency)))
	setDefault(&cfg.MaxHeld, 8*cfg.Concurrency)
	setDefault(&cfg.Timeout, 15*time.Second)
	setDefault(&cfg.Lease, 30*time.Second)
	setDefault(&cfg.PollInterval, 250*time.Millisecond)
	setDefault(&cfg.ClaimBatch, 200)
	setDefault(&cfg.BatchSize, 500)
	setDefault(&cfg.BatchWait, 5*time.Millisecond)
	setDefault(&cfg.ShutdownGrace, 10*time.Second)
	setDefault(&cfg.DisableAfter, 5*24*time.Hour)
	setDefault(&cfg.DeadAlertEvery, time.Hour)
	setDefault(&cfg.SecretTTL, 5*time.Second)
	setDefault(&cfg.EndpointTTL, time.Second)
	setDefault(&cfg.StatsEvery, 10*time.Second)
	if cfg.FailingThresholds == nil {
		cfg.FailingThresholds = []time.Duration{time.Hour, 24 * time.Hour, 72 * time.Hour}
	}
	for _, d := range append([]time.Duration{cfg.DisableAfter}, cfg.FailingThresholds...) {
		if d > 0 && (cfg.checkFailingAfter == 0 || d < cfg.checkFailingAfter) {
			cfg.checkFailingAfter = d
		}
	}
	if cfg.Lease < 2*cfg.Timeout {
		return nil, fmt.Errorf("deliverer: the lease (%s) must be at least twice the attempt timeout (%s)", cfg.Lease, cfg.Timeout)
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Notifier == nil {
		cfg.Notifier = LogNotifier{Logger: cfg.Logger}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	// A backlog on one endpoint may fill at most a quarter of the
	// dispatcher, one on an organisation's endpoints half of it, so others
	// always find room.
	perEndpoint := max(cfg.MaxHeld/4, 2*cfg.EndpointConcurrency, 1)
	cfg.limits = dispatchLimits{perEndpoint: cfg.EndpointConcurrency, perOrg: cfg.OrgConcurrency,
		maxHeld: cfg.MaxHeld, maxPerEndpoint: perEndpoint, maxPerOrg: max(cfg.MaxHeld/2, perEndpoint, 2*cfg.OrgConcurrency)}

	w := &Worker{
		cfg:       cfg,
		db:        cfg.DB,
		log:       cfg.Logger,
		disp:      newDispatcher(cfg.limits),
		client:    newClient(cfg.Policy, cfg.EndpointConcurrency),
		secrets:   newSecretCache(cfg.DB, cfg.Box, cfg.SecretTTL),
		eps:       newEndpointCache(cfg.DB, cfg.EndpointTTL),
		results:   make(chan *result, cfg.MaxHeld),
		notifySem: make(chan struct{}, 4),
	}
	m, err := newMetrics(cfg.Registry, w.disp)
	if err != nil {
		return nil, fmt.Errorf("registering deliverer metrics: %w", err)
	}
	w.m = m
	w.sender = outbox.NewKafkaSender(cfg.Brokers)
	// Dead letters are written through to the spool as they are enqueued,
	// right after the commit that marks their deliveries dead: a kill -9
	// then loses none of them (at the cost of a write each, and they are
	// rare), where an in-memory queue would lose the last ~10 ms' worth.
	w.dlq, err = outbox.New(outbox.Config{Dir: filepath.Clean(cfg.SpoolDir), WriteThrough: true,
		Logger: cfg.Logger.Named("dead-letters")}, w.sender)
	if err != nil {
		return nil, fmt.Errorf("opening the dead-letter spool: %w", err)
	}
	return w, nil
}

func setDefault[T int | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

// now is the configured clock at Postgres precision, so that a time written
// and read back compares equal.
func (w *Worker) now() time.Time { return w.cfg.Now().Truncate(time.Microsecond) }

// Run delivers until ctx ends, then shuts down in order: stop consuming
// and claiming, give back the leases of deliveries not started, let
// in-flight attempts finish for up to ShutdownGrace, write their results,
// and flush the dead-letter producer. It returns nil on a normal stop.
func (w *Worker) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	obCtx, obCancel := context.WithCancel(context.Background())
	obDone := make(chan struct{})
	go func() {
		defer close(obDone)
		_ = w.dlq.Run(obCtx)
	}()

	// Attempts and result writes outlive ctx for a bounded time.
	attemptCtx, attemptCancel := context.WithCancel(context.Background())
	defer attemptCancel()
	writeCtx, writeCancel := context.WithCancel(context.Background())
	defer writeCancel()

	var workers sync.WaitGroup
	for range w.cfg.Concurrency {
		workers.Go(func() {
			for j := w.disp.next(); j != nil; j = w.disp.next() {
				r := w.attempt(attemptCtx, j)
				w.disp.finished(j)
				if r.kind == resAttempted {
					w.m.attempts.WithLabelValues(r.class).Inc()
				}
				w.results <- r
			}
		})
	}
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		w.writeResults(writeCtx)
	}()
	renewStop := make(chan struct{})
	renewDone := make(chan struct{})
	go func() {
		defer close(renewDone)
		w.renewLoop(renewStop)
	}()

	var (
		loops    sync.WaitGroup
		errMu    sync.Mutex
		firstErr error
	)
	loops.Go(func() {
		if err := w.consume(ctx); err != nil {
			errMu.Lock()
			firstErr = err
			errMu.Unlock()
			cancel()
		}
	})
	loops.Go(func() { w.pollLoop(ctx) })
	loops.Go(func() { w.statsLoop(ctx) })
	loops.Go(func() {
		// Read from Kafka: a consumer group's reader reports no lag itself.
		kafkabatch.WatchLag(ctx, w.cfg.Brokers, w.cfg.GroupID, w.cfg.Topic, w.cfg.StatsEvery,
			func(n int64) { w.m.kafkaLag.Set(float64(n)) },
			func(err error) { w.log.Debug("reading the consumer group's lag", zap.Error(err)) })
	})
	w.log.Info("webhook worker started", zap.String("topic", w.cfg.Topic), zap.String("group", w.cfg.GroupID),
		zap.Int("concurrency", w.cfg.Concurrency), zap.Int("endpoint_concurrency", w.cfg.EndpointConcurrency))

	<-ctx.Done()
	loops.Wait()
	dropped := w.disp.close()
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	if err := w.release(rctx, dropped); err != nil {
		w.log.Warn("releasing leases at shutdown; they will expire instead", zap.Error(err))
	}
	rcancel()
	for _, j := range dropped {
		w.disp.done(j)
	}
	grace := time.AfterFunc(w.cfg.ShutdownGrace, attemptCancel)
	workers.Wait()
	grace.Stop()
	close(w.results)
	flushLimit := time.AfterFunc(10*time.Second, writeCancel)
	<-writerDone
	flushLimit.Stop()
	close(renewStop)
	<-renewDone
	w.notifyWG.Wait()
	obCancel()
	<-obDone
	_ = w.sender.Close()
	w.log.Info("webhook worker stopped")
	return firstErr
}

// consume is the Kafka side: FetchMessage → fan-out committed in Postgres
// → CommitMessages. A crash anywhere re-reads at most the round in flight,
// whose fan-out is then a no-op.
func (w *Worker) consume(ctx context.Context) error {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:       w.cfg.Brokers,
		GroupID:       w.cfg.GroupID,
		Topic:         w.cfg.Topic,
		MinBytes:      1,
		MaxBytes:      16 << 20,
		QueueCapacity: kafkabatch.QueueCapacity,
		MaxWait:       100 * time.Millisecond,
		StartOffset:   kafka.FirstOffset, // endpoints never get events from before their creation (fanOut)
		// A deliverer that died holds its partitions until the session
		// times out; 10 s rather than kafka-go's 30 s bounds the pause in
		// fan-out after a crash.
		SessionTimeout:    10 * time.Second,
		HeartbeatInterval: 2 * time.Second,
		// CommitInterval 0: CommitMessages commits synchronously.
		Logger:      kafka.LoggerFunc(func(string, ...any) {}),
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) { w.log.Sugar().Warnf("kafka: "+msg, args...) }),
	})
	defer r.Close()
	for {
		msgs, err := kafkabatch.Fetch(ctx, r, w.cfg.BatchSize, w.cfg.BatchWait)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			// Kafka away (restart, network): the reader reconnects; the
			// process must outlive the outage.
			w.log.Warn("reading events; retrying", zap.String("topic", w.cfg.Topic), zap.Error(err))
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
			continue
		}
		w.m.consumed.Add(float64(len(msgs)))
		evs := make([]wire.Event, 0, len(msgs))
		times := make([]time.Time, 0, len(msgs))
		for _, m := range msgs {
			var e wire.Event
			err := json.Unmarshal(m.Value, &e)
			if err == nil {
				err = events.Validate(e)
			}
			if err != nil {
				w.m.malformed.Inc()
				w.log.Warn("skipping malformed event message", zap.Int("partition", m.Partition), zap.Int64("offset", m.Offset), zap.Error(err))
				continue
			}
			evs = append(evs, e)
			times = append(times, m.Time)
		}
		if len(evs) > 0 {
			for attempt := 0; ; attempt++ {
				jobs, created, err := w.fanOut(ctx, w.now(), evs, times)
				if err != nil && badEvent(err) {
					jobs, created, err = w.fanOutEach(ctx, evs, times)
				}
				// Jobs are stored and leased, also those fanOutEach stored
				// before an error (the retry finds them stored).
				w.m.fannedOut.Add(float64(created))
				w.m.fastPath.Add(float64(len(jobs)))
				var lost []*job
				for _, j := range jobs {
					if !w.disp.push(j) {
						lost = append(lost, j)
					}
				}
				if err := w.releaseSoon(ctx, lost); err != nil {
					w.log.Warn("releasing leases", zap.Error(err))
				}
				if err == nil {
					break
				}
				if ctx.Err() != nil {
					return nil
				}
				w.log.Error("fanning out events; retrying", zap.Error(err), zap.Int("events", len(evs)))
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(min(time.Duration(attempt+1)*500*time.Millisecond, 5*time.Second)):
				}
			}
		}
		if err := r.CommitMessages(ctx, msgs...); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// After a rebalance the new owner re-reads these; fan-out is
			// idempotent and later commits cover earlier offsets.
			w.log.Warn("committing event offsets", zap.Error(err))
		}
	}
}

// fanOutEach fans out a batch Postgres refused one event at a time, so an
// event whose values it refuses (and events.Validate let through) is
// skipped and counted as malformed instead of stalling its partition. On
// any other error it returns what it stored so far with the error.
func (w *Worker) fanOutEach(ctx context.Context, evs []wire.Event, times []time.Time) (jobs []*job, created int, err error) {
	for i := range evs {
		j, c, err := w.fanOut(ctx, w.now(), evs[i:i+1], times[i:i+1])
		if err != nil {
			if !badEvent(err) {
				return jobs, created, err
			}
			w.m.malformed.Inc()
			w.log.Warn("skipping event Postgres refused", zap.String("event_id", evs[i].ID), zap.Error(err))
			continue
		}
		jobs, created = append(jobs, j...), created+c
	}
	return jobs, created, nil
}

// badEvent reports whether Postgres refused an event's values
// (pgerr.BadValue) rather than the round's timing: a foreign-key violation
// is an endpoint deleted between the round's reading of the endpoints and
// its insert of their deliveries, and the retried round reads them again.
func badEvent(err error) bool {
	var pe *pgconn.PgError
	return pgerr.BadValue(err) && !(errors.As(err, &pe) && pe.Code == "23503") // foreign_key_violation
}

// pollLoop claims due deliveries whenever the dispatcher has room: every
// PollInterval, and, while a backlog remains, as soon as a useful amount of
// room has freed up.
func (w *Worker) pollLoop(ctx context.Context) {
	t := time.NewTicker(w.cfg.PollInterval)
	defer t.Stop()
	var lastErr time.Time
	step := max(min(w.cfg.ClaimBatch, w.cfg.limits.maxPerEndpoint)/4, 1)
	for {
		mark := w.disp.startClaim()
		found := true // with no room, whatever is due waits for some
		n := min(w.disp.free(), w.cfg.ClaimBatch)
		if n > 0 {
			jobs, err := w.claim(ctx, w.now(), n)
			if err != nil && ctx.Err() == nil && time.Since(lastErr) > 10*time.Second {
				w.log.Warn("claiming due deliveries", zap.Error(err))
				lastErr = time.Now()
			}
			// The claim skips full organisations but may take more for one
			// than its remaining room: those leases go back at once.
			var lost []*job
			for _, j := range jobs {
				if !w.disp.reserve(j.d.OrganizationID, j.d.EndpointID) || !w.disp.push(j) {
					lost = append(lost, j)
				}
			}
			if err := w.releaseSoon(ctx, lost); err != nil {
				w.log.Warn("releasing leases", zap.Error(err))
			}
			if err == nil {
				w.m.polls.Inc()
			}
			found = len(jobs) > 0
			w.disp.claimed(step)
			if ce := w.log.Check(zap.DebugLevel, "claimed due deliveries"); ce != nil {
				held, inflight := w.disp.stats()
				ce.Write(zap.Int("asked", n), zap.Int("claimed", len(jobs)), zap.Int("lost", len(lost)),
					zap.Int("held", held), zap.Int("in_flight", inflight), zap.Error(err))
			}
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-w.disp.room:
				if !w.disp.claimAgain(mark, step, found) {
					continue
				}
			}
			break
		}
	}
}

// renewLoop extends held leases every third of a lease until stop closes.
func (w *Worker) renewLoop(stop <-chan struct{}) {
	t := time.NewTicker(w.cfg.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), w.cfg.Lease/3)
		if err := w.renew(ctx, w.now()); err != nil {
			w.log.Warn("renewing delivery leases", zap.Error(err))
		}
		cancel()
	}
}

// statsLoop samples the queue-lag and failing-endpoint gauges.
func (w *Worker) statsLoop(ctx context.Context) {
	t := time.NewTicker(w.cfg.StatsEvery)
	defer t.Stop()
	for {
		due, oldest, failing, err := w.queueStats(ctx, w.now())
		if err == nil {
			w.m.due.Set(float64(due))
			w.m.oldestDue.Set(oldest.Seconds())
			w.m.failing.Set(float64(failing))
		} else if ctx.Err() == nil {
			w.log.Warn("sampling queue metrics", zap.Error(err))
		}
		w.secrets.prune()
		w.eps.prune()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// releaseSoon releases leases even while ctx is ending (shutdown), within a
// few seconds; failing that they expire on their own.
func (w *Worker) releaseSoon(ctx context.Context, jobs []*job) error {
	if len(jobs) == 0 {
		return nil
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return w.release(rctx, jobs)
}
