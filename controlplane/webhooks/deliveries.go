package webhooks

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/controlplane/router"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/ids"
)

// Delivery is the webhook_delivery object: one event to one endpoint.
type Delivery struct {
	ID        string  `json:"id"`
	Object    string  `json:"object"` // "webhook_delivery"
	Created   int64   `json:"created"`
	Livemode  bool    `json:"livemode"`
	Endpoint  string  `json:"endpoint"`
	Event     string  `json:"event"`
	EventType *string `json:"event_type"`
	// Status is pending, succeeded, failed (another attempt is scheduled
	// unless the endpoint is disabled) or dead (retries exhausted).
	Status         string `json:"status"`
	AttemptCount   int    `json:"attempt_count"`
	LastStatusCode *int   `json:"last_status_code"`
	NextAttemptAt  *int64 `json:"next_attempt_at"`
	// ManualRetryPending says the next attempt is a manual one (a retry,
	// recovery or test that has not been attempted yet).
	ManualRetryPending bool `json:"manual_retry_pending"`
	// Attempts is present only on GET /v1/webhook-deliveries/{id}: the
	// latest MaxAttemptsShown attempts, oldest first.
	Attempts *[]Attempt `json:"attempts,omitempty"`
}

// Attempt is one try at a delivery.
type Attempt struct {
	ID       string `json:"id"`
	Object   string `json:"object"` // "webhook_attempt"
	Created  int64  `json:"created"`
	Livemode bool   `json:"livemode"`
	// StatusCode is null when no response came (timeout, refused, DNS).
	StatusCode *int `json:"status_code"`
	LatencyMS  int  `json:"latency_ms"`
	// ResponseSnippet is the start of the response body, at most 4 KB.
	ResponseSnippet string  `json:"response_snippet"`
	Error           *string `json:"error"`
	Trigger         string  `json:"trigger"` // scheduled or manual
}

// Limits of the delivery view.
const (
	MaxAttemptsShown = 100
	MaxSnippetBytes  = 4096
)

// Delivery statuses, as the webhook_deliveries check constraint allows.
var deliveryStatuses = []string{"pending", "succeeded", "failed", "dead"}

// deliveryRow is a webhook_deliveries row with its event's type.
type deliveryRow struct {
	ID             string     `db:"id"`
	Livemode       bool       `db:"livemode"`
	EventID        string     `db:"event_id"`
	EventType      *string    `db:"event_type"`
	EndpointID     string     `db:"endpoint_id"`
	Status         string     `db:"status"`
	Attempts       int        `db:"attempts"`
	LastStatusCode *int       `db:"last_status_code"`
	NextAttemptAt  *time.Time `db:"next_attempt_at"`
	ManualPending  bool       `db:"manual_pending"`
	CreatedAt      time.Time  `db:"created_at"`
}

// deliveriesFrom reads deliveries from src (the table or a page of it, as
// d) with the type of their event, which may not have been ingested yet
// (then null).
func deliveriesFrom(src string) string {
	return `SELECT d.id, d.livemode, d.event_id, ev.type AS event_type, d.endpoint_id, d.status,
	d.attempts, d.last_status_code, d.next_attempt_at, d.manual_pending OR d.manual_claimed AS manual_pending, d.created_at
	FROM ` + src + `
	LEFT JOIN events ev ON ev.id = d.event_id AND ev.organization_id = d.organization_id AND ev.livemode = d.livemode`
}

func (d deliveryRow) object() Delivery {
	o := Delivery{
		ID: d.ID, Object: "webhook_delivery", Created: d.CreatedAt.Unix(), Livemode: d.Livemode,
		Endpoint: d.EndpointID, Event: d.EventID, EventType: d.EventType, Status: d.Status,
		AttemptCount: d.Attempts, LastStatusCode: d.LastStatusCode, ManualRetryPending: d.ManualPending,
	}
	if d.NextAttemptAt != nil {
		t := d.NextAttemptAt.Unix()
		o.NextAttemptAt = &t
	}
	return o
}

func loadDelivery(ctx context.Context, q Querier, org string, livemode bool, id string) (deliveryRow, error) {
	if !ids.Valid(id, ids.Delivery) {
		return deliveryRow{}, ErrDeliveryNotFound
	}
	rows, err := q.Query(ctx, deliveriesFrom("webhook_deliveries d")+` WHERE d.organization_id = $1 AND d.livemode = $2 AND d.id = $3`,
		org, livemode, id)
	if err != nil {
		return deliveryRow{}, fmt.Errorf("loading webhook delivery: %w", err)
	}
	d, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[deliveryRow])
	if errors.Is(err, pgx.ErrNoRows) {
		return deliveryRow{}, ErrDeliveryNotFound
	}
	if err != nil {
		return deliveryRow{}, fmt.Errorf("loading webhook delivery: %w", err)
	}
	return d, nil
}

func (a *API) listDeliveries(w http.ResponseWriter, r *http.Request, c caller) error {
	f := router.PageSQL{}
	f.Add("d.organization_id = $%d", c.OrgID)
	f.Add("d.livemode = $%d", c.Livemode)
	q, err := router.ParseList(r.URL.Query(), router.ListSpec{IDPrefix: ids.Delivery, Object: "a webhook delivery"}, func(key, v string) (bool, error) {
		switch key {
		case "endpoint":
			if !ids.Valid(v, ids.WebhookEndpoint) {
				return true, apierror.ParameterInvalid("endpoint", "Invalid endpoint: expected a webhook endpoint id (we_…).")
			}
			f.Add("d.endpoint_id = $%d", v)
		case "event":
			if !ids.Valid(v, ids.Event) {
				return true, apierror.ParameterInvalid("event", "Invalid event: expected an event id (evt_…).")
			}
			f.Add("d.event_id = $%d", v)
		case "status":
			if !slices.Contains(deliveryStatuses, v) {
				return true, apierror.ParameterInvalid("status", "Invalid status: expected pending, succeeded, failed or dead.")
			}
			f.Add("d.status = $%d", v)
		default:
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	sql, args, asc := listDeliveriesSQL(&f, q)
	rows, err := a.db.Query(r.Context(), sql, args...)
	if err != nil {
		return fmt.Errorf("listing webhook deliveries: %w", err)
	}
	rs, err := pgx.CollectRows(rows, pgx.RowToStructByName[deliveryRow])
	if err != nil {
		return fmt.Errorf("listing webhook deliveries: %w", err)
	}
	rs, more := router.TrimPage(rs, q.Limit, asc)
	data := make([]Delivery, len(rs))
	for i, d := range rs {
		data[i] = d.object()
	}
	router.WriteJSON(w, http.StatusOK, router.NewList("/v1/webhook-deliveries", data, more))
	return nil
}

// attemptRow is a webhook_attempts row.
type attemptRow struct {
	ID              string    `db:"id"`
	Livemode        bool      `db:"livemode"`
	StatusCode      *int      `db:"status_code"`
	LatencyMS       int       `db:"latency_ms"`
	ResponseSnippet string    `db:"response_snippet"`
	Error           string    `db:"error"`
	Trigger         string    `db:"trigger"`
	CreatedAt       time.Time `db:"created_at"`
}

func (at attemptRow) object() Attempt {
	o := Attempt{
		ID: at.ID, Object: "webhook_attempt", Created: at.CreatedAt.Unix(), Livemode: at.Livemode,
		StatusCode: at.StatusCode, LatencyMS: at.LatencyMS, ResponseSnippet: truncate(at.ResponseSnippet, MaxSnippetBytes),
		Trigger: at.Trigger,
	}
	if at.Error != "" {
		o.Error = &at.Error
	}
	return o
}

// truncate cuts s to at most n bytes without splitting a character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func (a *API) getDelivery(w http.ResponseWriter, r *http.Request, c caller) error {
	if err := router.NoQuery(r); err != nil {
		return err
	}
	d, err := loadDelivery(r.Context(), a.db, c.OrgID, c.Livemode, r.PathValue("id"))
	if err != nil {
		return err
	}
	rows, err := a.db.Query(r.Context(), `
		SELECT id, livemode, status_code, latency_ms, response_snippet, error, trigger, created_at
		FROM webhook_attempts
		WHERE organization_id = $1 AND livemode = $2 AND delivery_id = $3
		ORDER BY created_at DESC, id DESC
		LIMIT $4`, c.OrgID, c.Livemode, d.ID, MaxAttemptsShown)
	if err != nil {
		return fmt.Errorf("loading webhook attempts: %w", err)
	}
	as, err := pgx.CollectRows(rows, pgx.RowToStructByName[attemptRow])
	if err != nil {
		return fmt.Errorf("loading webhook attempts: %w", err)
	}
	slices.Reverse(as)
	attempts := make([]Attempt, len(as))
	for i, at := range as {
		attempts[i] = at.object()
	}
	o := d.object()
	o.Attempts = &attempts
	router.WriteJSON(w, http.StatusOK, o)
	return nil
}

// RetryDelivery queues a manual attempt of one of org's deliveries, in
// any status, and returns it as queued.
func (s *Service) RetryDelivery(ctx context.Context, actor audit.Actor, org string, livemode bool, id string) (Delivery, error) {
	if !ids.Valid(id, ids.Delivery) {
		return Delivery{}, ErrDeliveryNotFound
	}
	now := s.now()
	var d deliveryRow
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var before string
		err := tx.QueryRow(ctx, `SELECT status FROM webhook_deliveries
			WHERE organization_id = $1 AND livemode = $2 AND id = $3 FOR UPDATE`, org, livemode, id).Scan(&before)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrDeliveryNotFound
		}
		if err != nil {
			return fmt.Errorf("loading webhook delivery: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE webhook_deliveries
			SET status = 'pending', next_attempt_at = $4, manual_pending = true, updated_at = $4
			WHERE organization_id = $1 AND livemode = $2 AND id = $3`, org, livemode, id, now); err != nil {
			return fmt.Errorf("retrying webhook delivery: %w", err)
		}
		if d, err = loadDelivery(ctx, tx, org, livemode, id); err != nil {
			return err
		}
		return audit.Record(ctx, tx, auditEntry(actor, org, livemode, "webhook_delivery.retried", "webhook_delivery", id, now,
			map[string]any{"endpoint": d.EndpointID, "event": d.EventID, "previous_status": before}))
	})
	if err != nil {
		return Delivery{}, err
	}
	return d.object(), nil
}

func (a *API) retryDelivery(w http.ResponseWriter, r *http.Request, c caller) error {
	if _, err := router.ReadBody(w, r); err != nil {
		return err
	}
	d, err := a.svc.RetryDelivery(r.Context(), c.actor, c.OrgID, c.Livemode, r.PathValue("id"))
	if err != nil {
		return err
	}
	router.WriteJSON(w, http.StatusOK, d)
	return nil
}

// listDeliveriesSQL is one page of deliveries, cut before events are
// joined (TestListDeliveriesByStatusReadsAPageWhateverTheStatistics).
func listDeliveriesSQL(f *router.PageSQL, q router.ListQuery) (sql string, args []any, ascending bool) {
	return f.QueryView("webhook_deliveries", "d", q, deliveriesFrom)
}
