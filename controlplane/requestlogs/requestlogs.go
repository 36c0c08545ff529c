// Package requestlogs is the request logs API of the control plane:
// GET /v1/request-logs and GET /v1/request-logs/{id}, over the rows the
// ingester (controlplane/ingest) writes. Every query is scoped to the
// caller's organisation and environment; another tenant's request log is a
// 404. List and Get are exported for the dashboard.
package requestlogs

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/gatehouse/gatehouse/controlplane/router"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ids"
)

// Scope is what a restricted key needs to read request logs.
const Scope = "logs:read"

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
			err = apierror.NotFound("request log", router.Printable(r.PathValue("id")))
		case errors.As(err, &ce):
			err = apierror.ParameterInvalid(ce.param, fmt.Sprintf("Invalid %s: no such request log: '%s'.", ce.param, ce.id))
		}
		router.Fail(w, r, a.log, "request logs", err)
	}
}

func (a *API) get(w http.ResponseWriter, r *http.Request, id identity.Identity) error {
	if err := router.NoQuery(r); err != nil {
		return err
	}
	o, err := Get(r.Context(), a.db, id.OrgID, id.Livemode, r.PathValue("id"))
	if err != nil {
		return err
	}
	router.WriteJSON(w, http.StatusOK, o)
	return nil
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
	router.WriteJSON(w, http.StatusOK, router.NewList("/v1/request-logs", page, more))
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
	var q Query
	page, err := router.ParseList(vals, router.ListSpec{IDPrefix: ids.Request, Object: "a request", Created: true},
		func(key, v string) (bool, error) {
			invalid := func(want string) error {
				return apierror.ParameterInvalid(key, fmt.Sprintf("Invalid %s: expected %s.", key, want))
			}
			switch key {
			case "status":
				switch {
				case statusExact.MatchString(v):
					q.Status, _ = strconv.Atoi(v)
				case statusClass.MatchString(v):
					q.StatusClass = int(v[0] - '0')
				default:
					return true, invalid("a status code (404) or class (4xx)")
				}
			case "method":
				if !methodRe.MatchString(v) {
					return true, invalid("an HTTP method (GET, POST, …)")
				}
				q.Method = strings.ToUpper(v)
			case "path":
				if !strings.HasPrefix(v, "/") || len(v) > 2048 || !utf8.ValidString(v) || strings.IndexByte(v, 0) >= 0 {
					return true, invalid("a path prefix starting with /")
				}
				q.PathPrefix = v
			case "api_key":
				if !ids.Valid(v, ids.Key) {
					return true, invalid("an API key id (key_…)")
				}
				q.APIKey = v
			case "request_id":
				if !ids.Valid(v, ids.Request) {
					return true, invalid("a request id (req_…)")
				}
				q.RequestID = v
			case "error_code":
				if !errorCodeRe.MatchString(v) {
					return true, invalid("an error code such as resource_missing")
				}
				q.ErrorCode = v
			default:
				return false, nil
			}
			return true, nil
		})
	q.Limit, q.StartingAfter, q.EndingBefore = page.Limit, page.StartingAfter, page.EndingBefore
	q.CreatedGTE, q.CreatedLT = page.CreatedGTE, page.CreatedLT
	return q, err
}

var _ router.Routes = (*API)(nil)
