// Package errorobject is where the Gatehouse Caddy modules turn any failure
// into the platform's error object (DESIGN §5). It maps Caddy handler errors
// (reverse_proxy's 502/504, request_body's 413, …) to public codes without
// leaking their internal text, renders with apierror.Write, and exposes the
// outcome as placeholders so access and request logs can record it.
package errorobject

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/config"
)

// The gateway's error objects point their doc_url at DOCS_URL, as the other
// processes' do (they set it in main; a gateway built by xcaddy has no main
// of ours, so it is read when the modules load).
func init() { apierror.SetDocsBase(config.String("DOCS_URL", apierror.DefaultDocsBase)) }

// Placeholders set on the request's replacer when an error object is written.
const (
	PlaceholderType    = "http.api_error.type"
	PlaceholderCode    = "http.api_error.code"
	PlaceholderMessage = "http.api_error.message"
	PlaceholderParam   = "http.api_error.param"
)

// StatusClientClosed is the status Caddy reports when the client went away
// before the response (nginx's 499); nobody reads a body for it.
const StatusClientClosed = 499

// varBodyWatch holds the *bodyWatch of a request (WatchBody).
const varBodyWatch = "gatehouse.body_watch"

// bodyWatch remembers the first error reading the client's body gave,
// other than its end: a chunked body with broken framing, a connection
// that failed mid-body. Handlers past it (reverse_proxy) report such an
// error as their own failure, a 502; it is the client's.
//
// It also keeps an HTTP/1 connection framed. A handler that closes the
// body before its end (reverse_proxy once request_body's limit cuts it
// off, or once the upstream answered without reading it) closes net/http's
// body; net/http then drains at most 256 KiB of it and marks the
// connection for closing when more is left — but it looks for that mark
// on the body it gave the handler, and Caddy has replaced that body with
// its read idle timeout's wrapper, so the mark is missed, the connection
// is kept, and the rest of the refused body is parsed as the next
// requests (request smuggling, behind any proxy that shares connections
// between clients). So an HTTP/1 body not read to its end is not closed
// here: later reads fail as after a close, and net/http, finding the body
// unread after the handler, drains what it can and closes the connection
// when more is left, as it does for a handler that never read its body.
//
// The fields are atomic: reverse_proxy's transport reads and closes the
// body on its own goroutine, which may still run when the chain has
// returned.
type bodyWatch struct {
	io.ReadCloser
	http1  bool
	failed atomic.Bool
	ended  atomic.Bool // read to io.EOF
	closed atomic.Bool // closed before its end (HTTP/1 only)
}

func (b *bodyWatch) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, http.ErrBodyReadAfterClose
	}
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		b.ended.Store(true)
	case err != nil:
		b.failed.Store(true)
	}
	return n, err
}

func (b *bodyWatch) Close() error {
	if b.http1 && !b.ended.Load() {
		b.closed.Store(true)
		return nil
	}
	return b.ReadCloser.Close()
}

// WatchBody wraps r's body so that ForRequest can tell a failure to read
// it from a failure of the handler that was reading, and so that an HTTP/1
// body closed before its end leaves the connection framed (see bodyWatch).
// Call it before any other handler wraps the body (a size limit's error is
// not a read error).
func WatchBody(r *http.Request) {
	if r.Body == nil || r.Body == http.NoBody {
		return
	}
	b := &bodyWatch{ReadCloser: r.Body, http1: r.ProtoMajor == 1}
	r.Body = b
	caddyhttp.SetVar(r.Context(), varBodyWatch, b)
}

// ForRequest is From for a request whose body WatchBody watched: a chain
// that failed because the client's body could not be read answers 400.
func ForRequest(r *http.Request, err error) *apierror.Error {
	e := From(err)
	if e.Status < 500 {
		return e
	}
	if b, ok := caddyhttp.GetVar(r.Context(), varBodyWatch).(*bodyWatch); ok && b.failed.Load() {
		// Not the Go error's text: it can name the gateway's addresses.
		return apierror.InvalidRequest("body_invalid", "",
			"The request body could not be read: its chunked framing is broken, or the connection failed while sending it.")
	}
	return e
}

// From maps err, as returned by a handler chain, to the public error object.
// *apierror.Error values (also inside caddyhttp.HandlerError) pass through;
// everything else is classified by its status code with a generic message,
// because internal error text (dial addresses, Go errors) must not leak.
func From(err error) *apierror.Error {
	if e, ok := errors.AsType[*apierror.Error](err); ok {
		return e
	}
	if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return apierror.New(http.StatusRequestEntityTooLarge, apierror.TypeInvalidRequest, "body_too_large",
			fmt.Sprintf("The request body is larger than the %d bytes this endpoint accepts.", mbe.Limit))
	}
	status := http.StatusInternalServerError
	if he, ok := errors.AsType[caddyhttp.HandlerError](err); ok && he.StatusCode != 0 {
		status = he.StatusCode
	}
	return ForStatus(status)
}

// ForStatus is the generic error object for a bare HTTP status.
func ForStatus(status int) *apierror.Error {
	switch status {
	case http.StatusNotFound:
		return apierror.New(status, apierror.TypeInvalidRequest, "route_missing", "No API endpoint matches this method and path.")
	case http.StatusMethodNotAllowed:
		return apierror.New(status, apierror.TypeInvalidRequest, "method_not_allowed", "The endpoint exists but does not accept this HTTP method.")
	case http.StatusRequestEntityTooLarge:
		return apierror.New(status, apierror.TypeInvalidRequest, "body_too_large", "The request body is larger than this endpoint accepts.")
	case http.StatusTooManyRequests:
		return apierror.New(status, apierror.TypeRateLimit, "rate_limited", "Too many requests. Slow down and retry later.")
	case http.StatusBadGateway:
		return apierror.New(status, apierror.TypeAPI, "upstream_unavailable",
			"The service behind the gateway could not be reached or failed to answer. Retry later; if it persists, contact support with the request id.")
	case http.StatusServiceUnavailable:
		return apierror.New(status, apierror.TypeAPI, "service_unavailable",
			"The service behind the gateway is temporarily unable to take requests. Retry later.")
	case http.StatusGatewayTimeout:
		return apierror.New(status, apierror.TypeAPI, "upstream_timeout",
			"The service behind the gateway took too long to answer. Retry later; if it persists, contact support with the request id.")
	}
	switch {
	case status == http.StatusUnauthorized:
		return apierror.New(status, apierror.TypeAuthentication, "request_invalid", "This request requires authentication.")
	case status == http.StatusForbidden:
		return apierror.New(status, apierror.TypePermission, "request_invalid", "This request is not allowed.")
	case status >= 400 && status < 500:
		return apierror.New(status, apierror.TypeInvalidRequest, "request_invalid",
			fmt.Sprintf("The request was refused (%d %s).", status, http.StatusText(status)))
	case status >= 500 && status < 600:
		e := apierror.Internal()
		e.Status = status
		return e
	}
	return apierror.Internal()
}

// Write renders e on w, records it in the placeholders of r and counts it.
// The Request-Id response header must already be set: apierror.Write copies
// it into the body.
func Write(w http.ResponseWriter, r *http.Request, e *apierror.Error) {
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set(PlaceholderType, string(e.Type))
		repl.Set(PlaceholderCode, e.Code)
		repl.Set(PlaceholderMessage, e.Message)
		repl.Set(PlaceholderParam, e.Param)
	}
	responses.WithLabelValues(string(e.Type), e.Code).Inc()
	apierror.Write(w, e)
}

var (
	responses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "gatehouse",
		Name:      "error_responses_total",
		Help:      "Error objects written by the gateway itself, by type and code.",
	}, []string{"type", "code"})
)

// RegisterMetrics registers the error counter in reg; Caddy makes a new
// registry per config load and the counter carries over.
func RegisterMetrics(reg *prometheus.Registry) error { return Register(reg, responses) }

// Register registers c in reg, tolerating c being there already: several
// handler instances of one config share a registry.
func Register(reg *prometheus.Registry, cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			if _, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); !ok {
				return err
			}
		}
	}
	return nil
}
