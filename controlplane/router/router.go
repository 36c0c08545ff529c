// Package router is the control plane's /v1 API mux. Each capability
// (events, webhook endpoints, deliveries, request logs, usage) lives in its
// own package and adds its routes through a Routes value; the router makes
// sure that whatever no route claims is still answered with the platform's
// error object, never with net/http's plain-text 404 or 405. It also reads
// request bodies for every capability (Params, in params.go), so JSON and
// Stripe-style form bodies are parsed, limited and refused alike across
// the API.
package router

import (
	"net/http"

	"github.com/gatehouse/gatehouse/internal/apierror"
)

// MaxBodyBytes is the largest request body the /v1 API reads (DESIGN's
// body_too_large code documents 1 MB).
const MaxBodyBytes = 1 << 20

// Routes is implemented by each capability package:
//
//	func (h *Handler) Register(r *router.Router) {
//		r.HandleFunc("GET /v1/events", h.list)
//		r.HandleFunc("GET /v1/events/{id}", h.get)
//	}
type Routes interface {
	Register(r *Router)
}

// Router is an http.ServeMux (Go 1.22 method and wildcard patterns) whose
// misses become error objects: route_missing (404) when no pattern matches
// the path, method_not_allowed (405, with Allow) when one matches the path
// but not the method.
type Router struct {
	mux *http.ServeMux
}

// New returns a router with the given capabilities registered.
func New(routes ...Routes) *Router {
	r := &Router{mux: http.NewServeMux()}
	for _, rs := range routes {
		rs.Register(r)
	}
	return r
}

// Handle registers h for a ServeMux pattern such as "POST /v1/events".
func (r *Router) Handle(pattern string, h http.Handler) { r.mux.Handle(pattern, h) }

// HandleFunc registers f for a ServeMux pattern.
func (r *Router) HandleFunc(pattern string, f http.HandlerFunc) { r.mux.HandleFunc(pattern, f) }

// ServeHTTP dispatches to the matching route or answers the miss.
func (r *Router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	h, pattern := r.mux.Handler(req)
	if pattern == "" {
		// No route: h is the mux's own 404 or 405 handler. Run it against
		// a recorder only to learn which, and the Allow header it computed.
		rec := &missRecorder{header: http.Header{}}
		h.ServeHTTP(rec, req)
		if rec.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", rec.header.Get("Allow"))
			apierror.Write(w, apierror.New(http.StatusMethodNotAllowed, apierror.TypeInvalidRequest, "method_not_allowed",
				"The endpoint "+req.URL.Path+" does not accept "+req.Method+" requests."))
			return
		}
		apierror.Write(w, RouteMissing(req))
		return
	}
	if req.Body != nil {
		req.Body = http.MaxBytesReader(w, req.Body, MaxBodyBytes)
	}
	r.mux.ServeHTTP(w, req)
}

// RouteMissing is the error for a method and path no endpoint serves.
func RouteMissing(req *http.Request) *apierror.Error {
	return apierror.New(http.StatusNotFound, apierror.TypeInvalidRequest, "route_missing",
		"Unrecognized request URL ("+req.Method+": "+req.URL.Path+").")
}

// missRecorder captures the status and headers of the mux's fallback
// handlers and discards their plain-text body.
type missRecorder struct {
	header http.Header
	status int
}

func (m *missRecorder) Header() http.Header { return m.header }
func (m *missRecorder) WriteHeader(code int) {
	if m.status == 0 {
		m.status = code
	}
}
func (m *missRecorder) Write(b []byte) (int, error) {
	if m.status == 0 {
		m.status = http.StatusOK
	}
	return len(b), nil
}

var _ http.Handler = (*Router)(nil)
