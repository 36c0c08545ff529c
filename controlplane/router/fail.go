package router

import (
	"context"
	"errors"
	"net/http"

	"go.uber.org/zap"

	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/pgerr"
	"github.com/gatehouse/gatehouse/internal/redact"
)

// Fail answers a request of the named API that failed with err, with the
// error object pgerr.ErrorObject gives; a 5xx is logged with the request
// id, since it is ours to look into. A read that ran out of the request's
// time (the server's RequestTimeout) is a 503 request_timeout that says how
// to narrow it; a write that did stays a 500, as it may have been applied.
func Fail(w http.ResponseWriter, r *http.Request, log *zap.Logger, api string, err error) {
	e := pgerr.ErrorObject(err)
	if (r.Method == http.MethodGet || r.Method == http.MethodHead) && errors.Is(err, context.DeadlineExceeded) &&
		errors.Is(r.Context().Err(), context.DeadlineExceeded) {
		e = apierror.Unavailable("request_timeout",
			"This request took longer than the API allows and was stopped. Narrow it (a shorter created[gte]/created[lt] range, "+
				"or more filters) and retry.")
	}
	if e.Status >= http.StatusInternalServerError {
		log.Error(api+" api request failed", zap.String("request_id", w.Header().Get(identity.HeaderRequestID)),
			zap.String("method", r.Method), zap.String("path", redact.LogPath(r)), zap.Error(err))
	}
	apierror.Write(w, e)
}
