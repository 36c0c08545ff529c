// Package dashboard is the control plane's web dashboard: server-rendered
// pages (html/template, embedded with the static assets) where support
// engineers and developers debug a request or a webhook, manage API keys,
// webhook endpoints and members, and read usage, the audit trail and the
// docs.
//
// Security model (DESIGN §9): sessions live in Postgres (the cookie holds a
// random token, the table its SHA-256); every state-changing form carries a
// CSRF token; sign-ins are throttled per email and address and every POST
// is rate-limited; roles are enforced on the server for every route (see
// Routes); every query is scoped to the session's organisation and
// environment, so another tenant's object is a 404. Pages work without
// JavaScript; the one small script only adds copy buttons and auto-submit,
// and the Content-Security-Policy forbids inline scripts.
package dashboard

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/gatehouse/gatehouse/caddymodule/ratelimit/keyspace"
	"github.com/gatehouse/gatehouse/controlplane/accounts"
	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/controlplane/keys"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/pgerr"
	"github.com/gatehouse/gatehouse/internal/redact"
	"github.com/gatehouse/gatehouse/internal/secretbox"
)

//go:embed templates static openapi
var assets embed.FS

// DB is what the dashboard needs from Postgres: a *pgxpool.Pool.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// QuotaMeter reads the quotas the gateways enforce and their counters
// (controlplane/limits.Service).
type QuotaMeter interface {
	Quotas(ctx context.Context, now time.Time) ([]keyspace.QuotaSpec, error)
	QuotaUsed(ctx context.Context, org string, livemode bool, q keyspace.QuotaSpec, values []string, now time.Time) ([]int64, error)
}

// Config wires the dashboard.
type Config struct {
	DB       DB
	Logger   *zap.Logger
	Accounts *accounts.Service
	Keys     *keys.Service
	Audit    *audit.Log
	// Webhooks performs endpoint and delivery changes; nil makes those
	// pages read-only.
	Webhooks Webhooks
	// Box opens webhook signing secrets for "reveal" (MASTER_KEY); nil
	// disables revealing.
	Box *secretbox.Box
	// Quotas feeds the usage page's quota meters; nil leaves them out.
	Quotas QuotaMeter
	// LogRetention is how long request logs are kept
	// (REQUEST_LOG_RETENTION): the usage page says which days its charts
	// drawn from them no longer cover. Zero: not said.
	LogRetention time.Duration
	// GatewayURL is the public API's base URL shown in the docs and
	// quickstart; http://localhost:8080 when empty.
	GatewayURL string
	// SessionTTL is how long a sign-in lasts; 12 h when zero.
	SessionTTL time.Duration
	// TrustedProxies are the peers whose X-Forwarded-For names the
	// client (TRUSTED_PROXIES); none by default, as the control plane
	// is reached directly.
	TrustedProxies []netip.Prefix
	// ActionsPerMinute bounds each user's POSTs; 60 when zero.
	ActionsPerMinute int
	// RequestTimeout bounds a page's work (a streamed export's, each
	// page of it); 30 s when zero.
	RequestTimeout time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Dashboard is the dashboard's http.Handler.
type Dashboard struct {
	cfg    Config
	log    *zap.Logger
	now    func() time.Time
	mux    *http.ServeMux
	pages  map[string]*template.Template
	static http.Handler
	routes []Route
}

// New builds the dashboard.
func New(cfg Config) (*Dashboard, error) {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.GatewayURL == "" {
		cfg.GatewayURL = "http://localhost:8080"
	}
	cfg.GatewayURL = strings.TrimRight(cfg.GatewayURL, "/")
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 30 * time.Second
	}
	if cfg.ActionsPerMinute == 0 {
		cfg.ActionsPerMinute = 60
	}
	if cfg.DB == nil || cfg.Accounts == nil || cfg.Keys == nil || cfg.Audit == nil {
		return nil, errors.New("dashboard: DB, Accounts, Keys and Audit are required")
	}
	d := &Dashboard{cfg: cfg, log: cfg.Logger, now: cfg.Now, mux: http.NewServeMux()}
	if err := d.parseTemplates(); err != nil {
		return nil, err
	}
	if err := loadOpenAPI(); err != nil {
		return nil, err
	}
	staticFS, _ := fs.Sub(assets, "static")
	d.static = http.StripPrefix("/static/", http.FileServerFS(staticFS))
	d.routes = d.table()
	for _, rt := range d.routes {
		if _, ok := objectIDs[rt.Object]; rt.Object != "" && !ok {
			return nil, fmt.Errorf("dashboard route %s: no id prefix for object %q", rt.Pattern, rt.Object)
		}
		d.mux.Handle(rt.Method+" "+rt.Pattern, d.wrap(rt))
	}
	d.mux.Handle("GET /static/", http.HandlerFunc(d.serveStatic))
	d.mux.HandleFunc("/", d.notFoundRoute)
	return d, nil
}

// ServeHTTP serves every dashboard route with the security headers.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	setSecurityHeaders(w, r)
	d.mux.ServeHTTP(w, r)
}

// Access is who may use a route.
type Access int

// Access levels, from least to most demanding.
const (
	// Public routes need no session: sign-in, sign-up, invitations, docs.
	Public Access = iota
	// Member routes need a session; every role reads them.
	Member
	// Self routes change only the caller's own session (sign out, switch
	// organisation or environment): every role, CSRF-protected.
	Self
	// Writer routes change the organisation's data: developers, admins
	// and owners; viewers get 403.
	Writer
	// Admin routes manage the organisation itself (members,
	// invitations): admins and owners.
	Admin
)

func (a Access) String() string {
	return [...]string{"public", "member", "self", "writer", "admin"}[a]
}

// Route is one dashboard route as the authorisation tests enumerate it.
type Route struct {
	Method  string // GET or POST
	Pattern string // http.ServeMux pattern path, e.g. /keys/{id}/roll
	Access  Access
	// Object names the kind of object the {id} wildcard holds ("api_key",
	// "webhook_endpoint", …), for the cross-tenant tests. An {id} that is
	// not an id of that kind is a 404 before the handler runs.
	Object string
	// Stream: the handler streams a long answer and bounds each step
	// itself (the audit export); the rest of the route still has
	// RequestTimeout.
	Stream bool
	h      handler
}

// objectIDs is the id prefix of each Object.
var objectIDs = map[string]string{
	"api_key": ids.Key, "request_log": ids.Request, "webhook_endpoint": ids.WebhookEndpoint,
	"webhook_delivery": ids.Delivery, "event": ids.Event, "invitation": ids.Invite, "member": ids.User,
}

// Routes lists every route, for tests and documentation.
func (d *Dashboard) Routes() []Route { return append([]Route(nil), d.routes...) }

type handler func(w http.ResponseWriter, r *http.Request, s *Session) error

// table is every route of the dashboard.
func (d *Dashboard) table() []Route {
	return []Route{
		// Accounts and sessions.
		{Method: "GET", Pattern: "/signup", Access: Public, h: d.signupPage},
		{Method: "POST", Pattern: "/signup", Access: Public, h: d.signup},
		{Method: "GET", Pattern: "/login", Access: Public, h: d.loginPage},
		{Method: "POST", Pattern: "/login", Access: Public, h: d.login},
		{Method: "GET", Pattern: "/invitations/{token}", Access: Public, h: d.invitationPage},
		{Method: "POST", Pattern: "/invitations/{token}", Access: Public, h: d.acceptInvitation},
		{Method: "POST", Pattern: "/logout", Access: Self, h: d.logout},
		{Method: "POST", Pattern: "/session/organization", Access: Self, h: d.switchOrg},
		{Method: "POST", Pattern: "/session/environment", Access: Self, h: d.switchEnv},

		// Overview and usage.
		{Method: "GET", Pattern: "/{$}", Access: Member, h: d.overview},
		{Method: "GET", Pattern: "/usage", Access: Member, h: d.usagePage},

		// API keys.
		{Method: "GET", Pattern: "/keys", Access: Member, h: d.keysPage},
		{Method: "POST", Pattern: "/keys", Access: Writer, h: d.createKey},
		{Method: "GET", Pattern: "/keys/{id}", Access: Member, Object: "api_key", h: d.keyPage},
		{Method: "POST", Pattern: "/keys/{id}/roll", Access: Writer, Object: "api_key", h: d.rollKey},
		{Method: "POST", Pattern: "/keys/{id}/revoke", Access: Writer, Object: "api_key", h: d.revokeKey},

		// Request logs.
		{Method: "GET", Pattern: "/logs", Access: Member, h: d.logsPage},
		{Method: "GET", Pattern: "/logs/{id}", Access: Member, Object: "request_log", h: d.logPage},
		{Method: "POST", Pattern: "/logs/body-capture", Access: Writer, h: d.setBodyCapture},

		// Webhooks and events.
		{Method: "GET", Pattern: "/webhooks", Access: Member, h: d.endpointsPage},
		{Method: "GET", Pattern: "/webhooks/new", Access: Writer, h: d.newEndpointPage},
		{Method: "POST", Pattern: "/webhooks", Access: Writer, h: d.createEndpoint},
		{Method: "GET", Pattern: "/webhooks/{id}", Access: Member, Object: "webhook_endpoint", h: d.endpointPage},
		{Method: "GET", Pattern: "/webhooks/{id}/edit", Access: Writer, Object: "webhook_endpoint", h: d.editEndpointPage},
		{Method: "POST", Pattern: "/webhooks/{id}", Access: Writer, Object: "webhook_endpoint", h: d.updateEndpoint},
		{Method: "POST", Pattern: "/webhooks/{id}/disable", Access: Writer, Object: "webhook_endpoint", h: d.disableEndpoint},
		{Method: "POST", Pattern: "/webhooks/{id}/enable", Access: Writer, Object: "webhook_endpoint", h: d.enableEndpoint},
		{Method: "POST", Pattern: "/webhooks/{id}/delete", Access: Writer, Object: "webhook_endpoint", h: d.deleteEndpoint},
		{Method: "POST", Pattern: "/webhooks/{id}/reveal", Access: Writer, Object: "webhook_endpoint", h: d.revealSecret},
		{Method: "POST", Pattern: "/webhooks/{id}/rotate", Access: Writer, Object: "webhook_endpoint", h: d.rotateSecret},
		{Method: "POST", Pattern: "/webhooks/{id}/test", Access: Writer, Object: "webhook_endpoint", h: d.testEndpoint},
		{Method: "POST", Pattern: "/webhooks/{id}/recover", Access: Writer, Object: "webhook_endpoint", h: d.recoverEndpoint},
		{Method: "GET", Pattern: "/deliveries", Access: Member, h: d.deliveriesPage},
		{Method: "GET", Pattern: "/deliveries/{id}", Access: Member, Object: "webhook_delivery", h: d.deliveryPage},
		{Method: "POST", Pattern: "/deliveries/{id}/retry", Access: Writer, Object: "webhook_delivery", h: d.retryDelivery},
		{Method: "GET", Pattern: "/events", Access: Member, h: d.eventsPage},
		{Method: "GET", Pattern: "/events/{id}", Access: Member, Object: "event", h: d.eventPage},

		// Audit log.
		{Method: "GET", Pattern: "/audit", Access: Member, h: d.auditPage},
		{Method: "GET", Pattern: "/audit/export", Access: Member, Stream: true, h: d.auditExport},

		// Members.
		{Method: "GET", Pattern: "/members", Access: Member, h: d.membersPage},
		{Method: "POST", Pattern: "/members/invitations", Access: Admin, h: d.invite},
		{Method: "POST", Pattern: "/members/invitations/{id}/revoke", Access: Admin, Object: "invitation", h: d.revokeInvitation},
		{Method: "POST", Pattern: "/members/{id}/role", Access: Admin, Object: "member", h: d.changeRole},
		{Method: "POST", Pattern: "/members/{id}/remove", Access: Admin, Object: "member", h: d.removeMember},

		// Docs.
		{Method: "GET", Pattern: "/docs", Access: Public, h: d.docsIndex},
		{Method: "GET", Pattern: "/docs/quickstart", Access: Public, h: d.docsQuickstart},
		{Method: "GET", Pattern: "/docs/api", Access: Public, h: d.docsAPI},
		{Method: "GET", Pattern: "/docs/errors", Access: Public, h: d.docsErrors},
		{Method: "GET", Pattern: "/docs/webhooks", Access: Public, h: d.docsWebhooks},
		{Method: "GET", Pattern: "/openapi.json", Access: Public, h: d.openAPIJSON},
	}
}

// wrap applies a route's access rules in order: session, CSRF, role, rate
// limit, then the handler; a failure at any step ends the request.
func (d *Dashboard) wrap(rt Route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A streamed answer bounds each of its steps itself, not the whole.
		handlerCtx := r.Context()
		ctx, cancel := context.WithTimeout(r.Context(), d.cfg.RequestTimeout)
		defer cancel()
		r = r.WithContext(ctx)
		if !rt.Stream {
			handlerCtx = ctx
		}
		var s *Session
		if rt.Access != Public || r.Method == http.MethodGet {
			var err error
			s, err = d.loadSession(r)
			if err != nil {
				d.fail(w, r, nil, err)
				return
			}
		}
		if rt.Access != Public && s == nil {
			if r.Method == http.MethodGet {
				http.Redirect(w, r, "/login?next="+urlQueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			if rt.Pattern == "/logout" && sameSite(r) {
				// The session already ended (it expired, or another tab
				// signed out): signing out changes nothing here, so it needs
				// no CSRF token, only the cookie cleared.
				if err := d.endSession(w, r, nil); err != nil {
					d.fail(w, r, nil, err)
					return
				}
				redirect(w, r, "/login", "You are signed out.")
				return
			}
			d.fail(w, r, nil, errForbidden("Your session has ended. Sign in again."))
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
			if err := d.checkCSRF(w, r, s, rt.Access); err != nil {
				d.fail(w, r, s, err)
				return
			}
			if err := storableForm(r); err != nil {
				d.fail(w, r, s, err)
				return
			}

			if err := s.allowed(rt.Access); err != nil {
				d.fail(w, r, s, err)
				return
			}
			if err := d.rateLimitAction(r, s); err != nil {
				d.fail(w, r, s, err)
				return
			}
		} else if err := s.allowed(rt.Access); err != nil {
			d.fail(w, r, s, err)
			return
		} else if err := storableForm(r); err != nil {
			d.fail(w, r, s, err)
			return
		}
		// Handlers pass the id to queries; one Postgres cannot store (a
		// mangled link's %ff or %00) would fail there as a 500.
		if rt.Object != "" && !ids.Valid(r.PathValue("id"), objectIDs[rt.Object]) {
			d.fail(w, r, s, errNotFound())
			return
		}
		if err := rt.h(w, r.WithContext(handlerCtx), s); err != nil {
			d.fail(w, r, s, err)
		}
	})
}

// storableForm refuses a request whose form or query has a value Postgres
// cannot store or compare (invalid UTF-8, NUL): handlers pass form values
// and filters to queries, where such a value would fail as a 500.
func storableForm(r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return errBadRequest("The form could not be read.")
	}
	for k, vs := range r.Form {
		if apierror.CheckText("", k) != nil || slices.ContainsFunc(vs, func(v string) bool { return apierror.CheckText("", v) != nil }) {
			return errBadRequest("The form has characters that cannot be stored (invalid UTF-8 or NUL). Check what you typed or pasted.")
		}
	}
	return nil
}

// httpError is a failure shown to the user as an error page.
type httpError struct {
	status int
	title  string
	msg    string
}

func (e *httpError) Error() string { return fmt.Sprintf("%d %s: %s", e.status, e.title, e.msg) }

func errNotFound() error {
	return &httpError{http.StatusNotFound, "Not found", "There is nothing here, or it belongs to another organisation or environment."}
}

func errForbidden(msg string) error {
	return &httpError{http.StatusForbidden, "Not allowed", msg}
}

func errBadRequest(msg string) error {
	return &httpError{http.StatusBadRequest, "Bad request", msg}
}

func errTooMany(msg string) error {
	return &httpError{http.StatusTooManyRequests, "Too many requests", msg}
}

// fail renders err as an error page. Errors that are not ours to explain
// are logged with the request id and shown as a generic 500.
func (d *Dashboard) fail(w http.ResponseWriter, r *http.Request, s *Session, err error) {
	var he *httpError
	if !errors.As(err, &he) {
		ae := pgerr.ErrorObject(err) // the API's reading of err, Postgres' failures included
		switch {
		case ae.Status == http.StatusNotFound:
			he = errNotFound().(*httpError)
		case ae.Status < 500:
			he = &httpError{ae.Status, "Request refused", ae.Message}
		case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
			he = &httpError{http.StatusServiceUnavailable, "Timed out", "The page took too long to load. Try again."}
		case ae.Code == "dependency_unavailable":
			d.log.Warn("dashboard request failed: postgres unreachable", zap.String("request_id", w.Header().Get(identity.HeaderRequestID)),
				zap.String("path", redact.LogPath(r)), zap.Error(err))
			he = &httpError{http.StatusServiceUnavailable, "Temporarily unavailable",
				"The dashboard's database cannot be reached right now. Try again in a moment."}
		default:
			d.log.Error("dashboard request failed", zap.String("request_id", w.Header().Get(identity.HeaderRequestID)),
				zap.String("method", r.Method), zap.String("path", redact.LogPath(r)), zap.Error(err))
			he = &httpError{http.StatusInternalServerError, "Something went wrong",
				"An unexpected error occurred on our side. Try again; if it persists, contact support with the request id below."}
		}
	}
	switch he.status {
	case http.StatusTooManyRequests:
		w.Header().Set("Retry-After", "60")
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
	}
	d.render(w, r, s, he.status, "error.html", he.title, "", map[string]any{
		"Status": he.status, "Message": he.msg, "RequestID": w.Header().Get(identity.HeaderRequestID),
	})
}

func (d *Dashboard) notFoundRoute(w http.ResponseWriter, r *http.Request) {
	s, _ := d.loadSession(r)
	if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, HEAD, POST")
		d.fail(w, r, s, &httpError{http.StatusMethodNotAllowed, "Method not allowed", "The dashboard only answers GET and POST."})
		return
	}
	d.fail(w, r, s, errNotFound())
}

func (d *Dashboard) serveStatic(w http.ResponseWriter, r *http.Request) {
	// Assets are embedded in the binary, so they change only with a new
	// release; an hour of caching is safe and makes pages fast.
	w.Header().Set("Cache-Control", "public, max-age=3600")
	d.static.ServeHTTP(w, r)
}

// contentSecurityPolicy forbids inline scripts and styles and everything
// not served by the dashboard itself.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"

func setSecurityHeaders(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	// Invitation links carry their token in the path: never leak it in a
	// Referer.
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=(), clipboard-write=(self)")
	if isTLS(r) {
		h.Set("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
	}
}

// isTLS reports whether the browser reached us over https, directly or
// through a TLS-terminating proxy.
func isTLS(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}
