package router

import (
	"errors"
	"net/http"

	"go.uber.org/zap"

	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/pgerr"
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
	switch pgerr.Classify(err) {
	case pgerr.Unavailable:
		e := apierror.Unavailable("dependency_unavailable", "Postgres cannot be reached right now. Retry later.")
		e.RetryAfter = 1
		return e
	case pgerr.Conflict:
		e := apierror.New(http.StatusTooManyRequests, apierror.TypeRateLimit, "lock_timeout",
			"Another request is changing the same objects right now. Retry the request.")
		e.RetryAfter = 1
		return e
	}
	return apierror.Internal()
}
