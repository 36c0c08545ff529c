// Package server is the control plane's HTTP server: health and readiness
// probes, the /v1 API that the gateway forwards (behind the signed-identity
// verifier) and the dashboard at /. It owns the cross-cutting concerns —
// request ids, access logs, panics, timeouts, graceful shutdown — so the
// capability packages mounted on it only handle their own routes.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/gatehouse/gatehouse/controlplane/router"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/identity"
)

// DefaultAddr is where the control plane listens (DESIGN §3).
const DefaultAddr = ":8081"

// Pinger is the database as readiness sees it (a *pgxpool.Pool).
type Pinger interface {
	Ping(ctx context.Context) error
}

// Config wires the server.
type Config struct {
	// Addr is the listen address; DefaultAddr when empty.
	Addr string
	// DB is pinged by /readyz.
	DB     Pinger
	Logger *zap.Logger
	// IdentitySecret verifies the gateway's identity headers on /v1.
	IdentitySecret []byte
	// API are the capabilities served under /v1/.
	API []router.Routes
	// Dashboard serves everything outside /v1 and the probes; nil serves a
	// placeholder page.
	Dashboard http.Handler
	// Metrics, when set, is served at GET /metrics (Prometheus).
	Metrics http.Handler
	// ShutdownTimeout bounds how long in-flight requests may finish after
	// the context ends; 10 s when zero.
	ShutdownTimeout time.Duration
	// RequestTimeout bounds a /v1 request's work (its database queries
	// are cancelled when it ends); DefaultRequestTimeout when zero.
	RequestTimeout time.Duration
}

// DefaultRequestTimeout is how long a /v1 request may run, as long as a
// dashboard page may: a search no index can narrow ends with an error
// object rather than holding a connection until the client gives up.
const DefaultRequestTimeout = 30 * time.Second

// Server is the control plane's HTTP server.
type Server struct {
	cfg     Config
	handler http.Handler
}

// New builds the server's routes.
func New(cfg Config) *Server {
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.Dashboard == nil {
		cfg.Dashboard = http.HandlerFunc(placeholder)
	}
	s := &Server{cfg: cfg}

	verify := identity.NewVerifier(cfg.IdentitySecret, 0, nil)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	if cfg.Metrics != nil {
		mux.Handle("GET /metrics", cfg.Metrics)
	}
	mux.Handle("/v1/", verify.Middleware(deadline(cfg.RequestTimeout, router.New(cfg.API...))))
	mux.Handle("/", cfg.Dashboard)
	s.handler = requestID(accessLog(cfg.Logger, recoverPanics(cfg.Logger, refuseBadURLs(mux))))
	return s
}

// Handler is the server's complete handler, middleware included.
func (s *Server) Handler() http.Handler { return s.handler }

// Run listens on the configured address and serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", s.cfg.Addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln until ctx ends, then shuts down gracefully: no new
// connections, in-flight requests get ShutdownTimeout to finish.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          zap.NewStdLog(s.cfg.Logger.Named("http")),
	}
	// Requests run on a context of their own, not ctx: SIGTERM lets them
	// finish; one still running when ShutdownTimeout ends is cancelled, so
	// a query stuck in Postgres returns its connection and the process can
	// close its pool and exit.
	base, abort := context.WithCancel(context.WithoutCancel(ctx))
	defer abort()
	srv.BaseContext = func(net.Listener) context.Context { return base }
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.cfg.Logger.Info("control plane listening", zap.String("addr", ln.Addr().String()))

	select {
	case err := <-errc:
		return fmt.Errorf("serving http: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		abort()
		_ = srv.Close()
		return fmt.Errorf("shutting down http: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving http: %w", err)
	}
	s.cfg.Logger.Info("control plane stopped")
	return nil
}

// healthz says the process is up; it checks nothing else on purpose, so an
// orchestrator does not restart us for a database outage.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeStatus(w, http.StatusOK, "ok")
}

// readyz says whether we can serve: Postgres answers.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if s.cfg.DB == nil {
		apierror.Write(w, apierror.Unavailable("dependency_unavailable", "No database is configured."))
		return
	}
	if err := s.cfg.DB.Ping(ctx); err != nil {
		s.cfg.Logger.Warn("readiness: postgres unreachable", zap.Error(err),
			zap.String("request_id", w.Header().Get("Request-Id")))
		apierror.Write(w, apierror.Unavailable("dependency_unavailable", "Postgres is unreachable."))
		return
	}
	writeStatus(w, http.StatusOK, "ready")
}

func writeStatus(w http.ResponseWriter, code int, status string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = fmt.Fprintf(w, "{\"status\":%q}\n", status)
}

const placeholderPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Gatehouse</title></head>
<body><h1>Gatehouse dashboard — coming soon</h1></body></html>
`

// placeholder stands in for the dashboard until it is mounted.
func placeholder(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write([]byte(placeholderPage))
}
