// Package usage is the usage API of the control plane: GET /v1/usage reads
// the metered quantities the request log ingester (controlplane/ingest)
// keeps in usage_records — per metric, API key and UTC day — for the
// caller's organisation and environment.
package usage

import (
	"cmp"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
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

// Record is one metered quantity: a metric for an API key on a UTC day, or
// (GroupBy) its sum over the keys (APIKey null) or over the days of the
// range (Date null).
type Record struct {
	// ID names what the record counts (recordID): a cursor for paging.
	ID     string `json:"id"`
	Object string `json:"object"`
	// Created is the start of the day counted (of the range's first day
	// when summed over the days).
	Created  int64   `json:"created"`
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
	// Page is the limit and the cursor; After and Before are the cursor's
	// position.
	Page          router.ListQuery
	After, Before *position
}

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	id, err := router.Caller(r, Scope)
	if err == nil {
		var q Query
		if q, err = ParseQuery(r.URL.Query(), a.now()); err == nil {
			var recs []Record
			var more bool
			if recs, more, err = List(r.Context(), a.db, id.OrgID, id.Livemode, q); err == nil {
				router.WriteJSON(w, http.StatusOK, router.NewList("/v1/usage", recs, more))
				return
			}
		}
	}
	router.Fail(w, r, a.log, "usage", err)
}

var metricRe = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)

// IDPrefix starts a usage record's id.
const IDPrefix = "ur"

// position is what a record counts, the order lists are in: its grouping
// ("" per key and day, "day" or "key"), day ("" when summed over the
// days), metric and key ("" for the organisation's own, or when summed over
// the keys).
type position struct {
	group, day, metric, key string
}

// recordID is the record's id: ur_ and its position, base64url-encoded.
func recordID(p position) string {
	return IDPrefix + "_" + base64.RawURLEncoding.EncodeToString([]byte(strings.Join([]string{p.group, p.day, p.metric, p.key}, "|")))
}

// parseID is recordID reversed; it refuses what no record could have.
func parseID(id string) (position, bool) {
	body, ok := strings.CutPrefix(id, IDPrefix+"_")
	if !ok || len(body) > 256 {
		return position{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(body)
	f := strings.Split(string(raw), "|")
	if err != nil || len(f) != 4 {
		return position{}, false
	}
	p := position{group: f[0], day: f[1], metric: f[2], key: f[3]}
	if !metricRe.MatchString(p.metric) || p.key != "" && !ids.Valid(p.key, ids.Key) {
		return position{}, false
	}
	if _, err := time.Parse(time.DateOnly, p.day); err != nil && p.day != "" {
		return position{}, false
	}
	switch p.group {
	case "":
		return p, p.day != ""
	case "day":
		return p, p.day != "" && p.key == ""
	case "key":
		return p, p.day == ""
	}
	return position{}, false
}

// ParseQuery reads the query parameters against today's date at now.
func ParseQuery(vals map[string][]string, now time.Time) (Query, error) {
	today := day(now)
	q := Query{End: today}
	startSet := false
	var err error
	q.Page, err = router.ParseList(vals, router.ListSpec{IDPrefix: IDPrefix, Object: "a usage record",
		Cursor: func(v string) bool { _, ok := parseID(v); return ok }}, func(key, v string) (bool, error) {
		switch key {
		case "start", "end":
			d, ok := parseDay(v)
			if !ok {
				return true, apierror.ParameterInvalid(key,
					fmt.Sprintf("Invalid %s: expected a date (2026-01-31) or a unix timestamp in seconds.", key))
			}
			if key == "start" {
				q.Start, startSet = d, true
			} else {
				q.End = d
			}
		case "api_key":
			if !ids.Valid(v, ids.Key) {
				return true, apierror.ParameterInvalid(key, "Invalid api_key: expected an API key id (key_…).")
			}
			q.APIKey = v
		case "metric":
			if !metricRe.MatchString(v) {
				return true, apierror.ParameterInvalid(key, "Invalid metric: expected a metric name such as requests.")
			}
			q.Metric = v
		case "group_by":
			if v != "day" && v != "key" {
				return true, apierror.ParameterInvalid(key, "Invalid group_by: expected day or key.")
			}
			q.GroupBy = v
		default:
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return q, err
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
	for _, c := range []struct {
		param, id string
		pos       **position
	}{{"starting_after", q.Page.StartingAfter, &q.After}, {"ending_before", q.Page.EndingBefore, &q.Before}} {
		if c.id == "" {
			continue
		}
		p, _ := parseID(c.id)
		if p.group != q.GroupBy {
			return q, apierror.ParameterInvalid(c.param, fmt.Sprintf("Invalid %s: a record of another group_by.", c.param))
		}
		*c.pos = &p
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

// sortCol is one column of a list's order.
type sortCol struct {
	col  string
	desc bool
}

// orders are the lists' orders, per grouping: newest day first, then by
// metric and key.
var orders = map[string][]sortCol{
	"":    {{"day", true}, {"metric", false}, {"api_key_id", false}},
	"day": {{"day", true}, {"metric", false}},
	"key": {{"metric", false}, {"api_key_id", false}},
}

// keyset is the condition of the rows beyond cur in order (read backward:
// before it), its values appended to args: c1 beyond cur's, or c1 equal
// and c2 beyond, or ….
func keyset(order []sortCol, cur *position, backward bool, args []any) (string, []any) {
	day, _ := time.Parse(time.DateOnly, cur.day) // parseID checked it
	vals := map[string]any{"day": day, "metric": cur.metric, "api_key_id": cur.key}
	var or, eq []string
	for _, o := range order {
		args = append(args, vals[o.col])
		arg := fmt.Sprintf("$%d", len(args))
		op := ">"
		if o.desc != backward {
			op = "<"
		}
		or = append(or, "("+strings.Join(append(slices.Clone(eq), o.col+" "+op+" "+arg), " AND ")+")")
		eq = append(eq, o.col+" = "+arg)
	}
	return "(" + strings.Join(or, " OR ") + ")", args
}

// orderBy is order as SQL, reversed when read backward.
func orderBy(order []sortCol, backward bool) string {
	var by []string
	for _, o := range order {
		dir := "ASC"
		if o.desc != backward {
			dir = "DESC"
		}
		by = append(by, o.col+" "+dir)
	}
	return " ORDER BY " + strings.Join(by, ", ")
}

// List returns one page of org's environment's usage and whether more lies
// beyond it. Days are formatted by to_char, not a cast, so a server or role
// whose DateStyle is not ISO still answers YYYY-MM-DD.
func List(ctx context.Context, db DB, org string, livemode bool, q Query) ([]Record, bool, error) {
	where := `organization_id = $1 AND livemode = $2 AND day >= $3 AND day <= $4
		AND ($5 = '' OR api_key_id = $5) AND ($6 = '' OR metric = $6)`
	args := []any{org, livemode, q.Start, q.End, q.APIKey, q.Metric}
	order := orders[q.GroupBy]
	// A page before a cursor is read in the opposite order, from the
	// cursor (router.TrimPage restores it).
	backward := q.Before != nil
	if cur := cmp.Or(q.After, q.Before); cur != nil {
		var cond string
		cond, args = keyset(order, cur, backward, args)
		where += " AND " + cond
	}
	args = append(args, q.Page.Limit+1)
	tail := orderBy(order, backward) + fmt.Sprintf(" LIMIT $%d", len(args))
	var sql string
	switch q.GroupBy {
	case "day":
		sql = `SELECT metric, '' AS api_key_id, to_char(day, 'YYYY-MM-DD'), sum(quantity)::bigint FROM usage_records WHERE ` + where + `
			GROUP BY metric, day` + tail
	case "key":
		sql = `SELECT metric, api_key_id, '' AS day, sum(quantity)::bigint FROM usage_records WHERE ` + where + `
			GROUP BY metric, api_key_id` + tail
	default:
		sql = `SELECT metric, api_key_id, to_char(day, 'YYYY-MM-DD'), quantity FROM usage_records WHERE ` + where + tail
	}
	rows, err := db.Query(ctx, sql, args...)
	if err != nil {
		return nil, false, fmt.Errorf("listing usage: %w", err)
	}
	recs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Record, error) {
		p := position{group: q.GroupBy}
		var n int64
		if err := row.Scan(&p.metric, &p.key, &p.day, &n); err != nil {
			return Record{}, err
		}
		rec := Record{ID: recordID(p), Object: "usage_record", Created: q.Start.Unix(), Metric: p.metric, Quantity: n, Livemode: livemode}
		if p.key != "" {
			rec.APIKey = &p.key
		}
		if p.day != "" {
			rec.Date = &p.day
			d, _ := time.Parse(time.DateOnly, p.day)
			rec.Created = d.Unix()
		}
		return rec, nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("listing usage: %w", err)
	}
	recs, more := router.TrimPage(recs, q.Page.Limit, backward)
	if recs == nil {
		recs = []Record{}
	}
	return recs, more, nil
}

var _ router.Routes = (*API)(nil)
