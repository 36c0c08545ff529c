package router

import (
	"errors"
	"io"
	"net"
	"net/http"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/redact"
)

// Fail answers a request of the named API that failed with err, with the
// error object ErrorFor gives; a 5xx is logged with the request id, since
// it is ours to look into.
func Fail(w http.ResponseWriter, r *http.Request, log *zap.Logger, api string, err error) {
	e := ErrorFor(err)
	if e.Status >= http.StatusInternalServerError {
		log.Error(api+" api request failed", zap.String("request_id", w.Header().Get(identity.HeaderRequestID)),
			zap.String("method", r.Method), zap.String("path", redact.LogPath(r)), zap.Error(err))
	}
	apierror.Write(w, e)
}

// ErrorFor is the error object for err: its own when it carries one; for
// Postgres failing the request rather than refusing it, the one that tells
// the caller to retry — 503 dependency_unavailable while Postgres cannot
// be reached, 429 lock_timeout when the request lost a lock conflict with
// a concurrent one (a deadlock, a serialization failure), as Stripe
// answers; otherwise a 500.
func ErrorFor(err error) *apierror.Error {
	var ae *apierror.Error
	if errors.As(err, &ae) {
		return ae
	}
	// Before PgError: a server refusing the connection itself (starting up,
	// shutting down, too many clients) answers with one.
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return postgresUnavailable()
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "40P01", pe.Code == "40001", pe.Code == "55P03":
			e := apierror.New(http.StatusTooManyRequests, apierror.TypeRateLimit, "lock_timeout",
				"Another request is changing the same objects right now. Retry the request.")
			e.RetryAfter = 1
			return e
		case len(pe.Code) >= 2 && (pe.Code[:2] == "08" || pe.Code[:2] == "53" || pe.Code[:2] == "57"):
			return postgresUnavailable()
		}
		return apierror.Internal()
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || pgconn.Timeout(err) {
		return postgresUnavailable()
	}
	return apierror.Internal()
}

func postgresUnavailable() *apierror.Error {
	e := apierror.Unavailable("dependency_unavailable", "Postgres cannot be reached right now. Retry later.")
	e.RetryAfter = 1
	return e
}
