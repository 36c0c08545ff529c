// Package deliverer is the webhook delivery process (DESIGN §7, §8): it
// consumes platform.events.v1, fans each event out to the organisation's
// matching endpoints, signs (Standard Webhooks, internal/whsign) and sends
// each delivery through the SSRF guard (internal/ssrf), retries on a
// schedule for about three days, dead-letters what never succeeds, and
// serves /healthz, /readyz and Prometheus /metrics for operators.
//
// # How a delivery moves
//
//   - Consumer (group "deliverer"): FetchMessage, then in one transaction
//     the events row (ON CONFLICT DO NOTHING, so the dashboard shows the
//     event even if the control plane's ingester lags) and one
//     webhook_deliveries row per (event, matching endpoint) — same
//     organisation and livemode, enabled, enabled_events "*", the exact type
//     or a "prefix.*" — ON CONFLICT (event_id, endpoint_id) DO NOTHING; then
//     CommitMessages. A crash re-reads at most one round, and re-reading is
//     a no-op.
//   - Fast path: rows for which the dispatcher has room are inserted
//     already leased to this process and handed straight to it, so a new
//     event is attempted milliseconds after it reaches Kafka.
//   - Poller: every PollInterval, and as soon as room frees while
//     deliveries may be waiting for it (a claim found some or stopped at an
//     endpoint's room, or fan-out had to store some unleased), it claims
//     due deliveries (status pending or failed, next_attempt_at
//     passed, lease free or expired) with UPDATE … FOR UPDATE SKIP LOCKED,
//     setting locked_until = now + Lease and a lease id. This is how
//     retries, manual retries (the control plane sets manual_pending) and
//     the deliveries of a deliverer that died are picked up: its leases
//     simply expire (Lease, 30 s by default). Held leases are renewed every
//     Lease/3, so only a dead or stalled process loses them.
//   - Dispatcher: a bounded pool of workers (Concurrency) takes held
//     deliveries round-robin across endpoints, at most EndpointConcurrency
//     at once per endpoint, so a slow endpoint cannot starve the others;
//     one endpoint may also hold at most a quarter of the in-memory queue.
//   - Attempt: first, the endpoint's status, URL and secrets version are
//     made at most EndpointTTL old (a delivery can wait in the queue for
//     minutes): a disabled endpoint's delivery is parked, a moved one goes
//     to the new URL, rotated secrets are reloaded (while Postgres fails,
//     the last state read is used, 10 s at a time). Then a POST of the
//     event object with webhook-id (the delivery id, stable across
//     retries), webhook-timestamp and a signature per unexpired secret;
//     2xx succeeds; redirects are not followed; 410 Gone disables the
//     endpoint; Retry-After on 429/503 delays the next attempt (never
//     sooner than the schedule).
//   - Result writer: attempts and the deliveries' new states are written
//     in batches, one transaction each, only where the lease id still
//     matches; then dead letters go to webhooks.dead-letter.v1 through the
//     outbox and alerts to the Notifier.
//
// Every decision that depends on time reads WorkerConfig.Now, so tests run
// the retry schedule on a fake clock.
package deliverer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/ids"
)

// DefaultAddr is where the deliverer serves health and metrics (DESIGN §3).
const DefaultAddr = ":8083"

// Config wires the deliverer.
type Config struct {
	// Addr is the health and metrics listen address; DefaultAddr when empty.
	Addr string
	// Brokers are the Kafka bootstrap brokers.
	Brokers []string
	DB      *pgxpool.Pool
	Logger  *zap.Logger
	// ShutdownTimeout bounds the HTTP server's graceful shutdown; 10 s when
	// zero.
	ShutdownTimeout time.Duration
	// Worker configures deliveries; its Brokers, DB, Logger and Registry
	// default to the service's.
	Worker WorkerConfig
}

// Service is the deliverer process: the worker and its HTTP server.
type Service struct {
	cfg     Config
	reg     *prometheus.Registry
	depUp   *prometheus.GaugeVec
	worker  *Worker
	handler http.Handler
}

// New builds the service. Its metrics live in a registry of their own, so
// tests can build several services in one process.
func New(cfg Config) (*Service, error) {
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s := &Service{
		cfg: cfg,
		reg: reg,
		depUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "gatehouse", Subsystem: "deliverer", Name: "dependency_up",
			Help: "Whether the dependency answered the last readiness check (1) or not (0).",
		}, []string{"dependency"}),
	}
	reg.MustRegister(s.depUp)
	wc := cfg.Worker
	if len(wc.Brokers) == 0 {
		wc.Brokers = cfg.Brokers
	}
	if wc.DB == nil {
		wc.DB = cfg.DB
	}
	if wc.Logger == nil {
		wc.Logger = cfg.Logger.Named("worker")
	}
	if wc.Registry == nil {
		wc.Registry = reg
	}
	w, err := NewWorker(wc)
	if err != nil {
		return nil, err
	}
	s.worker = w

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		apierror.Write(w, apierror.New(http.StatusNotFound, apierror.TypeInvalidRequest, "route_missing",
			"Unrecognized request URL ("+r.Method+": "+r.URL.Path+")."))
	})
	s.handler = withRequestID(mux)
	return s, nil
}

// Handler is the health and metrics handler.
func (s *Service) Handler() http.Handler { return s.handler }

// Run listens on the configured address and runs until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", s.cfg.Addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve runs the worker and the HTTP server on ln until ctx ends or either
// fails; then it stops both and returns the first failure.
func (s *Service) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          zap.NewStdLog(s.cfg.Logger.Named("http")),
	}

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
		cancel()
	}
	wg.Go(func() {
		if err := s.worker.Run(ctx); err != nil {
			fail(fmt.Errorf("worker: %w", err))
		}
		cancel() // a worker that stops takes the process down with it
	})
	wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fail(fmt.Errorf("serving http: %w", err))
		}
	})
	s.cfg.Logger.Info("deliverer listening", zap.String("addr", ln.Addr().String()))

	<-ctx.Done()
	sctx, scancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		fail(fmt.Errorf("shutting down http: %w", err))
	}
	wg.Wait()
	s.cfg.Logger.Info("deliverer stopped")
	return firstErr
}

func (s *Service) healthz(w http.ResponseWriter, _ *http.Request) {
	writeStatus(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz checks Postgres and Kafka concurrently; both must answer.
func (s *Service) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	var pgErr, kafkaErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		if s.cfg.DB == nil {
			pgErr = errors.New("no database configured")
			return
		}
		pgErr = s.cfg.DB.Ping(ctx)
	})
	wg.Go(func() { kafkaErr = KafkaReachable(ctx, s.cfg.Brokers) })
	wg.Wait()

	var down []string
	for _, c := range []struct {
		name string
		err  error
	}{{"postgres", pgErr}, {"kafka", kafkaErr}} {
		if c.err != nil {
			s.depUp.WithLabelValues(c.name).Set(0)
			s.cfg.Logger.Warn("readiness: dependency unreachable", zap.String("dependency", c.name), zap.Error(c.err),
				zap.String("request_id", w.Header().Get("Request-Id")))
			down = append(down, c.name)
			continue
		}
		s.depUp.WithLabelValues(c.name).Set(1)
	}
	if len(down) > 0 {
		apierror.Write(w, apierror.Unavailable("dependency_unavailable", fmt.Sprintf("Unreachable: %v.", down)))
		return
	}
	writeStatus(w, http.StatusOK, map[string]string{"status": "ready"})
}

// KafkaReachable reports whether any of brokers answers a metadata request,
// which proves more than an open port: the broker is up and speaking Kafka.
func KafkaReachable(ctx context.Context, brokers []string) error {
	if len(brokers) == 0 {
		return errors.New("no kafka brokers configured")
	}
	d := &kafka.Dialer{Timeout: 2 * time.Second}
	var errs []error
	for _, b := range brokers {
		conn, err := d.DialContext(ctx, "tcp", b)
		if err != nil {
			errs = append(errs, fmt.Errorf("dialing %s: %w", b, err))
			continue
		}
		if dl, ok := ctx.Deadline(); ok {
			_ = conn.SetDeadline(dl)
		}
		_, err = conn.Brokers()
		conn.Close()
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("asking %s for brokers: %w", b, err))
	}
	return errors.Join(errs...)
}

func writeStatus(w http.ResponseWriter, code int, body map[string]string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = fmt.Fprintf(w, "{\"status\":%q}\n", body["status"])
}

// withRequestID stamps every response, errors included, with a Request-Id.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Request-Id", ids.New(ids.Request))
		next.ServeHTTP(w, r)
	})
}
