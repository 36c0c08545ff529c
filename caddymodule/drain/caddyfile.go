package drain

import (
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("reload_drain", parseDirective)
	// First of all (request_id comes right after tracing): every response
	// of a draining config, error objects included, says Connection: close.
	httpcaddyfile.RegisterDirectiveOrder("reload_drain", httpcaddyfile.Before, "tracing")
	httpcaddyfile.RegisterGlobalOption("reload_drain", parseGlobal)
}

// parseDirective sets up the handler. Syntax:
//
//	reload_drain
func parseDirective(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	h.Next() // consume directive name
	if h.NextArg() {
		return nil, h.Errf("reload_drain takes no arguments; set the window with the global option `reload_drain <duration>` (got '%s')", h.Val())
	}
	if h.NextBlock(0) {
		return nil, h.Errf("reload_drain has no block (got '%s')", h.Val())
	}
	return new(Handler), nil
}

// parseGlobal reads the global option. Syntax:
//
//	reload_drain <duration>|off
func parseGlobal(d *caddyfile.Dispenser, existing any) (any, error) {
	d.Next() // consume option name
	if existing != nil {
		return nil, d.Err("reload_drain: already set in the global options")
	}
	if !d.NextArg() {
		return nil, d.ArgErr()
	}
	app := new(App)
	if d.Val() == "off" {
		app.Window = -1
	} else {
		dur, err := caddy.ParseDuration(d.Val())
		if err != nil || dur < time.Millisecond || dur > maxWindow {
			return nil, d.Errf("reload_drain: want a duration from 1ms to 1m, or off (got '%s')", d.Val())
		}
		app.Window = caddy.Duration(dur)
	}
	if d.NextArg() || d.NextBlock(0) {
		return nil, d.Errf("reload_drain takes one argument (got '%s')", d.Val())
	}
	return httpcaddyfile.App{Name: "reload_drain", Value: caddyconfig.JSON(app, nil)}, nil
}
