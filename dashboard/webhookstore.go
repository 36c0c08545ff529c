package dashboard

import (
	"context"
	"errors"
	"time"

	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/controlplane/webhooks"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/secretbox"
	"github.com/gatehouse/gatehouse/internal/ssrf"
)

// SQLWebhooks implements Webhooks with the service behind the /v1 webhook
// API (controlplane/webhooks), acting for the signed-in user: the same
// validation, audit actions and contract with the deliverer.
type SQLWebhooks struct {
	DB  DB
	Box *secretbox.Box
	// URLPolicy is the operator's SSRF policy (WEBHOOK_ALLOW_CIDRS); https
	// is always required in live mode.
	URLPolicy ssrf.Policy
	Now       func() time.Time
}

var _ Webhooks = (*SQLWebhooks)(nil)

func (w *SQLWebhooks) service() *webhooks.Service {
	return webhooks.NewService(webhooks.Config{DB: w.DB, Box: w.Box, URLPolicy: w.URLPolicy, Now: w.Now})
}

// notFound names the missing object, as the API's error handling does for
// the id in its path.
func notFound(err error, id string) error {
	switch {
	case errors.Is(err, webhooks.ErrEndpointNotFound):
		return apierror.NotFound("webhook_endpoint", id)
	case errors.Is(err, webhooks.ErrDeliveryNotFound):
		return apierror.NotFound("webhook_delivery", id)
	}
	return err
}

// CreateEndpoint implements Webhooks.
func (w *SQLWebhooks) CreateEndpoint(ctx context.Context, actor audit.Actor, t Tenant, p EndpointParams) (string, string, error) {
	e, err := w.service().CreateEndpoint(ctx, actor, t.OrganizationID, t.Livemode, p)
	if err != nil {
		return "", "", err
	}
	return e.ID, e.Secret, nil
}

// UpdateEndpoint implements Webhooks.
func (w *SQLWebhooks) UpdateEndpoint(ctx context.Context, actor audit.Actor, t Tenant, id string, p EndpointParams) error {
	_, err := w.service().UpdateEndpoint(ctx, actor, t.OrganizationID, t.Livemode, id, p)
	return notFound(err, id)
}

// DeleteEndpoint implements Webhooks.
func (w *SQLWebhooks) DeleteEndpoint(ctx context.Context, actor audit.Actor, t Tenant, id string) error {
	return notFound(w.service().DeleteEndpoint(ctx, actor, t.OrganizationID, t.Livemode, id), id)
}

// RotateSecret implements Webhooks.
func (w *SQLWebhooks) RotateSecret(ctx context.Context, actor audit.Actor, t Tenant, id string, grace time.Duration) (string, error) {
	e, err := w.service().RotateSecret(ctx, actor, t.OrganizationID, t.Livemode, id, grace)
	return e.Secret, notFound(err, id)
}

// TestEndpoint implements Webhooks.
func (w *SQLWebhooks) TestEndpoint(ctx context.Context, actor audit.Actor, t Tenant, id string) (string, error) {
	d, err := w.service().TestEndpoint(ctx, actor, t.OrganizationID, t.Livemode, id, webhooks.TestOrigin{})
	return d.ID, notFound(err, id)
}

// Recover implements Webhooks.
func (w *SQLWebhooks) Recover(ctx context.Context, actor audit.Actor, t Tenant, id string, since time.Time,
	after string) (webhooks.Recovery, error) {
	rec, err := w.service().RecoverEndpoint(ctx, actor, t.OrganizationID, t.Livemode, id, since, after)
	return rec, notFound(err, id)
}

// RetryDelivery implements Webhooks.
func (w *SQLWebhooks) RetryDelivery(ctx context.Context, actor audit.Actor, t Tenant, id string) error {
	_, err := w.service().RetryDelivery(ctx, actor, t.OrganizationID, t.Livemode, id)
	return notFound(err, id)
}
