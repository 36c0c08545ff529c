// Package apierror is the one error object of the platform (DESIGN §5). The
// gateway, the control plane and the sample API all answer failures with it,
// so a developer sees the same shape whichever component refused a request.
package apierror

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"unicode"
	"unicode/utf8"
)

// Type is the broad class of an error; clients branch on it.
type Type string

// The error types of DESIGN §5.
const (
	TypeAuthentication Type = "authentication_error" // 401
	TypePermission     Type = "permission_error"     // 403
	TypeInvalidRequest Type = "invalid_request_error"
	TypeIdempotency    Type = "idempotency_error" // 409, 422
	TypeRateLimit      Type = "rate_limit_error"  // 429
	TypeAPI            Type = "api_error"         // 5xx
)

// Error is the public error object. It implements error so domain code can
// return it and one place (Write) renders it.
type Error struct {
	// Status is the HTTP status code; it is not part of the JSON body.
	Status    int    `json:"-"`
	Type      Type   `json:"type"`
	Code      string `json:"code,omitempty"`
	Message   string `json:"message"`
	Param     string `json:"param,omitempty"`
	DocURL    string `json:"doc_url,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	// RetryAfter, when positive, is sent as the Retry-After header (seconds).
	RetryAfter int `json:"-"`
}

func (e *Error) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("%s (%s): %s", e.Type, e.Code, e.Message)
	}
	return fmt.Sprintf("%s: %s", e.Type, e.Message)
}

// WithParam returns a copy of e naming the offending parameter.
func (e *Error) WithParam(param string) *Error {
	c := *e
	c.Param = param
	return &c
}

// New builds an error of the given status, type and code.
func New(status int, typ Type, code, message string) *Error {
	return &Error{Status: status, Type: typ, Code: code, Message: message}
}

// InvalidRequest is a 400 invalid_request_error about param.
func InvalidRequest(code, param, message string) *Error {
	return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Code: code, Param: param, Message: message}
}

// ParameterMissing is the error for a required parameter that was not sent.
func ParameterMissing(param string) *Error {
	return InvalidRequest("parameter_missing", param, "Missing required param: "+param+".")
}

// ParameterInvalid is the error for a parameter whose value is unacceptable.
func ParameterInvalid(param, message string) *Error {
	return InvalidRequest("parameter_invalid", param, message)
}

// CheckText refuses a string that Postgres cannot store as text: invalid
// UTF-8, or NUL. Every service checks what it stores with it, so that such
// input is a 400 naming the parameter, never a 500 from the database.
func CheckText(param, v string) error {
	if !utf8.ValidString(v) {
		return ParameterInvalid(param, fmt.Sprintf("Invalid %s: strings must be valid UTF-8.", param))
	}
	if strings.IndexByte(v, 0) >= 0 {
		return ParameterInvalid(param, fmt.Sprintf("Invalid %s: must not contain NUL characters.", param))
	}
	return nil
}

// StatusFits reports whether status is one an error of type t is sent
// with: authentication_error 401, permission_error 403, idempotency_error
// 409 or 422, rate_limit_error 429, api_error 5xx, invalid_request_error
// any other 4xx.
func StatusFits(t Type, status int) bool {
	switch t {
	case TypeAuthentication:
		return status == 401
	case TypePermission:
		return status == 403
	case TypeIdempotency:
		return status == 409 || status == 422
	case TypeRateLimit:
		return status == 429
	case TypeAPI:
		return status >= 500 && status <= 599
	case TypeInvalidRequest:
		return status >= 400 && status <= 499 && status != 401 && status != 403 && status != 429
	}
	return false
}

// CheckName is CheckText for a one-line name (an organisation's, a key's):
// control characters (line breaks, tabs, terminal escapes) and the
// bidirectional overrides that reorder what a reader sees are refused too,
// so a name cannot forge a line of the CLI's tables or a log.
func CheckName(param, v string) error {
	if err := CheckText(param, v); err != nil {
		return err
	}
	for _, r := range v {
		if unicode.IsControl(r) || r >= '\u202a' && r <= '\u202e' || r >= '\u2066' && r <= '\u2069' {
			return ParameterInvalid(param, fmt.Sprintf("Invalid %s: must not contain control characters (%U).", param, r))
		}
	}
	return nil
}

// BadURL is the error for a request URL no handler should see: a path
// that is not in canonical form (empty or dot segments, which Go's mux
// would answer with a redirect) is a 404 route_missing, a query string
// that does not parse (bad escapes, ';' separators, which url.Values
// would silently drop) a 400. nil when the URL is fine.
func BadURL(r *http.Request) *Error {
	p := r.URL.Path
	if p == "" || p[0] != '/' || strings.Contains(p, "//") || path.Clean(p) != p && path.Clean(p)+"/" != p {
		return New(http.StatusNotFound, TypeInvalidRequest, "route_missing",
			"Unrecognized request URL ("+r.Method+": "+p+").")
	}
	if _, err := url.ParseQuery(r.URL.RawQuery); err != nil {
		return InvalidRequest("request_invalid", "", "The query string could not be parsed: "+err.Error()+".")
	}
	return nil
}

// NotFound is the 404 for an object that does not exist for the caller. It
// is also the answer for another tenant's or environment's objects, so that
// their existence is not revealed.
func NotFound(object, id string) *Error {
	return &Error{Status: http.StatusNotFound, Type: TypeInvalidRequest, Code: "resource_missing", Param: "id",
		Message: fmt.Sprintf("No such %s: '%s'", object, id)}
}

// Authentication is a 401.
func Authentication(code, message string) *Error {
	return &Error{Status: http.StatusUnauthorized, Type: TypeAuthentication, Code: code, Message: message}
}

// Permission is a 403.
func Permission(code, message string) *Error {
	return &Error{Status: http.StatusForbidden, Type: TypePermission, Code: code, Message: message}
}

// Internal is the 500 for a failure that is ours, never the caller's. The
// message is deliberately generic: details go to the logs with the request id.
func Internal() *Error {
	return &Error{Status: http.StatusInternalServerError, Type: TypeAPI, Code: "internal_error",
		Message: "An unexpected error occurred on our side. Retry later; if it persists, contact support with the request id."}
}

// Unavailable is a 503 for a dependency that is down.
func Unavailable(code, message string) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Type: TypeAPI, Code: code, Message: message}
}

// From turns any error into the public error object: *Error values pass
// through, everything else becomes Internal (its text must not leak).
func From(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return Internal()
}

// docsBase is where doc_url anchors point; see SetDocsBase.
var docsBase atomic.Pointer[string]

// SetDocsBase sets the absolute URL of the error reference page; each error's
// doc_url is that URL plus "#" and the code. Called once at start-up.
func SetDocsBase(url string) { docsBase.Store(&url) }

// DefaultDocsBase is the dashboard's error reference when nothing is configured.
const DefaultDocsBase = "http://localhost:8081/docs/errors"

// DocURL is the documentation address of an error code.
func DocURL(code string) string {
	base := DefaultDocsBase
	if p := docsBase.Load(); p != nil {
		base = *p
	}
	return base + "#" + code
}

type body struct {
	Error *Error `json:"error"`
}

// Write renders err as the error object with its status. The request id is
// taken from the response's Request-Id header when the error has none, so
// every component only has to set that header once per request.
func Write(w http.ResponseWriter, err error) {
	e := *From(err)
	if e.RequestID == "" {
		e.RequestID = w.Header().Get("Request-Id")
	}
	if e.DocURL == "" && e.Code != "" {
		e.DocURL = DocURL(e.Code)
	}
	if e.Status == 0 {
		e.Status = http.StatusInternalServerError
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Del("Content-Length")
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	w.WriteHeader(e.Status)
	b, _ := json.Marshal(body{&e})
	_, _ = w.Write(append(b, '\n'))
}
