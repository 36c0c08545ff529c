package requestlogs

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/internal/ids"
)

// DB is what the store needs from Postgres: a *pgxpool.Pool.
type DB interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// ErrNotFound is returned for a request log that does not exist for the
// caller's organisation and environment.
var ErrNotFound = errors.New("request log not found")

// Object is a request log as the API shows it.
type Object struct {
	ID                 string            `json:"id"`
	Object             string            `json:"object"`
	Created            int64             `json:"created"`
	Livemode           bool              `json:"livemode"`
	Method             string            `json:"method"`
	Path               string            `json:"path"`
	Route              *string           `json:"route"`
	Status             int               `json:"status"`
	DurationMS         float64           `json:"duration_ms"`
	UpstreamDurationMS *float64          `json:"upstream_duration_ms"`
	APIKey             *string           `json:"api_key"`
	APIVersion         *string           `json:"api_version"`
	IdempotencyKey     *string           `json:"idempotency_key"`
	IdempotentReplayed bool              `json:"idempotent_replayed"`
	RateLimit          *string           `json:"rate_limit"`
	Error              *ErrorSummary     `json:"error"`
	RequestHeaders     map[string]string `json:"request_headers"`
	ResponseHeaders    map[string]string `json:"response_headers"`
	RequestBody        *string           `json:"request_body"`
	ResponseBody       *string           `json:"response_body"`
	ClientIP           *string           `json:"client_ip"`
	UserAgent          *string           `json:"user_agent"`
	BytesIn            int64             `json:"bytes_in"`
	BytesOut           int64             `json:"bytes_out"`
	// CreatedAt is the request's start to the microsecond, for callers such
	// as the dashboard; the API shows created.
	CreatedAt time.Time `json:"-"`
}

// ErrorSummary is the error object a failed request was answered with:
// its type, code, message and param (null when the response had none, or
// for requests logged before messages were kept).
type ErrorSummary struct {
	Type    string  `json:"type"`
	Code    string  `json:"code"`
	Message *string `json:"message"`
	Param   *string `json:"param"`
}

// record is a request_logs row.
type record struct {
	RequestID       string            `db:"request_id"`
	CreatedAt       time.Time         `db:"created_at"`
	Livemode        bool              `db:"livemode"`
	APIKeyID        string            `db:"api_key_id"`
	Method          string            `db:"method"`
	Route           string            `db:"route"`
	Path            string            `db:"path"`
	Status          int               `db:"status"`
	DurationUS      int64             `db:"duration_us"`
	UpstreamUS      int64             `db:"upstream_us"`
	BytesIn         int64             `db:"bytes_in"`
	BytesOut        int64             `db:"bytes_out"`
	ClientIP        string            `db:"client_ip"`
	UserAgent       string            `db:"user_agent"`
	APIVersion      string            `db:"api_version"`
	IdempotencyKey  string            `db:"idempotency_key"`
	Replayed        bool              `db:"idempotent_replayed"`
	RateLimit       string            `db:"rate_limit"`
	ErrorType       string            `db:"error_type"`
	ErrorCode       string            `db:"error_code"`
	ErrorMessage    string            `db:"error_message"`
	ErrorParam      string            `db:"error_param"`
	RequestHeaders  map[string]string `db:"request_headers"`
	ResponseHeaders map[string]string `db:"response_headers"`
	RequestBody     *string           `db:"request_body"`
	ResponseBody    *string           `db:"response_body"`
}

const columns = `request_id, created_at, livemode, api_key_id, method, route, path, status, duration_us,
	upstream_us, bytes_in, bytes_out, client_ip, user_agent, api_version, idempotency_key, idempotent_replayed,
	rate_limit, error_type, error_code, error_message, error_param, request_headers, response_headers, request_body, response_body`

func (rec record) object() Object {
	o := Object{
		ID: rec.RequestID, Object: "request_log", Created: rec.CreatedAt.Unix(), CreatedAt: rec.CreatedAt,
		Livemode: rec.Livemode, Method: rec.Method, Path: rec.Path, Route: nullable(rec.Route), Status: rec.Status,
		DurationMS: millis(rec.DurationUS), APIKey: nullable(rec.APIKeyID), APIVersion: nullable(rec.APIVersion),
		IdempotencyKey: nullable(rec.IdempotencyKey), IdempotentReplayed: rec.Replayed, RateLimit: nullable(rec.RateLimit),
		RequestHeaders: nonNil(rec.RequestHeaders), ResponseHeaders: nonNil(rec.ResponseHeaders),
		RequestBody: rec.RequestBody, ResponseBody: rec.ResponseBody,
		ClientIP: nullable(rec.ClientIP), UserAgent: nullable(rec.UserAgent), BytesIn: rec.BytesIn, BytesOut: rec.BytesOut,
	}
	if rec.UpstreamUS > 0 {
		up := millis(rec.UpstreamUS)
		o.UpstreamDurationMS = &up
	}
	if rec.ErrorType != "" || rec.ErrorCode != "" {
		o.Error = &ErrorSummary{Type: rec.ErrorType, Code: rec.ErrorCode,
			Message: nullable(rec.ErrorMessage), Param: nullable(rec.ErrorParam)}
	}
	return o
}

// millis is microseconds as milliseconds with three decimals.
func millis(us int64) float64 { return math.Round(float64(us)) / 1000 }

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// idWindow is how far from the time in a request id its log's created_at
// may be. The gateway mints the id as the request starts and stamps the log
// with the same moment (request_id runs just before request_log), so a
// millisecond would do; a minute leaves room for a stalled process. The
// lookup reads every row of the tenant in the window: at 100 requests/s
// (720,000 rows over two hours), Get took 71–87 ms with an hour, 0.7–2 ms
// with a minute.
const idWindow = time.Minute

// IDTime is the moment a request id was minted: ids start with the unix
// milliseconds in 8 base62 digits (internal/ids).
func IDTime(id string) (time.Time, bool) {
	body, ok := strings.CutPrefix(id, ids.Request+"_")
	if !ok || !ids.Valid(id, ids.Request) {
		return time.Time{}, false
	}
	var ms int64
	for i := 0; i < 8; i++ {
		ms = ms*62 + int64(strings.IndexByte(base62, body[i]))
	}
	return time.UnixMilli(ms), true
}

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// Get returns one request log of org's environment. There is no index on
// request_id alone: the time in the id narrows the lookup to a primary-key
// range.
func Get(ctx context.Context, db DB, org string, livemode bool, id string) (Object, error) {
	t, ok := IDTime(id)
	if !ok {
		return Object{}, ErrNotFound
	}
	rows, err := db.Query(ctx, `SELECT `+columns+` FROM request_logs
		WHERE organization_id = $1 AND livemode = $2 AND request_id = $3 AND created_at >= $4 AND created_at < $5
		ORDER BY created_at DESC LIMIT 1`,
		org, livemode, id, t.Add(-idWindow), t.Add(idWindow))
	if err != nil {
		return Object{}, fmt.Errorf("getting request log: %w", err)
	}
	rec, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[record])
	if errors.Is(err, pgx.ErrNoRows) {
		return Object{}, ErrNotFound
	}
	if err != nil {
		return Object{}, fmt.Errorf("getting request log: %w", err)
	}
	return rec.object(), nil
}

// position finds where a cursor id sits in the list order.
func position(ctx context.Context, db DB, org string, livemode bool, id string) (time.Time, error) {
	t, ok := IDTime(id)
	if !ok {
		return time.Time{}, ErrNotFound
	}
	var at time.Time
	err := db.QueryRow(ctx, `SELECT created_at FROM request_logs
		WHERE organization_id = $1 AND livemode = $2 AND request_id = $3 AND created_at >= $4 AND created_at < $5
		ORDER BY created_at DESC LIMIT 1`,
		org, livemode, id, t.Add(-idWindow), t.Add(idWindow)).Scan(&at)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, ErrNotFound
	}
	return at, err
}

// Query filters and pages a list. Zero values filter nothing.
type Query struct {
	Limit         int
	StartingAfter string
	EndingBefore  string
	Status        int // exact status, or
	StatusClass   int // 4 for 4xx
	Method        string
	PathPrefix    string
	APIKey        string
	RequestID     string
	ErrorCode     string
	CreatedGTE    *time.Time // inclusive
	CreatedLT     *time.Time // exclusive
}

// errCursor says a cursor names no request log of the caller.
type errCursor struct{ param, id string }

func (e errCursor) Error() string { return e.param + ": no such request log: " + e.id }

// List returns a page of org's environment's request logs, newest first,
// and whether there are more in the direction of paging.
func List(ctx context.Context, db DB, org string, livemode bool, q Query) ([]Object, bool, error) {
	where := []string{"organization_id = $1", "livemode = $2"}
	args := []any{org, livemode}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if q.Status != 0 {
		where = append(where, "status = "+arg(q.Status))
	}
	if q.StatusClass != 0 {
		where = append(where, "status >= "+arg(q.StatusClass*100)+" AND status < "+arg(q.StatusClass*100+100))
	}
	if q.Method != "" {
		where = append(where, "method = "+arg(q.Method))
	}
	if q.PathPrefix != "" {
		// Not LIKE: a path may contain its wildcards.
		where = append(where, "starts_with(path, "+arg(q.PathPrefix)+")")
	}
	if q.APIKey != "" {
		where = append(where, "api_key_id = "+arg(q.APIKey))
	}
	if q.RequestID != "" {
		where = append(where, "request_id = "+arg(q.RequestID))
		if t, ok := IDTime(q.RequestID); ok {
			where = append(where, "created_at >= "+arg(t.Add(-idWindow)), "created_at < "+arg(t.Add(idWindow)))
		}
	}
	if q.ErrorCode != "" {
		where = append(where, "error_code = "+arg(q.ErrorCode))
	}
	for _, c := range []struct {
		t  *time.Time
		op string
	}{{q.CreatedGTE, ">="}, {q.CreatedLT, "<"}} {
		if c.t != nil {
			where = append(where, "created_at "+c.op+" "+arg(*c.t))
		}
	}
	order := "DESC"
	switch {
	case q.StartingAfter != "":
		at, err := position(ctx, db, org, livemode, q.StartingAfter)
		if err != nil {
			return nil, false, cursorErr(err, "starting_after", q.StartingAfter)
		}
		where = append(where, "(created_at, request_id) < ("+arg(at)+", "+arg(q.StartingAfter)+")")
	case q.EndingBefore != "":
		at, err := position(ctx, db, org, livemode, q.EndingBefore)
		if err != nil {
			return nil, false, cursorErr(err, "ending_before", q.EndingBefore)
		}
		where = append(where, "(created_at, request_id) > ("+arg(at)+", "+arg(q.EndingBefore)+")")
		order = "ASC"
	}
	sql := `SELECT ` + columns + ` FROM request_logs WHERE ` + strings.Join(where, " AND ") +
		` ORDER BY created_at ` + order + `, request_id ` + order + ` LIMIT ` + arg(q.Limit+1)
	rows, err := db.Query(ctx, sql, args...)
	if err != nil {
		return nil, false, fmt.Errorf("listing request logs: %w", err)
	}
	recs, err := pgx.CollectRows(rows, pgx.RowToStructByName[record])
	if err != nil {
		return nil, false, fmt.Errorf("listing request logs: %w", err)
	}
	more := len(recs) > q.Limit
	if more {
		recs = recs[:q.Limit]
	}
	if order == "ASC" {
		slices.Reverse(recs)
	}
	out := make([]Object, len(recs))
	for i, rec := range recs {
		out[i] = rec.object()
	}
	return out, more, nil
}

func cursorErr(err error, param, id string) error {
	if errors.Is(err, ErrNotFound) {
		return errCursor{param, id}
	}
	return fmt.Errorf("finding %s: %w", param, err)
}
