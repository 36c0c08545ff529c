package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// row is one request_logs row, in copyColumns order.
type row struct {
	RequestID       string
	CreatedAt       time.Time
	OrganizationID  string
	Livemode        bool
	APIKeyID        string
	Method          string
	Route           string
	Path            string
	Status          int32
	DurationUS      int64
	UpstreamUS      int64
	BytesIn         int64
	BytesOut        int64
	ClientIP        string
	UserAgent       string
	APIVersion      string
	IdempotencyKey  string
	Replayed        bool
	RateLimit       string
	ErrorType       string
	ErrorCode       string
	ErrorMessage    string
	ErrorParam      string
	AuthRefused     bool
	RequestHeaders  json.RawMessage // a JSON object, nil when there are none
	ResponseHeaders json.RawMessage
	RequestBody     *string
	ResponseBody    *string
}

var copyColumns = []string{
	"request_id", "created_at", "organization_id", "livemode", "api_key_id", "method", "route", "path",
	"status", "duration_us", "upstream_us", "bytes_in", "bytes_out", "client_ip", "user_agent",
	"api_version", "idempotency_key", "idempotent_replayed", "rate_limit", "error_type", "error_code",
	"error_message", "error_param", "auth_refused", "request_headers", "response_headers", "request_body", "response_body",
}

var columnList = strings.Join(copyColumns, ", ")

func (r *row) values() []any {
	// A nil RawMessage must be SQL NULL, not the JSON text null.
	var reqH, respH any
	if r.RequestHeaders != nil {
		reqH = r.RequestHeaders
	}
	if r.ResponseHeaders != nil {
		respH = r.ResponseHeaders
	}
	return []any{
		r.RequestID, r.CreatedAt, r.OrganizationID, r.Livemode, r.APIKeyID, r.Method, r.Route, r.Path,
		r.Status, r.DurationUS, r.UpstreamUS, r.BytesIn, r.BytesOut, r.ClientIP, r.UserAgent,
		r.APIVersion, r.IdempotencyKey, r.Replayed, r.RateLimit, r.ErrorType, r.ErrorCode,
		r.ErrorMessage, r.ErrorParam, r.AuthRefused, reqH, respH, r.RequestBody, r.ResponseBody,
	}
}

// The staging table lives as long as the connection and is emptied at every
// commit, so each batch starts from an empty one.
const createStaging = `CREATE TEMP TABLE IF NOT EXISTS request_logs_in
	(LIKE request_logs INCLUDING DEFAULTS) ON COMMIT DELETE ROWS`

// RefusedByLimitsSQL holds for a request_logs row that the rate limits or
// quotas refused: a 429 (rate_limit "limited:<name>"), or a 503
// rate_limit_unavailable while they fail closed. The ingester meters such
// rows as MetricRateLimited; the dashboard counts them.
const RefusedByLimitsSQL = `(starts_with(rate_limit, 'limited:') OR rate_limit = 'error' AND error_code = 'rate_limit_unavailable')`

// The metrics the ingester meters.
const (
	MetricRequests    = "requests"              // authenticated, not refused by the rate limits and quotas
	MetricRateLimited = "rate_limited_requests" // refused by them (429, or 503 when they fail closed)
)

// insertAndMeter moves the staged rows into request_logs and meters the
// ones that were new. A row already there (a redelivered message) conflicts
// on (created_at, request_id), is not returned by RETURNING, and so is
// neither stored twice nor counted twice: the effect of a batch is the same
// however often it is delivered. Requests without an organisation (refused
// before authentication), and those api_key refused after identifying their
// key (auth_refused: expired, IP allowlist, scope, API version), are logged
// but not metered. Requests the rate
// limits or quotas refused — a 429, or a 503 rate_limit_unavailable when
// they fail closed while Redis is away — consumed nothing of them: they are
// metered apart, as MetricRateLimited, so that "requests" is what the
// limits did not refuse (the dashboard's usage chart reads it) and a client
// retrying into its limit still shows. Upserts go in key order so that
// concurrent ingesters cannot deadlock on usage rows.
var insertAndMeter = `
WITH inserted AS (
	INSERT INTO request_logs (` + columnList + `) SELECT ` + columnList + ` FROM request_logs_in
	ON CONFLICT DO NOTHING
	RETURNING organization_id, livemode, api_key_id, created_at, rate_limit, error_code, auth_refused
), per_day AS (
	SELECT organization_id, livemode, api_key_id,
	       CASE WHEN ` + RefusedByLimitsSQL + `
	            THEN '` + MetricRateLimited + `' ELSE '` + MetricRequests + `' END AS metric,
	       (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n
	FROM inserted WHERE organization_id <> '' AND NOT auth_refused
	GROUP BY 1, 2, 3, 4, 5
), metered AS (
	INSERT INTO usage_records AS u (organization_id, livemode, api_key_id, metric, day, quantity)
	SELECT organization_id, livemode, api_key_id, metric, day, n FROM per_day
	ORDER BY 1, 2, 3, 4, 5
	ON CONFLICT (organization_id, livemode, api_key_id, metric, day)
	DO UPDATE SET quantity = u.quantity + EXCLUDED.quantity
	RETURNING 1
)
SELECT (SELECT count(*) FROM inserted), (SELECT coalesce(sum(n), 0) FROM per_day), (SELECT count(*) FROM metered)`

// write stores rows in one transaction and reports how many were new.
func (w *Worker) write(ctx context.Context, rows []row) (inserted int64, err error) {
	err = pgx.BeginFunc(ctx, w.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, createStaging); err != nil {
			return fmt.Errorf("creating staging table: %w", err)
		}
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"request_logs_in"}, copyColumns,
			pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) { return rows[i].values(), nil }))
		if err != nil {
			return fmt.Errorf("copying into staging table: %w", err)
		}
		var metered, usageRows int64
		if err := tx.QueryRow(ctx, insertAndMeter).Scan(&inserted, &metered, &usageRows); err != nil {
			return fmt.Errorf("inserting request logs: %w", err)
		}
		return nil
	})
	return inserted, err
}
