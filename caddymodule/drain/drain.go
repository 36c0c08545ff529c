// Package drain ends HTTP/1.1 keep-alive connections cleanly across config
// reloads.
//
// On a reload Caddy starts the new config (its listeners bind with
// SO_REUSEPORT next to the old ones), then stops the old one, whose
// http.Server.Shutdown closes every idle keep-alive connection at once. A
// client that is writing its next request on such a connection at that
// moment gets a connection reset, and a POST without an Idempotency-Key
// cannot be retried safely: the client cannot know the request was never
// read. net/http calls this "such is life with HTTP/1.1"; Caddy skips its
// shutdown_delay on reloads.
//
// This package shrinks that window to (almost) nothing. The reload_drain app
// subscribes to the old config's "stopping" event, which Caddy emits before
// it stops any app, and holds the stop for Window. Meanwhile the old config
// still serves, and the reload_drain handler, first in the route, answers
// every request with Connection: close, so each old connection ends after
// a complete exchange, on the server's word, and the client opens a new one
// (to either config). What remains exposed is a connection left unused for
// the whole window and then reused at the very instant it is closed.
//
// When Caddy stops or exits rather than reloads, nothing is held: no new
// config takes the clients over, and Caddy's shutdown_delay is the tool.
package drain

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(new(App))
	caddy.RegisterModule(Handler{})
}

// DefaultWindow is how long an old config keeps serving, with
// Connection: close, after a reload.
const DefaultWindow = time.Second

// App is the per-config drain state (app "reload_drain").
type App struct {
	// Window is how long a reload holds the old config's stop while its
	// connections end. Default 1s; a negative value disables draining.
	Window caddy.Duration `json:"window,omitempty"`

	draining atomic.Bool
	// started is closed when a drain begins (tests wait on it).
	started chan struct{}
	logger  *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "reload_drain",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision subscribes to the config's stopping event.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	a.started = make(chan struct{})
	if a.Window == 0 {
		a.Window = caddy.Duration(DefaultWindow)
	}
	if a.Window < 0 {
		return nil
	}
	ev, err := ctx.App("events")
	if err != nil {
		return fmt.Errorf("reload_drain: loading the events app: %w", err)
	}
	return ev.(*caddyevents.App).On("stopping", stopping{a})
}

// Start does nothing: the app only reacts to its config stopping.
func (*App) Start() error { return nil }

// Stop does nothing: the drain already happened in the stopping event.
func (*App) Stop() error { return nil }

// Draining reports whether this config is being replaced.
func (a *App) Draining() bool { return a.draining.Load() }

// stopping is the stopping-event handler. Caddy runs event handlers
// synchronously, so returning after the window is what holds the stop.
type stopping struct{ a *App }

func (s stopping) Handle(ctx context.Context, _ caddy.Event) error {
	a := s.a
	// Only a replaced config drains: on a stop (no active config any
	// more) or at exit nobody is left to take the connections over.
	if caddy.Exiting() || caddy.ActiveContext().Context == nil || a.draining.Swap(true) {
		return nil
	}
	close(a.started)
	a.logger.Info("config replaced; old connections close after their next response",
		zap.Duration("window", time.Duration(a.Window)))
	t := time.NewTimer(time.Duration(a.Window))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	return nil
}

// Handler is the reload_drain handler (http.handlers.reload_drain): while
// its config drains, responses carry Connection: close.
type Handler struct {
	app *App
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.reload_drain",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision finds (or creates, with defaults) the config's drain app.
func (h *Handler) Provision(ctx caddy.Context) error {
	app, err := ctx.App("reload_drain")
	if err != nil {
		return fmt.Errorf("reload_drain: %w", err)
	}
	h.app = app.(*App)
	return nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if h.app.draining.Load() {
		// net/http closes after this response (HTTP/1.1) or sends GOAWAY
		// (HTTP/2). Set before next: the reverse proxy strips the
		// upstream's hop-by-hop headers, not ours.
		w.Header().Set("Connection", "close")
	}
	return next.ServeHTTP(w, r)
}

// Interface guards
var (
	_ caddy.App                   = (*App)(nil)
	_ caddy.Provisioner           = (*App)(nil)
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
