// Package requestlogs is the request logs API of the control plane:
// GET /v1/request-logs and GET /v1/request-logs/{id}, over the rows the
// ingester (controlplane/ingest) writes. Every query is scoped to the
// caller's organisation and environment; another tenant's request log is a
// 404. List and Get are exported for the dashboard.
package requestlogs

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/gatehouse/gatehouse/controlplane/router"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ids"
)

// Scope is what a restricted key needs to read request logs.
const Scope = "logs:read"

// List limits of DESIGN §5.
const (
	DefaultListLimit = 10
	MaxListLimit     = 100
)

// API serves /v1/request-logs.
type API struct {
	db  DB
	log *zap.Logger
}

// New returns the API over db; log may be nil.
func New(db DB, log *zap.Logger) *API {
	if log == nil {
		log = zap.NewNop()
	}
	return &API{db: db, log: log}
}

// Register adds the routes (router.Routes).
func (a *API) Register(r *router.Router) {
	r.HandleFunc("GET /v1/request-logs", a.handle(a.list))
	r.HandleFunc("GET /v1/request-logs/{id}", a.handle(a.get))
}

// handle checks the caller's scope and turns the endpoint's error into the
// error object, in one place.
func (a *API) handle(h func(http.ResponseWriter, *http.Request, identity.Identity) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := router.Caller(r, Scope)
		if err == nil {
			err = h(w, r, id)
		}
		if err == nil {
			return
		}
		var ce errCursor
		switch {
		case errors.Is(err, ErrNotFound):
			err = apierror.NotFound("request log", printable(r.PathValue("id")))
		case errors.As(err, &ce):
			err = apierror.ParameterInvalid(ce.param, fmt.Sprintf("Invalid %s: no such request log: '%s'.", ce.param, ce.id))
		}
		e := apierror.From(err)
		if e.Status >= http.StatusInternalServerError {
			a.log.Error("request logs api request failed", zap.String("request_id", w.Header().Get(identity.HeaderRequestID)),
				zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.Error(err))
		}
		apierror.Write(w, e)
	}
}

func (a *API) get(w http.ResponseWriter, r *http.Request, id identity.Identity) error {
	for key := range r.URL.Query() {
		return unknownParam(key)
	}
	o, err := Get(r.Context(), a.db, id.OrgID, id.Livemode, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, o)
	return nil
}

type listObject struct {
	Object  string   `json:"object"`
	URL     string   `json:"url"`
	HasMore bool     `json:"has_more"`
	Data    []Object `json:"data"`
}

func (a *API) list(w http.ResponseWriter, r *http.Request, id identity.Identity) error {
	q, err := ParseQuery(r.URL.Query())
	if err != nil {
		return err
	}
	page, more, err := List(r.Context(), a.db, id.OrgID, id.Livemode, q)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, listObject{Object: "list", URL: "/v1/request-logs", HasMore: more, Data: page})
	return nil
}

var (
	statusExact = regexp.MustCompile(`^[1-5][0-9][0-9]$`)
	statusClass = regexp.MustCompile(`^[1-5][xX][xX]$`)
	methodRe    = regexp.MustCompile(`^[A-Za-z]{1,20}$`)
	errorCodeRe = regexp.MustCompile(`^[a-z0-9_]{1,64}$`)
)

// ParseQuery reads a list's query parameters; a bad value is a 400
// parameter_invalid naming the parameter.
func ParseQuery(vals map[string][]string) (Query, error) {
	q := Query{Limit: DefaultListLimit}
	for _, key := range slices.Sorted(maps.Keys(vals)) {
		if len(vals[key]) > 1 {
			return q, apierror.ParameterInvalid(printable(key), fmt.Sprintf("Parameter %s was sent more than once.", printable(key)))
		}
		v := vals[key][0]
		invalid := func(want string) error {
			return apierror.ParameterInvalid(key, fmt.Sprintf("Invalid %s: expected %s.", key, want))
		}
		switch key {
		case "limit":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > MaxListLimit {
				return q, invalid(fmt.Sprintf("an integer from 1 to %d", MaxListLimit))
			}
			q.Limit = n
		case "starting_after", "ending_before":
			if !ids.Valid(v, ids.Request) {
				return q, invalid("a request id (req_…)")
			}
			if key == "starting_after" {
				q.StartingAfter = v
			} else {
				q.EndingBefore = v
			}
		case "status":
			switch {
			case statusExact.MatchString(v):
				q.Status, _ = strconv.Atoi(v)
			case statusClass.MatchString(v):
				q.StatusClass = int(v[0] - '0')
			default:
				return q, invalid("a status code (404) or class (4xx)")
			}
		case "method":
			if !methodRe.MatchString(v) {
				return q, invalid("an HTTP method (GET, POST, …)")
			}
			q.Method = strings.ToUpper(v)
		case "path":
			if !strings.HasPrefix(v, "/") || len(v) > 2048 || !utf8.ValidString(v) || strings.IndexByte(v, 0) >= 0 {
				return q, invalid("a path prefix starting with /")
			}
			q.PathPrefix = v
		case "api_key":
			if !ids.Valid(v, ids.Key) {
				return q, invalid("an API key id (key_…)")
			}
			q.APIKey = v
		case "request_id":
			if !ids.Valid(v, ids.Request) {
				return q, invalid("a request id (req_…)")
			}
			q.RequestID = v
		case "error_code":
			if !errorCodeRe.MatchString(v) {
				return q, invalid("an error code such as resource_missing")
			}
			q.ErrorCode = v
		case "created", "created[gte]", "created[gt]", "created[lt]", "created[lte]":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 || n > 1<<40 {
				return q, invalid("a unix timestamp in seconds")
			}
			t := time.Unix(n, 0)
			switch key {
			case "created":
				end := t.Add(time.Second)
				q.CreatedGTE, q.CreatedLT = maxTime(q.CreatedGTE, &t), minTime(q.CreatedLT, &end)
			case "created[gte]":
				q.CreatedGTE = maxTime(q.CreatedGTE, &t)
			case "created[gt]":
				// Timestamps are in seconds and created_at in microseconds:
				// after second n means from n+1.
				after := t.Add(time.Second)
				q.CreatedGTE = maxTime(q.CreatedGTE, &after)
			case "created[lt]":
				q.CreatedLT = minTime(q.CreatedLT, &t)
			default:
				end := t.Add(time.Second)
				q.CreatedLT = minTime(q.CreatedLT, &end)
			}
		default:
			return q, unknownParam(key)
		}
	}
	if q.StartingAfter != "" && q.EndingBefore != "" {
		return q, apierror.ParameterInvalid("ending_before",
			"Pass starting_after or ending_before, not both: they page in opposite directions.")
	}
	return q, nil
}

func maxTime(a, b *time.Time) *time.Time {
	if a != nil && a.After(*b) {
		return a
	}
	return b
}

func minTime(a, b *time.Time) *time.Time {
	if a != nil && a.Before(*b) {
		return a
	}
	return b
}

func unknownParam(key string) error {
	return apierror.InvalidRequest("parameter_unknown", printable(key),
		fmt.Sprintf("Received unknown parameter: %s.", printable(key)))
}

// printable keeps invalid bytes of a parameter out of error messages.
func printable(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own types reach here; failing to encode them is a bug.
		apierror.Write(w, fmt.Errorf("encoding response: %w", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

var _ router.Routes = (*API)(nil)
