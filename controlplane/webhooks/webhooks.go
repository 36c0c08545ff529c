// Package webhooks is the control plane's webhook API (DESIGN §5, §8):
// endpoint management (/v1/webhook-endpoints: create, list, retrieve,
// update, delete, rotate-secret, recover, test) and the delivery tools
// (/v1/webhook-deliveries: list, retrieve with every attempt, retry). The
// deliverer does the sending; this package only writes the state it acts on.
//
// Every query is scoped by the caller's organisation and environment, so
// another tenant's endpoint or delivery is a 404. Every change is written
// in one transaction with its audit entry (controlplane/audit). Service
// holds those changes, taking the audit actor, organisation and
// environment explicitly: the HTTP handlers call it for the request's API
// key, the dashboard for a signed-in user.
//
// # Signing secrets
//
// Secrets ("whsec_" + base64 of 32 random bytes) are returned once, when an
// endpoint is created or its secret rotated, and stored only sealed with
// the master key (internal/secretbox), the secret row's id being the
// additional data. A rotation adds a secret and gives the older ones an
// expiry (expires_in, default one day); until then the deliverer signs with
// every unexpired secret. ActiveSecrets reads them back for the deliverer
// and the dashboard.
//
// # Manual attempts (the contract with the deliverer)
//
// A retry (POST /v1/webhook-deliveries/{id}/retry), a recovery (POST
// /v1/webhook-endpoints/{id}/recover) and a test (POST
// /v1/webhook-endpoints/{id}/test) all leave deliveries in the same state:
// status 'pending', next_attempt_at = now, manual_pending = true (migration
// 0006). The deliverer claims them like any due delivery, clears
// manual_pending as it claims the attempt (so a retry asked for while that
// attempt is in flight sets it again and is kept; migration 0011), and
// records the attempt with trigger 'manual'; a manual attempt goes out even to a disabled endpoint, because it
// is the user's explicit request. Single retries and tests are therefore
// allowed on disabled endpoints (to check a fix before re-enabling);
// recovery, which re-sends in bulk, requires the endpoint to be enabled.
//
// A test never reaches Kafka: it is an event row of type
// webhook_endpoint.test whose data.object is the endpoint, plus one
// delivery for that endpoint alone, inserted together. Producing it would
// fan it out to every endpoint subscribed to "*". GET /v1/events lists it
// like any other event, so its payload can be inspected.
package webhooks

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/controlplane/events"
	"github.com/gatehouse/gatehouse/controlplane/router"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/secretbox"
	"github.com/gatehouse/gatehouse/internal/ssrf"
)

// Scopes of the webhook API. Secret keys hold "*", which grants both.
const (
	ScopeRead  = "webhooks:read"
	ScopeWrite = "webhooks:write"
)

// TestEventType is the type of the events POST …/test sends.
const TestEventType = events.TestType

// Limits.
const (
	MaxEnabledEvents    = 100
	MaxDescriptionLen   = 5000
	MaxURLLen           = 2048
	maxMetadataKeys     = 50
	maxMetadataKeyLen   = 40
	maxMetadataValueLen = 500
	// DefaultRotationGrace is how long the old secret keeps signing after a
	// rotation unless expires_in says otherwise; MaxRotationGrace bounds it.
	DefaultRotationGrace = 24 * time.Hour
	MaxRotationGrace     = 7 * 24 * time.Hour
	// MaxActiveSecrets bounds the signatures on one delivery. A rotation
	// with expires_in 0 is always allowed, so a leaked secret can always be
	// replaced at once.
	MaxActiveSecrets = 5
	// RecoverWindow and MaxRecover bound one recovery.
	RecoverWindow = 7 * 24 * time.Hour
	MaxRecover    = 10000
	// urlCheckTimeout bounds the DNS lookup of a new endpoint URL.
	urlCheckTimeout = 5 * time.Second
)

// DB is what the API needs from Postgres: a *pgxpool.Pool.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Config wires the API.
type Config struct {
	DB DB
	// Box seals signing secrets (MASTER_KEY).
	Box *secretbox.Box
	// URLPolicy decides which endpoint URLs are acceptable: Allow is the
	// operator's allowlist (WEBHOOK_ALLOW_CIDRS). https is required in live
	// mode whatever RequireHTTPS says, and everywhere when it is true.
	URLPolicy ssrf.Policy
	Logger    *zap.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Service makes the webhook changes on behalf of any actor: the /v1
// handlers call it for the API key of the request, the dashboard for a
// signed-in user. Every method is scoped to an organisation and
// environment (another tenant's id is not found) and writes its audit
// entry, naming the actor, in the same transaction as the change.
type Service struct {
	db     DB
	box    *secretbox.Box
	policy ssrf.Policy
	now    func() time.Time
}

// NewService returns the service; cfg.Logger is not used.
func NewService(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{db: cfg.DB, box: cfg.Box, policy: cfg.URLPolicy, now: cfg.Now}
}

// API serves /v1/webhook-endpoints and /v1/webhook-deliveries.
type API struct {
	svc *Service
	db  DB
	log *zap.Logger
}

// NewAPI returns the webhook API.
func NewAPI(cfg Config) *API {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	svc := NewService(cfg)
	return &API{svc: svc, db: svc.db, log: cfg.Logger}
}

// Register adds the routes (router.Routes).
func (a *API) Register(r *router.Router) {
	r.HandleFunc("POST /v1/webhook-endpoints", a.handle(ScopeWrite, a.createEndpoint))
	r.HandleFunc("GET /v1/webhook-endpoints", a.handle(ScopeRead, a.listEndpoints))
	r.HandleFunc("GET /v1/webhook-endpoints/{id}", a.handle(ScopeRead, a.getEndpoint))
	r.HandleFunc("POST /v1/webhook-endpoints/{id}", a.handle(ScopeWrite, a.updateEndpoint))
	r.HandleFunc("DELETE /v1/webhook-endpoints/{id}", a.handle(ScopeWrite, a.deleteEndpoint))
	r.HandleFunc("POST /v1/webhook-endpoints/{id}/rotate-secret", a.handle(ScopeWrite, a.rotateSecret))
	r.HandleFunc("POST /v1/webhook-endpoints/{id}/recover", a.handle(ScopeWrite, a.recoverEndpoint))
	r.HandleFunc("POST /v1/webhook-endpoints/{id}/test", a.handle(ScopeWrite, a.testEndpoint))
	r.HandleFunc("GET /v1/webhook-deliveries", a.handle(ScopeRead, a.listDeliveries))
	r.HandleFunc("GET /v1/webhook-deliveries/{id}", a.handle(ScopeRead, a.getDelivery))
	r.HandleFunc("POST /v1/webhook-deliveries/{id}/retry", a.handle(ScopeWrite, a.retryDelivery))
}

// caller is who is calling, as the gateway vouched, and the audit actor
// that stands for them.
type caller struct {
	identity.Identity
	actor audit.Actor
}

func auditEntry(actor audit.Actor, org string, livemode bool, action, targetType, targetID string, at time.Time,
	data map[string]any) audit.Entry {
	return audit.Entry{OrganizationID: org, Livemode: &livemode, Actor: actor, Action: action,
		TargetType: targetType, TargetID: targetID, Data: data, CreatedAt: at}
}

// Sentinel errors of missing objects, for errors.Is. handle turns them
// into 404s naming the id from the path; other callers name it themselves.
var (
	ErrEndpointNotFound = errors.New("webhook endpoint not found")
	ErrDeliveryNotFound = errors.New("webhook delivery not found")
)

// handle checks the caller's scope and turns the endpoint's error into the
// error object, in one place.
func (a *API) handle(scope string, h func(http.ResponseWriter, *http.Request, caller) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := router.Caller(r, scope)
		if err == nil {
			err = h(w, r, caller{Identity: id, actor: audit.Actor{Type: audit.ActorAPIKey, ID: id.KeyID}})
		}
		if err == nil {
			return
		}
		switch {
		case errors.Is(err, ErrEndpointNotFound):
			err = apierror.NotFound("webhook_endpoint", r.PathValue("id"))
		case errors.Is(err, ErrDeliveryNotFound):
			err = apierror.NotFound("webhook_delivery", r.PathValue("id"))
		}
		router.Fail(w, r, a.log, "webhooks", err)
	}
}

// inTx runs f in a transaction (pgx.BeginFunc: commit on nil, else roll back).
func (s *Service) inTx(ctx context.Context, f func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.db, f)
}

var _ router.Routes = (*API)(nil)
