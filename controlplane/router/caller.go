package router

import (
	"fmt"
	"net/http"

	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/identity"
)

// Caller returns the gateway-verified identity of the request, or the error
// object for a caller that lacks scope. Every /v1 capability calls it first.
func Caller(r *http.Request, scope string) (identity.Identity, error) {
	id, ok := identity.FromContext(r.Context())
	switch {
	case !ok:
		// Unreachable behind the verifier; refuse rather than serve an
		// unscoped request if the routes are ever mounted without it.
		return id, apierror.Authentication("identity_invalid", "This API only accepts requests through the API gateway.")
	case !id.HasScope(scope):
		return id, apierror.Permission("scope_missing",
			fmt.Sprintf("The API key used for this request lacks the required scope: %s.", scope))
	}
	return id, nil
}
