package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/gatehouse/gatehouse/controlplane/router"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/apiversion"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/outbox"
	"github.com/gatehouse/gatehouse/internal/wire"
)

// Scopes of the events API. Secret keys hold "*", which grants both.
const (
	ScopeRead  = "events:read"
	ScopeWrite = "events:write"
)

// Producer queues a message for Kafka without blocking; *outbox.Producer.
type Producer interface {
	Enqueue(outbox.Message)
}

// DB is what the API needs from Postgres: a *pgxpool.Pool.
type DB interface {
	Execer
	Querier
}

// Config wires the API.
type Config struct {
	DB       DB
	Producer Producer
	// Topic is where created events are produced; wire.TopicEvents when empty.
	Topic  string
	Logger *zap.Logger
	// Now is the clock for created events; time.Now when nil.
	Now func() time.Time
}

// API serves /v1/events.
type API struct {
	db       DB
	producer Producer
	topic    string
	log      *zap.Logger
	now      func() time.Time
}

// NewAPI returns the events API.
func NewAPI(cfg Config) *API {
	if cfg.Topic == "" {
		cfg.Topic = wire.TopicEvents
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &API{db: cfg.DB, producer: cfg.Producer, topic: cfg.Topic, log: cfg.Logger, now: cfg.Now}
}

// Register adds the routes (router.Routes).
func (a *API) Register(r *router.Router) {
	r.HandleFunc("POST /v1/events", a.handle(ScopeWrite, a.create))
	r.HandleFunc("GET /v1/events", a.handle(ScopeRead, a.list))
	r.HandleFunc("GET /v1/events/{id}", a.handle(ScopeRead, a.get))
}

// handle checks the caller's scope and turns the endpoint's error into the
// error object, in one place.
func (a *API) handle(scope string, h func(http.ResponseWriter, *http.Request, identity.Identity) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := router.Caller(r, scope)
		if err == nil {
			err = h(w, r, id)
		}
		if err == nil {
			return
		}
		if errors.Is(err, errNotFound) {
			err = apierror.NotFound("event", r.PathValue("id"))
		}
		router.Fail(w, r, a.log, "events", err)
	}
}

// create makes an event to test an integration: it is delivered to every
// endpoint subscribed to its type, like an event the gateway emits.
func (a *API) create(w http.ResponseWriter, r *http.Request, id identity.Identity) error {
	p, err := router.ReadBody(w, r, "type", "data")
	if err != nil {
		return err
	}
	typ, _, err := p.Str("type")
	switch {
	case err != nil:
		return err
	case typ == nil || *typ == "":
		return apierror.ParameterMissing("type")
	case !ValidType(*typ):
		return apierror.ParameterInvalid("type", fmt.Sprintf(
			"Invalid type: event types are lower-case dotted words such as customer.created (letters and '_', at least one '.', at most %d characters).", MaxTypeLen))
	case *typ == TestType:
		return apierror.ParameterInvalid("type",
			"webhook_endpoint.test events are sent to one endpoint by POST /v1/webhook-endpoints/{id}/test; choose another type.")
	}
	data, err := dataParam(p)
	if err != nil {
		return err
	}

	now := a.now()
	ev := wire.Event{
		V: 1, ID: ids.NewAt(ids.Event, now), OrganizationID: id.OrgID, Livemode: id.Livemode,
		Type: *typ, Created: now.Unix(), APIVersion: id.APIVersion,
		Data:      data,
		RequestID: id.RequestID, IdempotencyKey: r.Header.Get("Idempotency-Key"),
	}
	if ev.APIVersion == "" {
		ev.APIVersion = apiversion.Latest()
	}
	// The gateway vouches for these, but an event is no place to store
	// something Postgres would refuse.
	if !validText(ev.IdempotencyKey, MaxIdempotencyKeyLen) {
		ev.IdempotencyKey = ""
	}
	if !validRef(ev.RequestID, false) {
		ev.RequestID = ""
	}
	if err := Validate(ev); err != nil {
		return fmt.Errorf("creating event: %w", err)
	}
	value, err := Encode(ev)
	if err != nil {
		return fmt.Errorf("encoding event: %w", err)
	}
	// Stored before it is produced: see the package documentation.
	if _, err := InsertPending(r.Context(), a.db, ev); err != nil {
		return fmt.Errorf("creating event: %w", err)
	}
	a.producer.Enqueue(outbox.Message{Topic: a.topic, Key: []byte(ev.OrganizationID), Value: value})
	router.WriteJSON(w, http.StatusOK, Payload(ev))
	return nil
}

// dataParam is the data parameter, a JSON object (form: data[key]=value),
// wrapped as the event's {"object": …}.
func dataParam(p router.Params) (json.RawMessage, error) {
	raw, ok := p["data"]
	if !ok || router.IsNull(raw) {
		return nil, apierror.ParameterMissing("data")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil || !isObject(buf.Bytes()) {
		return nil, apierror.ParameterInvalid("data",
			"Invalid data: expected a JSON object, the object the event is about (it becomes data.object).")
	}
	if depth(buf.Bytes()) > MaxDataDepth {
		return nil, apierror.ParameterInvalid("data",
			fmt.Sprintf("Invalid data: nested at most %d levels deep.", MaxDataDepth))
	}
	if buf.Len() > MaxDataBytes {
		return nil, apierror.ParameterInvalid("data",
			fmt.Sprintf("Invalid data: at most %d bytes of JSON (got %d).", MaxDataBytes, buf.Len()))
	}
	if err := wire.CheckJSONB(buf.Bytes()); err != nil {
		return nil, apierror.ParameterInvalid("data", "Invalid data: "+err.Error()+".")
	}
	return json.RawMessage(`{"object":` + buf.String() + `}`), nil
}

// MaxDataDepth bounds the nesting of data: its event, wrapped as
// {"object": …} in a Kafka message, must stay within what Go's decoder (the
// ingester's and the deliverer's) reads, 10,000 levels.
const MaxDataDepth = 1000

// depth is the deepest nesting of objects and arrays in valid JSON.
func depth(b []byte) int {
	d, deepest, inString := 0, 0, false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case inString:
		case c == '{' || c == '[':
			d++
			deepest = max(deepest, d)
		case c == '}' || c == ']':
			d--
		}
	}
	return deepest
}

func (a *API) get(w http.ResponseWriter, r *http.Request, id identity.Identity) error {
	if err := router.NoQuery(r); err != nil {
		return err
	}
	evID := r.PathValue("id")
	// A malformed id cannot exist; answer without a database round trip.
	if !ids.Valid(evID, ids.Event) {
		return errNotFound
	}
	o, err := get(r.Context(), a.db, id.OrgID, id.Livemode, evID)
	if err != nil {
		return err
	}
	router.WriteJSON(w, http.StatusOK, o)
	return nil
}

func (a *API) list(w http.ResponseWriter, r *http.Request, id identity.Identity) error {
	q, err := parseListQuery(r)
	if err != nil {
		return err
	}
	page, more, err := list(r.Context(), a.db, id.OrgID, id.Livemode, q)
	if err != nil {
		return err
	}
	router.WriteJSON(w, http.StatusOK, router.NewList("/v1/events", page, more))
	return nil
}

// typePrefix parses the prefix form of a type filter, customer.* or
// customer.address.*, into the prefix it stands for ("customer.").
func typePrefix(s string) (string, bool) {
	p, ok := strings.CutSuffix(s, ".*")
	if !ok || len(s) > MaxTypeLen {
		return "", false
	}
	// "customer" alone is a valid prefix although not a valid type.
	if !ValidType(p) && !ValidType(p+".x") {
		return "", false
	}
	return p + ".", true
}

func parseListQuery(r *http.Request) (listQuery, error) {
	var q listQuery
	page, err := router.ParseList(r.URL.Query(), router.ListSpec{IDPrefix: ids.Event, Object: "an event", Created: true},
		func(key, v string) (bool, error) {
			if key != "type" {
				return false, nil
			}
			switch prefix, isPrefix := typePrefix(v); {
			case v == "*":
			case isPrefix:
				q.TypePrefix = prefix
			case ValidType(v):
				q.Type = v
			default:
				return true, apierror.ParameterInvalid("type",
					"Invalid type: expected an event type (customer.created) or a prefix ending in .* (customer.*).")
			}
			return true, nil
		})
	q.ListQuery = page
	return q, err
}

var (
	_ router.Routes = (*API)(nil)
	_ Producer      = (*outbox.Producer)(nil)
)
