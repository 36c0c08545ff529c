package router

import (
	"net/http"

	"go.uber.org/zap"

	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/pgerr"
	"github.com/gatehouse/gatehouse/internal/redact"
)

// Fail answers a request of the named API that failed with err, with the
// error object pgerr.ErrorObject gives; a 5xx is logged with the request
// id, since it is ours to look into.
func Fail(w http.ResponseWriter, r *http.Request, log *zap.Logger, api string, err error) {
	e := pgerr.ErrorObject(err)
	if e.Status >= http.StatusInternalServerError {
		log.Error(api+" api request failed", zap.String("request_id", w.Header().Get(identity.HeaderRequestID)),
			zap.String("method", r.Method), zap.String("path", redact.LogPath(r)), zap.Error(err))
	}
	apierror.Write(w, e)
}
