package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/controlplane/events"
	"github.com/gatehouse/gatehouse/controlplane/router"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/wire"
)

// The read models of the webhook and event pages. They read the tables of
// controlplane/events and controlplane/webhooks directly because those
// packages export no read functions; every query filters on the session's
// organisation and environment.

// Endpoint is a webhook endpoint as the dashboard shows it.
type Endpoint struct {
	ID             string            `db:"id"`
	URL            string            `db:"url"`
	Description    string            `db:"description"`
	EnabledEvents  []string          `db:"enabled_events"`
	Status         string            `db:"status"`
	DisabledReason *string           `db:"disabled_reason"`
	APIVersion     *string           `db:"api_version"`
	Metadata       map[string]string `db:"metadata"`
	FailingSince   *time.Time        `db:"failing_since"`
	CreatedAt      time.Time         `db:"created_at"`
}

const endpointCols = `id, url, description, enabled_events, status, disabled_reason, api_version, metadata,
	failing_since, created_at`

// Delivery is one event sent to one endpoint.
type Delivery struct {
	ID          string  `db:"id"`
	EventID     string  `db:"event_id"`
	EventType   *string `db:"event_type"`
	EndpointID  string  `db:"endpoint_id"`
	EndpointURL *string `db:"endpoint_url"`
	// EndpointAPIVersion is the version the endpoint's payloads are
	// rendered in (events.PayloadVersionSQL).
	EndpointAPIVersion string     `db:"endpoint_api_version"`
	Status             string     `db:"status"`
	Attempts           int        `db:"attempts"`
	LastStatusCode     *int       `db:"last_status_code"`
	NextAttemptAt      *time.Time `db:"next_attempt_at"`
	ManualPending      bool       `db:"manual_pending"`
	CreatedAt          time.Time  `db:"created_at"`
	UpdatedAt          time.Time  `db:"updated_at"`
	// AttemptList is filled on the detail page and in traces.
	AttemptList []Attempt `db:"-"`
}

// LastAttempt is the newest attempt in AttemptList, or nil.
func (d Delivery) LastAttempt() *Attempt {
	if len(d.AttemptList) == 0 {
		return nil
	}
	return &d.AttemptList[len(d.AttemptList)-1]
}

// deliveriesFrom reads deliveries from from (the table or a page of it, as
// d) with their event's type and their endpoint's URL and version.
func deliveriesFrom(from string) string {
	return `SELECT d.id, d.event_id, ev.type AS event_type, d.endpoint_id, we.url AS endpoint_url,
	` + events.PayloadVersionSQL("we") + ` AS endpoint_api_version, d.status,
	d.attempts, d.last_status_code, d.next_attempt_at, d.manual_pending OR d.manual_claimed AS manual_pending, d.created_at, d.updated_at
	FROM ` + from + `
	LEFT JOIN events ev ON ev.id = d.event_id AND ev.organization_id = d.organization_id AND ev.livemode = d.livemode
	LEFT JOIN webhook_endpoints we ON we.id = d.endpoint_id`
}

// Attempt is one try at a delivery.
type Attempt struct {
	ID              string    `db:"id"`
	DeliveryID      string    `db:"delivery_id"`
	StatusCode      *int      `db:"status_code"`
	LatencyMS       int       `db:"latency_ms"`
	ResponseSnippet string    `db:"response_snippet"`
	Error           string    `db:"error"`
	Trigger         string    `db:"trigger"`
	CreatedAt       time.Time `db:"created_at"`
}

// Event is a platform event.
type Event struct {
	ID             string          `db:"id"`
	Type           string          `db:"type"`
	APIVersion     string          `db:"api_version"`
	Data           json.RawMessage `db:"data"`
	RequestID      *string         `db:"request_id"`
	IdempotencyKey *string         `db:"idempotency_key"`
	CreatedAt      time.Time       `db:"created_at"`
	Deliveries     []Delivery      `db:"-"`
}

const eventCols = `id, type, api_version, data, request_id, idempotency_key, created_at`

// Payload is the event as an endpoint pinned to endpointVersion ("" for
// none, the event's own version) receives it: the deliverer's body
// (events.PayloadFor), indented.
func (e Event) Payload(livemode bool, endpointVersion string) string {
	w := wire.Event{V: 1, ID: e.ID, Livemode: livemode, Type: e.Type, Created: e.CreatedAt.Unix(),
		APIVersion: e.APIVersion, Data: e.Data}
	if e.RequestID != nil {
		w.RequestID = *e.RequestID
	}
	if e.IdempotencyKey != nil {
		w.IdempotencyKey = *e.IdempotencyKey
	}
	b, err := events.PayloadFor(w, endpointVersion)
	if err != nil {
		return ""
	}
	var out bytes.Buffer
	if json.Indent(&out, b, "", "  ") != nil {
		return string(b)
	}
	return out.String()
}

// page is one page of a newest-first list with id cursors.
type page struct {
	After, Before string // cursors for the next (older) and previous (newer) pages
}

const pageSize = 25

// listPage reads a page of table (under alias, newest first by id) through
// view (router.PageSQL.QueryView) and works out the cursors.
func listPage[T any](ctx context.Context, db DB, table, alias string, view func(from string) string, f router.PageSQL,
	after, before string, id func(T) string) ([]T, page, error) {
	sql, args, ascending := f.QueryView(table, alias, router.ListQuery{StartingAfter: after, EndingBefore: before, Limit: pageSize}, view)
	rows, err := db.Query(ctx, sql, args...)
	if err != nil {
		return nil, page{}, err
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[T])
	if err != nil {
		return nil, page{}, err
	}
	list, more := router.TrimPage(list, pageSize, ascending)
	var p page
	if len(list) > 0 {
		if more || before != "" {
			p.After = id(list[len(list)-1])
		}
		if after != "" || (before != "" && more) {
			p.Before = id(list[0])
		}
	}
	return list, p, nil
}

func (d *Dashboard) listEndpoints(ctx context.Context, s *Session) ([]Endpoint, error) {
	rows, err := d.cfg.DB.Query(ctx, `SELECT `+endpointCols+` FROM webhook_endpoints
		WHERE organization_id = $1 AND livemode = $2 ORDER BY id DESC LIMIT 200`, s.OrgID, s.Livemode)
	if err != nil {
		return nil, fmt.Errorf("listing webhook endpoints: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByName[Endpoint])
}

func (d *Dashboard) getEndpoint(ctx context.Context, s *Session, id string) (Endpoint, error) {
	if !ids.Valid(id, ids.WebhookEndpoint) {
		return Endpoint{}, errNotFound()
	}
	rows, err := d.cfg.DB.Query(ctx, `SELECT `+endpointCols+` FROM webhook_endpoints
		WHERE organization_id = $1 AND livemode = $2 AND id = $3`, s.OrgID, s.Livemode, id)
	if err != nil {
		return Endpoint{}, fmt.Errorf("loading webhook endpoint: %w", err)
	}
	e, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Endpoint])
	if errors.Is(err, pgx.ErrNoRows) {
		return Endpoint{}, errNotFound()
	}
	if err != nil {
		return Endpoint{}, fmt.Errorf("loading webhook endpoint: %w", err)
	}
	return e, nil
}

// deliveryFilter narrows the deliveries list.
type deliveryFilter struct {
	Status, Endpoint, Event string
	// Since is a choice of sinceChoices; CreatedGTE its start, when set.
	Since         string
	CreatedGTE    time.Time
	After, Before string
}

func (d *Dashboard) listDeliveries(ctx context.Context, s *Session, f deliveryFilter) ([]Delivery, page, error) {
	var q router.PageSQL
	q.Add("d.organization_id = $%d", s.OrgID)
	q.Add("d.livemode = $%d", s.Livemode)
	if f.Status != "" {
		q.Add("d.status = $%d", f.Status)
	}
	if f.Endpoint != "" {
		q.Add("d.endpoint_id = $%d", f.Endpoint)
	}
	if f.Event != "" {
		q.Add("d.event_id = $%d", f.Event)
	}
	if !f.CreatedGTE.IsZero() {
		q.Add("d.created_at >= $%d", f.CreatedGTE)
	}
	list, p, err := listPage(ctx, d.cfg.DB, "webhook_deliveries", "d", deliveriesFrom, q, f.After, f.Before, func(x Delivery) string { return x.ID })
	if err != nil {
		return nil, page{}, fmt.Errorf("listing webhook deliveries: %w", err)
	}
	return list, p, nil
}

func (d *Dashboard) getDelivery(ctx context.Context, s *Session, id string) (Delivery, error) {
	if !ids.Valid(id, ids.Delivery) {
		return Delivery{}, errNotFound()
	}
	rows, err := d.cfg.DB.Query(ctx, deliveriesFrom("webhook_deliveries d")+` WHERE d.organization_id = $1 AND d.livemode = $2 AND d.id = $3`,
		s.OrgID, s.Livemode, id)
	if err != nil {
		return Delivery{}, fmt.Errorf("loading webhook delivery: %w", err)
	}
	dl, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Delivery])
	if errors.Is(err, pgx.ErrNoRows) {
		return Delivery{}, errNotFound()
	}
	if err != nil {
		return Delivery{}, fmt.Errorf("loading webhook delivery: %w", err)
	}
	ds := []Delivery{dl}
	if err := d.attachAttempts(ctx, s, ds); err != nil {
		return Delivery{}, err
	}
	return ds[0], nil
}

// attachAttempts fills AttemptList of each delivery, oldest first, at most
// 100 per delivery.
func (d *Dashboard) attachAttempts(ctx context.Context, s *Session, ds []Delivery) error {
	if len(ds) == 0 {
		return nil
	}
	idList := make([]string, len(ds))
	for i, dl := range ds {
		idList[i] = dl.ID
	}
	rows, err := d.cfg.DB.Query(ctx, `
		SELECT id, delivery_id, status_code, latency_ms, response_snippet, error, trigger, created_at FROM (
			SELECT *, row_number() OVER (PARTITION BY delivery_id ORDER BY created_at DESC, id DESC) AS n
			FROM webhook_attempts
			WHERE organization_id = $1 AND livemode = $2 AND delivery_id = ANY($3)
		) a WHERE n <= 100 ORDER BY created_at, id`, s.OrgID, s.Livemode, idList)
	if err != nil {
		return fmt.Errorf("loading webhook attempts: %w", err)
	}
	as, err := pgx.CollectRows(rows, pgx.RowToStructByName[Attempt])
	if err != nil {
		return fmt.Errorf("loading webhook attempts: %w", err)
	}
	for _, a := range as {
		for i := range ds {
			if ds[i].ID == a.DeliveryID {
				ds[i].AttemptList = append(ds[i].AttemptList, a)
			}
		}
	}
	return nil
}

// eventFilter narrows the events list.
type eventFilter struct {
	Type          string // exact, or a prefix ending in "." or ".*"
	After, Before string
}

func (d *Dashboard) listEvents(ctx context.Context, s *Session, f eventFilter) ([]Event, page, error) {
	var q router.PageSQL
	q.Add("organization_id = $%d", s.OrgID)
	q.Add("livemode = $%d", s.Livemode)
	if t := strings.TrimSuffix(f.Type, "*"); t != "" {
		if strings.HasSuffix(t, ".") {
			q.Add("starts_with(type, $%d)", t)
		} else {
			q.Add("type = $%d", t)
		}
	}
	list, p, err := listPage(ctx, d.cfg.DB, "events", "e", func(from string) string { return `SELECT ` + eventCols + ` FROM ` + from }, q, f.After, f.Before,
		func(e Event) string { return e.ID })
	if err != nil {
		return nil, page{}, fmt.Errorf("listing events: %w", err)
	}
	return list, p, nil
}

func (d *Dashboard) getEvent(ctx context.Context, s *Session, id string) (Event, error) {
	if !ids.Valid(id, ids.Event) {
		return Event{}, errNotFound()
	}
	rows, err := d.cfg.DB.Query(ctx, `SELECT `+eventCols+` FROM events
		WHERE organization_id = $1 AND livemode = $2 AND id = $3`, s.OrgID, s.Livemode, id)
	if err != nil {
		return Event{}, fmt.Errorf("loading event: %w", err)
	}
	e, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Event])
	if errors.Is(err, pgx.ErrNoRows) {
		return Event{}, errNotFound()
	}
	if err != nil {
		return Event{}, fmt.Errorf("loading event: %w", err)
	}
	evs := []Event{e}
	if err := d.attachDeliveries(ctx, s, evs); err != nil {
		return Event{}, err
	}
	return evs[0], nil
}

// eventsOfRequest are the events a request emitted, with their deliveries
// and attempts: the request's trace.
func (d *Dashboard) eventsOfRequest(ctx context.Context, s *Session, requestID string) ([]Event, error) {
	rows, err := d.cfg.DB.Query(ctx, `SELECT `+eventCols+` FROM events
		WHERE organization_id = $1 AND livemode = $2 AND request_id = $3 ORDER BY id LIMIT 50`,
		s.OrgID, s.Livemode, requestID)
	if err != nil {
		return nil, fmt.Errorf("loading events of request: %w", err)
	}
	evs, err := pgx.CollectRows(rows, pgx.RowToStructByName[Event])
	if err != nil {
		return nil, fmt.Errorf("loading events of request: %w", err)
	}
	return evs, d.attachDeliveries(ctx, s, evs)
}

func (d *Dashboard) attachDeliveries(ctx context.Context, s *Session, evs []Event) error {
	if len(evs) == 0 {
		return nil
	}
	idList := make([]string, len(evs))
	for i, e := range evs {
		idList[i] = e.ID
	}
	rows, err := d.cfg.DB.Query(ctx, deliveriesFrom("webhook_deliveries d")+` WHERE d.organization_id = $1 AND d.livemode = $2
		AND d.event_id = ANY($3) ORDER BY d.id LIMIT 500`, s.OrgID, s.Livemode, idList)
	if err != nil {
		return fmt.Errorf("loading deliveries: %w", err)
	}
	ds, err := pgx.CollectRows(rows, pgx.RowToStructByName[Delivery])
	if err != nil {
		return fmt.Errorf("loading deliveries: %w", err)
	}
	if err := d.attachAttempts(ctx, s, ds); err != nil {
		return err
	}
	for _, dl := range ds {
		for i := range evs {
			if evs[i].ID == dl.EventID {
				evs[i].Deliveries = append(evs[i].Deliveries, dl)
			}
		}
	}
	return nil
}

// endpointStats counts an endpoint's deliveries of the last 24 hours.
type endpointStats struct {
	Total, Succeeded, Failed, Dead, Pending int64
}

func (d *Dashboard) endpointStats(ctx context.Context, s *Session, id string) (endpointStats, error) {
	var st endpointStats
	err := d.cfg.DB.QueryRow(ctx, `
		SELECT count(*), count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status = 'failed'),
		       count(*) FILTER (WHERE status = 'dead'), count(*) FILTER (WHERE status = 'pending')
		FROM webhook_deliveries
		WHERE organization_id = $1 AND livemode = $2 AND endpoint_id = $3 AND created_at > $4`,
		s.OrgID, s.Livemode, id, d.now().Add(-24*time.Hour)).Scan(&st.Total, &st.Succeeded, &st.Failed, &st.Dead, &st.Pending)
	if err != nil {
		return st, fmt.Errorf("counting deliveries: %w", err)
	}
	return st, nil
}
