// Package requestid is the request_id handler (http.handlers.request_id):
// every request gets a fresh req_ id, echoed in the Request-Id response
// header, forwarded upstream and exposed as the {http.request_id}
// placeholder. It also makes every failure of the handlers after it an error
// object (DESIGN §5): an error returned by the chain (reverse_proxy's 502 or
// 504, request_body's 413, an *apierror.Error from our modules) is rendered,
// logged with the request id, and swallowed so Caddy writes nothing else.
//
// Being first, it also refuses what no later handler should have to handle:
// a standard method's name in another case (see caseVariant).
package requestid

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/gatehouse/gatehouse/caddymodule/internal/errorobject"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/apiversion"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/redact"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Header is the request and response header carrying the request id.
const Header = "Request-Id"

// Placeholder is the replacer key of the request id, usable in any later
// directive and in log formats as {http.request_id}.
const Placeholder = "http.request_id"

// VarKey is the name of the request id among the request's vars
// ({http.vars.request_id}, caddyhttp.GetVar).
const VarKey = "request_id"

// Handler assigns request ids and renders errors. It has no configuration:
// the id is always generated here, never taken from the client, so that a
// request id always names exactly one request the gateway saw.
type Handler struct {
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.request_id",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets up the handler.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	return errorobject.RegisterMetrics(ctx.GetMetricsRegistry())
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	id := ids.New(ids.Request)
	// Set, not Add: a client-sent Request-Id is replaced, never trusted.
	w.Header()[Header] = []string{id}
	r.Header[Header] = []string{id}
	var boxed any = id // boxed once for both maps
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set(Placeholder, boxed)
	}
	caddyhttp.SetVar(r.Context(), VarKey, boxed)

	rw := &responseWriter{ResponseWriter: w, id: id}
	if std := caseVariant(r.Method); std != "" {
		h.fail(rw, r, id, apierror.New(http.StatusBadRequest, apierror.TypeInvalidRequest, "request_invalid",
			fmt.Sprintf("HTTP methods are case-sensitive: %s is not %s, and the gateway does not pass it on as a method of its own. Send %s.", r.Method, std, std)))
		return nil
	}

	errorobject.WatchBody(r)
	err := next.ServeHTTP(rw, r)
	if err == nil {
		return nil
	}
	h.fail(rw, r, id, err)
	return nil
}

// fail logs err and answers with its error object, unless the response has
// already started, in which case all that is left is the log line.
func (h *Handler) fail(w *responseWriter, r *http.Request, id string, err error) {
	e := errorobject.ForRequest(r, err)
	if r.Context().Err() != nil || isClientClosed(err) {
		// The client is gone; nobody will read an error object.
		if c := h.logger.Check(zapcore.DebugLevel, "client closed the request"); c != nil {
			c.Write(zap.String("request_id", id), zap.Error(err))
		}
		if !w.wroteHeader {
			w.WriteHeader(errorobject.StatusClientClosed)
		}
		return
	}
	level := zapcore.DebugLevel
	if e.Status >= 500 {
		level = zapcore.ErrorLevel
	}
	if c := h.logger.Check(level, "request failed"); c != nil {
		c.Write(
			zap.String("request_id", id),
			zap.Int("status", e.Status),
			zap.String("code", e.Code),
			zap.String("method", r.Method),
			zap.String("path", redact.LogPath(r)),
			zap.Bool("response_started", w.wroteHeader),
			zap.Error(err),
		)
	}
	if w.wroteHeader {
		return
	}
	if e.RequestID == "" {
		c := *e
		c.RequestID = id
		e = &c
	}
	errorobject.Write(w, r, e)
}

// caseVariant returns the standard method that m spells in another case
// ("post" → POST), or "" when m is a standard method or a token of its own.
// Methods are case-sensitive (RFC 9110 §9.1), so the gateway's modules and
// Caddy's matchers compare them exactly, and "post" would pass every rule
// written for POST (idempotency keys, scopes, emit_events) — while many
// backends take it for POST. Refusing it here, before any other handler,
// closes that gap for all of them at once. Custom methods pass.
func caseVariant(m string) string {
	up := strings.ToUpper(m) // no allocation when m is upper case already
	if up == m {
		return ""
	}
	switch up {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return up
	}
	return ""
}

func isClientClosed(err error) bool {
	he, ok := errors.AsType[caddyhttp.HandlerError](err)
	return ok && he.StatusCode == errorobject.StatusClientClosed
}

// responseWriter notes whether the response has started, so that an error
// after that point is only logged (the status line is gone), and makes sure
// the headers the gateway owns appear once: reverse_proxy copies upstream
// response headers with Add, and an upstream that echoes Request-Id or
// Api-Version would otherwise produce a second value.
type responseWriter struct {
	http.ResponseWriter
	id          string
	wroteHeader bool
}

func (w *responseWriter) WriteHeader(status int) {
	// 1xx are interim responses, except 101 after which the connection
	// belongs to another protocol.
	if !w.wroteHeader && (status >= 200 || status == http.StatusSwitchingProtocols) {
		w.started()
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *responseWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.started()
	}
	return w.ResponseWriter.Write(b)
}

// ReadFrom keeps the underlying writer's sendfile/splice path.
func (w *responseWriter) ReadFrom(r io.Reader) (int64, error) {
	if !w.wroteHeader {
		w.started()
	}
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(w.ResponseWriter, r)
}

// FlushError flushes the underlying writer (http.ResponseController).
func (w *responseWriter) FlushError() error {
	if !w.wroteHeader {
		w.started()
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the connection (hijacking for
// WebSockets, deadlines, full duplex).
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *responseWriter) started() {
	w.wroteHeader = true
	h := w.ResponseWriter.Header()
	if v := h[Header]; len(v) != 1 || v[0] != w.id {
		h[Header] = []string{w.id}
	}
	if v := h[apiversion.Header]; len(v) > 1 {
		h[apiversion.Header] = v[:1]
	}
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ http.ResponseWriter         = (*responseWriter)(nil)
	_ io.ReaderFrom               = (*responseWriter)(nil)
)
