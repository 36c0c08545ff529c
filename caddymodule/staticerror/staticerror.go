// Package staticerror is the api_error handler (http.handlers.api_error): it
// answers with a fixed error object from the catalogue of
// internal/apierror, the way Caddy's `error` and `respond` directives answer
// with a fixed status. The demo Caddyfile ends in
// `handle { api_error 404 route_missing }` so that unknown routes get the
// platform's 404 instead of Caddy's empty 200.
package staticerror

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/gatehouse/gatehouse/caddymodule/internal/errorobject"
	"github.com/gatehouse/gatehouse/internal/apierror"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler writes one error object and ends the chain.
type Handler struct {
	// Code is the error code; it must be in the apierror catalogue, which
	// also gives the error type. Required.
	Code string `json:"code"`

	// StatusCode is the HTTP status. Default: the code's status in the
	// catalogue (404 for route_missing).
	StatusCode int `json:"status_code,omitempty"`

	// Message is the human-readable message; placeholders are expanded
	// (e.g. {http.request.method}). Default: the code's description in
	// the catalogue.
	Message string `json:"message,omitempty"`

	entry apierror.Code
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.api_error",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision looks the code up in the catalogue and fills the defaults.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.entry, _ = lookup(h.Code)
	if h.StatusCode == 0 {
		h.StatusCode = h.entry.Status
	}
	if h.Message == "" {
		h.Message = h.entry.Description
	}
	return errorobject.RegisterMetrics(ctx.GetMetricsRegistry())
}

// Validate checks the code and status.
func (h *Handler) Validate() error {
	if _, ok := lookup(h.Code); !ok {
		return fmt.Errorf("api_error: unknown error code %q; add it to internal/apierror/codes.go first", h.Code)
	}
	if h.StatusCode < 400 || h.StatusCode > 599 {
		return fmt.Errorf("api_error: status %d is not an error status (400-599)", h.StatusCode)
	}
	if e, _ := lookup(h.Code); !apierror.StatusFits(e.Type, h.StatusCode) {
		return fmt.Errorf("api_error: status %d does not fit %s, of type %s (authentication_error is sent with 401, "+
			"permission_error 403, idempotency_error 409 or 422, rate_limit_error 429, api_error 5xx, "+
			"invalid_request_error another 4xx)", h.StatusCode, h.Code, e.Type)
	}
	return nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	msg := h.Message
	if strings.Contains(msg, "{") {
		repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		msg = repl.ReplaceKnown(msg, "")
	}
	errorobject.Write(w, r, apierror.New(h.StatusCode, h.entry.Type, h.Code, msg))
	return nil
}

func lookup(code string) (apierror.Code, bool) {
	for _, c := range apierror.Codes {
		if c.Code == code {
			return c, true
		}
	}
	return apierror.Code{}, false
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
