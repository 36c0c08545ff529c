package server

import (
	"context"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/gatehouse/gatehouse/controlplane/router"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/redact"
)

// requestID gives every response a Request-Id: the gateway's when it sent a
// plausible one (so logs of both correlate), a fresh req_ id otherwise.
func requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rid := r.Header.Get(identity.HeaderRequestID)
		if !identity.PlausibleRequestID(rid) {
			// The request header is left alone: the gateway's signature
			// covers it.
			rid = ids.New(ids.Request)
		}
		w.Header().Set(identity.HeaderRequestID, rid)
		next.ServeHTTP(w, r)
	})
}

// deadline cancels a request's context after d; router.Fail answers the
// timeout.
func deadline(d time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), d)
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// statusWriter remembers the status and size of a response for the log.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// accessLog writes one line per request. Probes log at debug so that an
// orchestrator polling them does not drown the real traffic. Query strings
// are left out: they may carry things that must not be logged.
func accessLog(log *zap.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		level := zapcore.InfoLevel
		if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
			level = zapcore.DebugLevel
		}
		if sw.status >= 500 {
			level = zapcore.ErrorLevel
		}
		if ce := log.Check(level, "http request"); ce != nil {
			ce.Write(
				zap.String("request_id", w.Header().Get(identity.HeaderRequestID)),
				zap.String("method", r.Method),
				zap.String("path", redact.LogPath(r)),
				zap.Int("status", sw.status),
				zap.Int64("bytes", sw.bytes),
				zap.Duration("duration", time.Since(start)),
			)
		}
	})
}

// recoverPanics turns a handler panic into a 500 error object and a log
// line, instead of a dropped connection.
func recoverPanics(log *zap.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			log.Error("handler panic", zap.Any("panic", v), zap.Stack("stack"),
				zap.String("request_id", w.Header().Get(identity.HeaderRequestID)))
			apierror.Write(w, apierror.Internal())
		}()
		next.ServeHTTP(w, r)
	})
}

// refuseBadURLs answers an API URL with a non-canonical path or a query
// that does not parse with an error object, before the mux would redirect
// the one and drop the other's bad pairs. (It runs before the mux, whose
// path cleaning would redirect /v1//x before a /v1/ handler saw it.) The
// dashboard's pages keep the mux's forgiving behaviour.
func refuseBadURLs(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/v1/") {
			// The gateway matches paths whatever their case, so /V1/EVENTS
			// arrives authenticated: it is the API's miss, not a
			// dashboard page.
			if len(r.URL.Path) >= 4 && strings.EqualFold(r.URL.Path[:4], "/v1/") {
				apierror.Write(w, router.RouteMissing(r))
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		if err := apierror.BadURL(r); err != nil {
			apierror.Write(w, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}
