// Package pgerr reads what a failed Postgres call means for its caller:
// Postgres could not be reached or could not work (retry later), the
// statement lost a conflict with a concurrent transaction (retry now), or
// anything else (a refusal of the statement itself, or not Postgres at all:
// retrying does not help). The control plane's API and the sample API
// answer by it (ErrorObject), and the deliverer decides by it whether to
// keep retrying a write.
package pgerr

import (
	"errors"
	"io"
	"net"
	"net/http"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/internal/apierror"
)

// Kind is what a failure means for the caller.
type Kind int

const (
	Other       Kind = iota // refused, or not Postgres' doing
	Unavailable             // not reached, starting, stopping, out of resources
	Conflict                // deadlock, serialization failure, lock timeout
)

// Classify tells err's Kind.
func Classify(err error) Kind {
	// Before PgError: a server refusing the connection itself (starting up,
	// shutting down, too many clients) answers with one.
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return Unavailable
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "40001" || pe.Code == "40P01" || pe.Code == "55P03": // serialization, deadlock, lock_not_available
			return Conflict
		case len(pe.Code) >= 2 && (pe.Code[:2] == "08" || pe.Code[:2] == "53" || pe.Code[:2] == "57" || pe.Code[:2] == "58"):
			return Unavailable // connection, resources, operator intervention, system
		}
		return Other
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || pgconn.Timeout(err) {
		return Unavailable
	}
	return Other
}

// Refused reports whether Postgres answered a statement with an error about
// the statement itself (a value or constraint it refuses), which no retry
// fixes.
func Refused(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && Classify(err) == Other
}

// BadValue reports whether Postgres refused the data itself (SQLSTATE
// classes 22, data exception, and 23, integrity violation): no retry of the
// same values succeeds, so a batch writer falls back to one row at a time
// and skips the row refused, rather than stall on it.
func BadValue(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && len(pe.Code) >= 2 && (pe.Code[:2] == "22" || pe.Code[:2] == "23")
}

// ErrorObject is the public error object for err: its own when it carries
// one; for Postgres failing the request rather than refusing it, the one
// that tells the caller to retry — 503 dependency_unavailable while
// Postgres cannot be reached, 429 lock_timeout when the request lost a lock
// conflict with a concurrent one (a deadlock, a serialization failure), as
// Stripe answers; otherwise a 500. A connection lost after a statement was
// sent is a 500 too: the statement may have run, and a 503 with
// Retry-After says it did not (the gateway's idempotency then lets a retry
// with the same key run it again).
func ErrorObject(err error) *apierror.Error {
	var ae *apierror.Error
	if errors.As(err, &ae) {
		return ae
	}
	switch Classify(err) {
	case Unavailable:
		if !notRun(err) {
			return apierror.Internal()
		}
		e := apierror.Unavailable("dependency_unavailable", "Postgres cannot be reached right now. Retry later.")
		e.RetryAfter = 1
		return e
	case Conflict:
		e := apierror.New(http.StatusTooManyRequests, apierror.TypeRateLimit, "lock_timeout",
			"Another request is changing the same objects right now. Retry the request.")
		e.RetryAfter = 1
		return e
	}
	return apierror.Internal()
}

// notRun reports whether an Unavailable err says the statement did not run:
// no connection was made, Postgres answered with an error, or pgx knows
// nothing was sent. Otherwise the answer was lost, not necessarily the work.
func notRun(err error) bool {
	var ce *pgconn.ConnectError
	var pe *pgconn.PgError
	return errors.As(err, &ce) || errors.As(err, &pe) || pgconn.SafeToRetry(err)
}
