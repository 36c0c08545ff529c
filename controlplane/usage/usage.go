// Package usage is the usage API of the control plane: GET /v1/usage reads
// the metered quantities the request log ingester (controlplane/ingest)
// keeps in usage_records — per metric, API key and UTC day — for the
// caller's organisation and environment.
package usage

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/gatehouse/gatehouse/controlplane/router"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/ids"
)

// Scope is what a restricted key needs to read usage.
const Scope = "usage:read"

// Range limits: the default window is the last DefaultDays days, and one
// request reads at most MaxDays days.
const (
	DefaultDays = 30
	MaxDays     = 366
)

// DB is what the API needs from Postgres: a *pgxpool.Pool.
type DB interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// API serves /v1/usage.
type API struct {
	db  DB
	log *zap.Logger
	now func() time.Time
}

// New returns the API over db; log and now may be nil.
func New(db DB, log *zap.Logger, now func() time.Time) *API {
	if log == nil {
		log = zap.NewNop()
	}
	if now == nil {
		now = time.Now
	}
	return &API{db: db, log: log, now: now}
}

// Register adds the route (router.Routes).
func (a *API) Register(r *router.Router) {
	r.HandleFunc("GET /v1/usage", a.list)
}

// Record is one metered quantity. APIKey is null when grouped by day, Date
// when grouped by key.
type Record struct {
	Object   string  `json:"object"`
	Metric   string  `json:"metric"`
	APIKey   *string `json:"api_key"`
	Date     *string `json:"date"`
	Quantity int64   `json:"quantity"`
	Livemode bool    `json:"livemode"`
}

// Query selects usage. Start and End are UTC days, both included.
type Query struct {
	Start, End time.Time
	APIKey     string
	Metric     string
	GroupBy    string // "", "day" or "key"
}

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	id, err := router.Caller(r, Scope)
	if err == nil {
		var q Query
		if q, err = ParseQuery(r.URL.Query(), a.now()); err == nil {
			var recs []Record
			if recs, err = List(r.Context(), a.db, id.OrgID, id.Livemode, q); err == nil {
				router.WriteJSON(w, http.StatusOK, router.NewList("/v1/usage", recs, false))
				return
			}
		}
	}
	router.Fail(w, r, a.log, "usage", err)
}

var metricRe = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)

// ParseQuery reads the query parameters against today's date at now.
func ParseQuery(vals map[string][]string, now time.Time) (Query, error) {
	today := day(now)
	q := Query{End: today, Start: today.AddDate(0, 0, -(DefaultDays - 1))}
	startSet := false
	for _, key := range slices.Sorted(maps.Keys(vals)) {
		if len(vals[key]) > 1 {
			return q, apierror.ParameterInvalid(router.Printable(key), fmt.Sprintf("Parameter %s was sent more than once.", router.Printable(key)))
		}
		v := vals[key][0]
		switch key {
		case "start", "end":
			d, ok := parseDay(v)
			if !ok {
				return q, apierror.ParameterInvalid(key,
					fmt.Sprintf("Invalid %s: expected a date (2026-01-31) or a unix timestamp in seconds.", key))
			}
			if key == "start" {
				q.Start, startSet = d, true
			} else {
				q.End = d
			}
		case "api_key":
			if !ids.Valid(v, ids.Key) {
				return q, apierror.ParameterInvalid(key, "Invalid api_key: expected an API key id (key_…).")
			}
			q.APIKey = v
		case "metric":
			if !metricRe.MatchString(v) {
				return q, apierror.ParameterInvalid(key, "Invalid metric: expected a metric name such as requests.")
			}
			q.Metric = v
		case "group_by":
			if v != "day" && v != "key" {
				return q, apierror.ParameterInvalid(key, "Invalid group_by: expected day or key.")
			}
			q.GroupBy = v
		default:
			return q, apierror.InvalidRequest("parameter_unknown", router.Printable(key),
				fmt.Sprintf("Received unknown parameter: %s.", router.Printable(key)))
		}
	}
	if !startSet {
		q.Start = q.End.AddDate(0, 0, -(DefaultDays - 1))
	}
	if q.Start.After(q.End) {
		return q, apierror.ParameterInvalid("start", "Invalid start: it is after end.")
	}
	if days := int(q.End.Sub(q.Start).Hours()/24) + 1; days > MaxDays {
		return q, apierror.ParameterInvalid("start",
			fmt.Sprintf("Invalid range: at most %d days per request (this one spans %d).", MaxDays, days))
	}
	return q, nil
}

func parseDay(v string) (time.Time, bool) {
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		return t, true
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > 1<<40 {
		return time.Time{}, false
	}
	return day(time.Unix(n, 0)), true
}

func day(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// List returns org's environment's usage, newest day first. Days are
// formatted by to_char, not a cast, so a server or role whose DateStyle is not
// ISO still answers YYYY-MM-DD.
func List(ctx context.Context, db DB, org string, livemode bool, q Query) ([]Record, error) {
	where := `organization_id = $1 AND livemode = $2 AND day >= $3 AND day <= $4
		AND ($5 = '' OR api_key_id = $5) AND ($6 = '' OR metric = $6)`
	var sql string
	switch q.GroupBy {
	case "day":
		sql = `SELECT metric, NULL::text AS api_key_id, to_char(day, 'YYYY-MM-DD'), sum(quantity)::bigint FROM usage_records WHERE ` + where + `
			GROUP BY metric, day ORDER BY day DESC, metric`
	case "key":
		sql = `SELECT metric, api_key_id, NULL::text AS day, sum(quantity)::bigint FROM usage_records WHERE ` + where + `
			GROUP BY metric, api_key_id ORDER BY metric, api_key_id`
	default:
		sql = `SELECT metric, api_key_id, to_char(day, 'YYYY-MM-DD'), quantity FROM usage_records WHERE ` + where + `
			ORDER BY day DESC, metric, api_key_id`
	}
	rows, err := db.Query(ctx, sql, org, livemode, q.Start, q.End, q.APIKey, q.Metric)
	if err != nil {
		return nil, fmt.Errorf("listing usage: %w", err)
	}
	recs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Record, error) {
		rec := Record{Object: "usage_record", Livemode: livemode}
		err := row.Scan(&rec.Metric, &rec.APIKey, &rec.Date, &rec.Quantity)
		if rec.APIKey != nil && *rec.APIKey == "" {
			rec.APIKey = nil
		}
		return rec, err
	})
	if err != nil {
		return nil, fmt.Errorf("listing usage: %w", err)
	}
	if recs == nil {
		recs = []Record{}
	}
	return recs, nil
}

var _ router.Routes = (*API)(nil)
