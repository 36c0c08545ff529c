// Package sampleapi is the "existing backend" of the demo: a small customers
// service (/v1/customers) that stands for the API a team already runs before
// putting the gateway in front of it. It knows nothing of API keys, rate
// limits or webhooks; the only platform code it trusts is the signed identity
// the gateway adds to each request (internal/identity), from which it takes
// the organisation, environment, scopes, request id and API version.
package sampleapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/apiversion"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/pgerr"
	"github.com/gatehouse/gatehouse/internal/redact"
)

// DefaultAddr is where the service listens unless SAMPLEAPI_ADDR says otherwise.
const DefaultAddr = ":8082"

// Config is what the server needs besides its database and logger.
type Config struct {
	// Addr is the listen address for Run; DefaultAddr when empty.
	Addr string
	// IdentitySecret is the HMAC key shared with the gateway.
	IdentitySecret []byte
	// MaxSkew is how old a gateway signature may be; identity.DefaultMaxSkew when zero.
	MaxSkew time.Duration
	// Now is the clock for signature freshness and creation times; time.Now when nil.
	Now func() time.Time
}

// Server is the customers service.
type Server struct {
	addr    string
	store   *store
	log     *zap.Logger
	now     func() time.Time
	handler http.Handler
}

// NewServer builds the service on an already pinged pool.
func NewServer(cfg Config, pool *pgxpool.Pool, log *zap.Logger) *Server {
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{addr: cfg.Addr, store: &store{pool: pool}, log: log, now: cfg.Now}
	verifier := identity.NewVerifier(cfg.IdentitySecret, cfg.MaxSkew, cfg.Now)

	v1 := http.NewServeMux()
	s.handle(v1, "POST /v1/customers", scopeWrite, s.createCustomer)
	s.handle(v1, "GET /v1/customers", scopeRead, s.listCustomers)
	s.handle(v1, "GET /v1/customers/{id}", scopeRead, s.getCustomer)
	s.handle(v1, "POST /v1/customers/{id}", scopeWrite, s.updateCustomer)
	s.handle(v1, "DELETE /v1/customers/{id}", scopeWrite, s.deleteCustomer)

	root := http.NewServeMux()
	root.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	// Unknown /v1 routes are answered only after the identity check, so the
	// service does not tell unauthenticated callers which routes exist.
	root.Handle("/v1/", verifier.Middleware(withAPIVersion(routeErrors(v1))))

	s.handler = s.withRequestID(s.withAccessLog(routeErrors(root)))
	return s
}

// Handler is the whole service as an http.Handler, for tests and embedding.
func (s *Server) Handler() http.Handler { return s.handler }

// Run serves until ctx ends, then shuts down gracefully, letting in-flight
// requests finish for up to ten seconds.
func (s *Server) Run(ctx context.Context) error {
	srv := &http.Server{
		Addr:              s.addr,
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          zap.NewStdLog(s.log),
	}
	// Requests run on a context of their own, not ctx: SIGTERM lets them
	// finish; one still running after the shutdown deadline is cancelled,
	// so a query stuck in Postgres returns its connection and the pool can
	// close.
	base, abort := context.WithCancel(context.WithoutCancel(ctx))
	defer abort()
	srv.BaseContext = func(net.Listener) context.Context { return base }
	errc := make(chan error, 1)
	go func() {
		s.log.Info("sampleapi listening", zap.String("addr", s.addr))
		errc <- srv.ListenAndServe()
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serving on %s: %w", s.addr, err)
	case <-ctx.Done():
	}
	// The serving context is done, so shutdown needs its own deadline.
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		abort()
		_ = srv.Close()
		return fmt.Errorf("shutting down: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving on %s: %w", s.addr, err)
	}
	return nil
}

// Scopes of the customers API. Secret keys carry "*", which grants both.
const (
	scopeRead  = "customers:read"
	scopeWrite = "customers:write"
)

// caller is who is calling and in which API version, as the gateway vouched.
type caller struct {
	identity.Identity
	// nameField is the wire name of the customer's display name: "full_name"
	// before API version 2026-11-01, "name" since.
	nameField string
}

// apiHandler is a /v1 endpoint. It returns its failure instead of writing
// it, so that errors become the public error object in one place (fail).
type apiHandler func(w http.ResponseWriter, r *http.Request, c caller) error

// handle registers h on mux behind the scope check. The gateway checks scopes
// too; checking again here is defence in depth should a route be exposed
// without the gateway's scope rule.
func (s *Server) handle(mux *http.ServeMux, pattern, scope string, h apiHandler) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		id, ok := identity.FromContext(r.Context())
		if !ok {
			// Unreachable behind the verifier middleware; refuse rather than
			// serve an unscoped request if someone rewires the routes.
			s.fail(w, r, apierror.Authentication("identity_invalid", "This service only accepts requests through the API gateway."))
			return
		}
		if !id.HasScope(scope) {
			s.fail(w, r, apierror.Permission("scope_missing",
				fmt.Sprintf("The API key used for this request lacks the required scope: %s.", scope)))
			return
		}
		c := caller{Identity: id, nameField: "name"}
		if apiversion.Before(versionOf(id), versionNameRenamed) {
			c.nameField = "full_name"
		}
		if err := h(w, r, c); err != nil {
			s.fail(w, r, err)
		}
	})
}

// versionNameRenamed is the API version that renamed customer full_name to name.
const versionNameRenamed = "2026-11-01"

// versionOf is the API version the request is served in. The gateway always
// resolves one; an empty value (a caller signing identities by hand) means
// the latest.
func versionOf(id identity.Identity) string {
	if id.APIVersion == "" {
		return apiversion.Latest()
	}
	return id.APIVersion
}

// withAPIVersion echoes the version in use and refuses versions this service
// does not know, which can only happen if the gateway is newer than we are.
func withAPIVersion(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := identity.FromContext(r.Context())
		v := versionOf(id)
		if !apiversion.Valid(v) {
			apierror.Write(w, apierror.InvalidRequest("api_version_invalid", "",
				fmt.Sprintf("Unknown API version %q; supported versions are %v.", v, apiversion.Supported)))
			return
		}
		w.Header().Set(apiversion.Header, v)
		next.ServeHTTP(w, r)
	})
}

// routeErrors answers requests that match no route of mux with the error
// object, instead of ServeMux's plain-text 404 and 405 pages.
func routeErrors(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := apierror.BadURL(r); err != nil {
			apierror.Write(w, err)
			return
		}
		h, pattern := mux.Handler(r)
		if pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		// The mux's own answer tells 404 from 405 and computes Allow; run it
		// into a scratch writer and keep only those facts.
		var probe probeWriter
		h.ServeHTTP(&probe, r)
		if probe.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", probe.header.Get("Allow"))
			apierror.Write(w, apierror.New(http.StatusMethodNotAllowed, apierror.TypeInvalidRequest, "method_not_allowed",
				fmt.Sprintf("%s is not allowed on %s; allowed: %s.", r.Method, r.URL.Path, probe.header.Get("Allow"))))
			return
		}
		apierror.Write(w, apierror.New(http.StatusNotFound, apierror.TypeInvalidRequest, "route_missing",
			fmt.Sprintf("Unrecognized request URL (%s %s).", r.Method, r.URL.Path)))
	})
}

// probeWriter records what a handler would have answered and discards the body.
type probeWriter struct {
	header http.Header
	status int
}

func (p *probeWriter) Header() http.Header {
	if p.header == nil {
		p.header = http.Header{}
	}
	return p.header
}

func (p *probeWriter) WriteHeader(status int) {
	if p.status == 0 {
		p.status = status
	}
}

func (p *probeWriter) Write(b []byte) (int, error) {
	p.WriteHeader(http.StatusOK)
	return len(b), nil
}

// withRequestID makes sure every response carries a Request-Id. Behind the
// gateway the request already has one (and the identity middleware echoes
// it); a request that bypassed the gateway, or whose id is not plausible
// (identity.PlausibleRequestID), gets a fresh one so that even its 401 can
// be quoted to support.
func (s *Server) withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rid := r.Header.Get(identity.HeaderRequestID)
		if !identity.PlausibleRequestID(rid) {
			rid = ids.New(ids.Request)
		}
		w.Header().Set(identity.HeaderRequestID, rid)
		next.ServeHTTP(w, r)
	})
}

// withAccessLog writes one log line per request. The query string is left out
// because it can carry an email address.
func (s *Server) withAccessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := s.now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		s.log.Info("request",
			zap.String("request_id", w.Header().Get(identity.HeaderRequestID)),
			zap.String("method", r.Method),
			zap.String("path", redact.LogPath(r)),
			zap.Int("status", sw.status),
			zap.Duration("duration", s.now().Sub(start)),
		)
	})
}

// statusWriter remembers the status code for the access log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// fail is the one place where an endpoint's error becomes the public error
// object, read as the control plane's API reads it (pgerr.ErrorObject):
// Postgres failing the request rather than refusing it tells the caller to
// retry (503 dependency_unavailable, 429 lock_timeout). Other errors that
// are not already an *apierror.Error are ours: they are logged with the
// request id and answered with a generic 500.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, errNotFound) {
		err = apierror.NotFound("customer", r.PathValue("id"))
	}
	e := pgerr.ErrorObject(err)
	if e.Status >= http.StatusInternalServerError {
		s.log.Error("request failed",
			zap.String("request_id", w.Header().Get(identity.HeaderRequestID)),
			zap.String("method", r.Method),
			zap.String("path", redact.LogPath(r)),
			zap.Error(err),
		)
	}
	apierror.Write(w, e)
}
