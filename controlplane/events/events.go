// Package events is the control plane's side of platform events (DESIGN §7,
// §8): the /v1/events API (create a test event, list, retrieve with a
// delivery summary) and the ingester that writes every event on
// platform.events.v1 into Postgres.
//
// # Where an event row comes from
//
// Events reach the events table by two paths, and both are idempotent on the
// event id (INSERT … ON CONFLICT (id) DO NOTHING):
//
//   - The ingester (Worker) consumes platform.events.v1 — the gateway's
//     emit_events and POST /v1/events both produce there — and commits its
//     offsets only after the rows are committed.
//   - POST /v1/events also inserts its event synchronously before answering,
//     so that a client can GET the event it just created (read-your-writes)
//     instead of racing the ingester. It inserts first and enqueues for
//     Kafka second: if the insert fails the client gets a 500 and nothing
//     was produced, so a retry cannot leave a delivered duplicate behind.
//     When the ingester later sees the same event on Kafka its insert is a
//     no-op.
//
// The deliverer consumes the same topic for fan-out, so an event created by
// the API is delivered exactly like one emitted by the gateway.
package events

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/controlplane/router"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/wire"
)

// Limits on events.
const (
	// MaxTypeLen is the longest event type.
	MaxTypeLen = 100
	// MaxDataBytes is the largest data.object accepted by POST /v1/events,
	// as compact JSON.
	MaxDataBytes = 256 << 10
	// MaxIdempotencyKeyLen matches the gateway's limit on Idempotency-Key.
	MaxIdempotencyKeyLen = 255
	// maxWireDataBytes bounds data on the wire: the gateway's emit_events
	// caps a response at 1 MB, and anything larger did not come from us.
	maxWireDataBytes = 2 << 20
	maxRefLen        = 128 // organisation and request ids
	// maxCreated is the last second of the year 9999: a created time past
	// it is no clock's reading, and past Postgres's range (year 294276) it
	// could not be stored at all, stalling the deliverer's partition.
	maxCreated = 253402300799
)

// typePattern is the shape of an event type: lower-case dotted words, at
// least two (customer.created). The gateway's emit_events checks its rules
// against the same pattern.
var typePattern = regexp.MustCompile(`^[a-z_]+(\.[a-z_]+)+$`)

// TestType is the type of the events POST /v1/webhook-endpoints/{id}/test
// sends to that one endpoint; POST /v1/events refuses it, since it would
// reach every endpoint subscribed to "*".
const TestType = "webhook_endpoint.test"

// ValidType reports whether t is a well-formed event type.
func ValidType(t string) bool {
	return len(t) <= MaxTypeLen && typePattern.MatchString(t)
}

// Object is the public event object: the body of GET /v1/events/{id} and
// the payload of every webhook delivery (DESIGN §8). Field order is the
// documented one.
type Object struct {
	ID         string          `json:"id"`
	Object     string          `json:"object"` // "event"
	Type       string          `json:"type"`
	Created    int64           `json:"created"`
	Livemode   bool            `json:"livemode"`
	APIVersion string          `json:"api_version"`
	Data       json.RawMessage `json:"data"` // {"object": {...}}
	Request    RequestRef      `json:"request"`
	// Deliveries is only present on GET /v1/events/{id}.
	Deliveries *DeliverySummary `json:"deliveries,omitempty"`
}

// RequestRef names the API request that caused the event; both fields are
// null for events that no request caused.
type RequestRef struct {
	ID             *string `json:"id"`
	IdempotencyKey *string `json:"idempotency_key"`
}

// DeliverySummary counts an event's webhook deliveries by status.
type DeliverySummary struct {
	Total     int64 `json:"total"`
	Succeeded int64 `json:"succeeded"`
	Pending   int64 `json:"pending"`
	Failed    int64 `json:"failed"`
	Dead      int64 `json:"dead"`
}

// Payload is the public object of a wire event. The deliverer sends exactly
// this as the webhook body.
func Payload(e wire.Event) Object {
	return Object{
		ID: e.ID, Object: "event", Type: e.Type, Created: e.Created, Livemode: e.Livemode,
		APIVersion: e.APIVersion, Data: e.Data,
		Request: RequestRef{ID: nonEmpty(e.RequestID), IdempotencyKey: nonEmpty(e.IdempotencyKey)},
	}
}

// Encode is the Kafka value of e: JSON without HTML escaping, which would
// turn each <, > or & of the data into six bytes and could push a message
// past what the broker accepts.
func Encode(e wire.Event) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(e); err != nil {
		return nil, fmt.Errorf("encoding event %s: %w", e.ID, err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// ErrMalformed wraps every reason Validate refuses an event.
var ErrMalformed = errors.New("malformed event")

// Validate checks that e can be stored: everything Postgres would refuse
// (NUL in text, \u0000 or invalid UTF-8 in jsonb) is refused here, so that
// one bad message cannot fail a batch.
func Validate(e wire.Event) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
	}
	switch {
	case e.V < 1:
		// Newer versions only add fields, so they are read as v1.
		return bad("schema version %d", e.V)
	case !ids.Valid(e.ID, ids.Event):
		return bad("id %q is not an evt_ id", e.ID)
	case !validRef(e.OrganizationID, true):
		return bad("organization_id %q", e.OrganizationID)
	case !ValidType(e.Type):
		return bad("type %q", e.Type)
	case e.Created <= 0 || e.Created > maxCreated:
		return bad("created %d", e.Created)
	case !validRef(e.APIVersion, true):
		return bad("api_version %q", e.APIVersion)
	case !validRef(e.RequestID, false):
		return bad("request_id")
	case !validText(e.IdempotencyKey, MaxIdempotencyKeyLen):
		return bad("idempotency_key")
	case len(e.Data) > maxWireDataBytes:
		return bad("data is %d bytes", len(e.Data))
	}
	var data struct {
		Object json.RawMessage `json:"object"`
	}
	if !utf8.Valid(e.Data) || json.Unmarshal(e.Data, &data) != nil || !isObject(data.Object) {
		return bad("data must be a JSON object with an object member")
	}
	if err := wire.CheckJSONB(e.Data); err != nil {
		return bad("data cannot be stored: %v", err)
	}
	return nil
}

func validRef(s string, required bool) bool {
	if s == "" {
		return !required
	}
	return validText(s, maxRefLen)
}

func validText(s string, maxLen int) bool {
	return len(s) <= maxLen && utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

func isObject(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && raw[0] == '{'
}

// Execer runs statements: a pool, a connection or a transaction.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Insert stores events, ignoring ids already stored and events of
// organisations that do not exist (deleted since, or never did); it returns
// how many rows were added. Events must have passed Validate.
func Insert(ctx context.Context, db Execer, evs ...wire.Event) (int64, error) {
	return insert(ctx, db, false, evs)
}

// InsertPending stores events that are about to be produced to Kafka from
// memory: they stay marked until a consumer reads them back (Insert clears
// the mark), and Republisher produces them again if that never happens.
func InsertPending(ctx context.Context, db Execer, evs ...wire.Event) (int64, error) {
	return insert(ctx, db, true, evs)
}

func insert(ctx context.Context, db Execer, pending bool, evs []wire.Event) (int64, error) {
	// A redelivered batch may hold one event twice; ON CONFLICT DO UPDATE
	// refuses to touch a row twice in one statement.
	seen := make(map[string]bool, len(evs))
	unique := evs[:0:0]
	for _, e := range evs {
		if !seen[e.ID] {
			seen[e.ID] = true
			unique = append(unique, e)
		}
	}
	evs = unique
	if len(evs) == 0 {
		return 0, nil
	}
	n := len(evs)
	var (
		id, org, typ, ver, data = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		live                    = make([]bool, n)
		rid, ikey               = make([]*string, n), make([]*string, n)
		created                 = make([]time.Time, n)
	)
	for i, e := range evs {
		id[i], org[i], live[i], typ[i], ver[i] = e.ID, e.OrganizationID, e.Livemode, e.Type, e.APIVersion
		data[i], rid[i], ikey[i] = string(e.Data), nonEmpty(e.RequestID), nonEmpty(e.IdempotencyKey)
		created[i] = time.Unix(e.Created, 0)
	}
	const q = `
		INSERT INTO events (id, organization_id, livemode, type, api_version, data, request_id,
		                    idempotency_key, created_at, pending_publish)
		SELECT u.id, u.org, u.live, u.type, u.ver, u.data::json, u.rid, u.ikey, u.created, $10
		FROM unnest($1::text[], $2::text[], $3::boolean[], $4::text[], $5::text[], $6::text[],
		            $7::text[], $8::text[], $9::timestamptz[])
		     AS u(id, org, live, type, ver, data, rid, ikey, created)
		WHERE EXISTS (SELECT 1 FROM organizations o WHERE o.id = u.org)
		ON CONFLICT (id) DO UPDATE SET pending_publish = false
		WHERE events.pending_publish AND NOT EXCLUDED.pending_publish`
	tag, err := db.Exec(ctx, q, id, org, live, typ, ver, data, rid, ikey, created, pending)
	if err != nil {
		return 0, fmt.Errorf("inserting events: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Querier reads rows: a pool, a connection or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// row is an events row.
type row struct {
	ID             string          `db:"id"`
	Livemode       bool            `db:"livemode"`
	Type           string          `db:"type"`
	APIVersion     string          `db:"api_version"`
	Data           json.RawMessage `db:"data"`
	RequestID      *string         `db:"request_id"`
	IdempotencyKey *string         `db:"idempotency_key"`
	CreatedAt      time.Time       `db:"created_at"`
}

const columns = `id, livemode, type, api_version, data, request_id, idempotency_key, created_at`

func (r row) object() Object {
	return Object{
		ID: r.ID, Object: "event", Type: r.Type, Created: r.CreatedAt.Unix(), Livemode: r.Livemode,
		APIVersion: r.APIVersion, Data: r.Data,
		Request: RequestRef{ID: r.RequestID, IdempotencyKey: r.IdempotencyKey},
	}
}

// errNotFound is an event that does not exist for the caller's
// organisation and environment.
var errNotFound = errors.New("event not found")

// get reads one event of org's environment with its delivery summary.
func get(ctx context.Context, db Querier, org string, livemode bool, id string) (Object, error) {
	rows, err := db.Query(ctx, `SELECT `+columns+` FROM events
		WHERE organization_id = $1 AND livemode = $2 AND id = $3`, org, livemode, id)
	if err != nil {
		return Object{}, fmt.Errorf("reading event: %w", err)
	}
	r, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[row])
	if errors.Is(err, pgx.ErrNoRows) {
		return Object{}, errNotFound
	}
	if err != nil {
		return Object{}, fmt.Errorf("reading event: %w", err)
	}
	o := r.object()
	rows, err = db.Query(ctx, `
		SELECT count(*) AS total,
		       count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
		       count(*) FILTER (WHERE status = 'pending') AS pending,
		       count(*) FILTER (WHERE status = 'failed') AS failed,
		       count(*) FILTER (WHERE status = 'dead') AS dead
		FROM webhook_deliveries
		WHERE organization_id = $1 AND livemode = $2 AND event_id = $3`, org, livemode, id)
	if err != nil {
		return Object{}, fmt.Errorf("summarising deliveries: %w", err)
	}
	s, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[DeliverySummary])
	if err != nil {
		return Object{}, fmt.Errorf("summarising deliveries: %w", err)
	}
	o.Deliveries = &s
	return o, nil
}

// listQuery is one page request; zero fields do not filter.
type listQuery struct {
	router.ListQuery
	Type       string // exact type
	TypePrefix string // "customer." for customer.*
}

// list returns one page of org's events in its environment, newest first,
// and whether more lie beyond it in the direction of travel.
func list(ctx context.Context, db Querier, org string, livemode bool, q listQuery) ([]Object, bool, error) {
	var p router.PageSQL
	p.Add("organization_id = $%d", org)
	p.Add("livemode = $%d", livemode)
	if q.Type != "" {
		p.Add("type = $%d", q.Type)
	}
	if q.TypePrefix != "" {
		// A byte range under the "C" collation of migration 0006: every
		// type starting with "customer." sorts before "customer/".
		p.Add("type >= $%d", q.TypePrefix)
		p.Add("type < $%d", q.TypePrefix[:len(q.TypePrefix)-1]+"/")
	}
	if q.CreatedGTE != nil {
		p.Add("created_at >= $%d", *q.CreatedGTE)
	}
	if q.CreatedLT != nil {
		p.Add("created_at < $%d", *q.CreatedLT)
	}
	sql, args, ascending := p.Query(`SELECT `+columns+` FROM events`, "id", q.ListQuery)
	rows, err := db.Query(ctx, sql, args...)
	if err != nil {
		return nil, false, fmt.Errorf("listing events: %w", err)
	}
	rs, err := pgx.CollectRows(rows, pgx.RowToStructByName[row])
	if err != nil {
		return nil, false, fmt.Errorf("listing events: %w", err)
	}
	rs, more := router.TrimPage(rs, q.Limit, ascending)
	out := make([]Object, len(rs))
	for i, r := range rs {
		out[i] = r.object()
	}
	return out, more, nil
}
