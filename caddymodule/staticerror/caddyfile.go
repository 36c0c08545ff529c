package staticerror

import (
	"strconv"

	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("api_error", parseCaddyfile)
	// A terminal handler, like respond and Caddy's own error.
	httpcaddyfile.RegisterDirectiveOrder("api_error", httpcaddyfile.Before, "respond")
}

// parseCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	api_error [<matcher>] [<status>] <code> [<message>]
//
// The code must be in the apierror catalogue; status and message default
// to the catalogue's. The message may use placeholders.
func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	h.Next() // consume directive name
	args := h.RemainingArgs()
	if len(args) == 0 {
		return nil, h.Errf("api_error takes [<status>] <code> [<message>], e.g. api_error 404 route_missing")
	}
	se := new(Handler)
	if n, err := strconv.Atoi(args[0]); err == nil {
		if n < 400 || n > 599 {
			return nil, h.Errf("api_error status %d is not an error status (400-599)", n)
		}
		se.StatusCode = n
		args = args[1:]
		if len(args) == 0 {
			return nil, h.Errf("api_error needs an error code after the status, e.g. api_error 404 route_missing")
		}
	}
	if len(args) > 2 {
		return nil, h.Errf("api_error takes [<status>] <code> [<message>]; quote a message with spaces")
	}
	se.Code = args[0]
	if _, ok := lookup(se.Code); !ok {
		return nil, h.Errf("api_error: unknown error code '%s'; codes are listed in internal/apierror/codes.go", se.Code)
	}
	if len(args) == 2 {
		se.Message = args[1]
	}
	for h.NextBlock(0) {
		return nil, h.Errf("unrecognized api_error subdirective '%s'; api_error has no block", h.Val())
	}
	if se.StatusCode != 0 {
		if err := se.Validate(); err != nil {
			return nil, h.Err(err.Error())
		}
	}
	return se, nil
}
