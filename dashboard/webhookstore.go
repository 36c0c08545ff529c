package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/controlplane/events"
	"github.com/gatehouse/gatehouse/controlplane/webhooks"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/apiversion"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/secretbox"
	"github.com/gatehouse/gatehouse/internal/ssrf"
	"github.com/gatehouse/gatehouse/internal/whsign"
	"github.com/gatehouse/gatehouse/internal/wire"
)

// SQLWebhooks implements Webhooks over the tables of controlplane/webhooks,
// with the same semantics as its /v1 API: the same validation, the same
// audit actions, and the same contract with the deliverer for manual
// attempts (status pending, next_attempt_at now, manual_pending). It
// exists because that package exposes its operations only as HTTP
// handlers acting for an API key; when it exports them with an actor, this
// type becomes a thin adapter.
type SQLWebhooks struct {
	DB  DB
	Box *secretbox.Box
	// URLPolicy is the operator's SSRF policy (WEBHOOK_ALLOW_CIDRS); https
	// is always required in live mode.
	URLPolicy ssrf.Policy
	Now       func() time.Time
}

var _ Webhooks = (*SQLWebhooks)(nil)

const (
	secretIDPrefix    = "wesec"
	maxActiveSecrets  = webhooks.MaxActiveSecrets
	maxRecoverPerCall = webhooks.MaxRecover
)

func (w *SQLWebhooks) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

func entry(actor audit.Actor, t Tenant, action, targetType, targetID string, at time.Time, data map[string]any) audit.Entry {
	live := t.Livemode
	return audit.Entry{OrganizationID: t.OrganizationID, Livemode: &live, Actor: actor, Action: action,
		TargetType: targetType, TargetID: targetID, Data: data, CreatedAt: at}
}

func errEndpointMissing(id string) error { return apierror.NotFound("webhook_endpoint", id) }

// checkURL mirrors controlplane/webhooks: destinations the deliverer would
// refuse are refused now, with a reason.
func (w *SQLWebhooks) checkURL(ctx context.Context, raw string, live bool) error {
	if raw == "" {
		return apierror.ParameterMissing("url")
	}
	if len(raw) > 2048 || !utf8.ValidString(raw) {
		return apierror.InvalidRequest("url_invalid", "url", "Invalid url: at most 2048 characters of valid UTF-8.")
	}
	p := w.URLPolicy
	p.RequireHTTPS = p.RequireHTTPS || live
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := ssrf.CheckURL(ctx, raw, p)
	if err == nil {
		return nil
	}
	detail := func(sentinel error) string { return strings.TrimPrefix(err.Error(), sentinel.Error()+": ") }
	var msg string
	switch {
	case errors.Is(err, ssrf.ErrInvalidURL) && live && strings.Contains(err.Error(), "https is required"):
		msg = "Invalid url: live mode webhook endpoints must use https."
	case errors.Is(err, ssrf.ErrInvalidURL):
		msg = "Invalid url: " + detail(ssrf.ErrInvalidURL) + "."
	case errors.Is(err, ssrf.ErrForbidden):
		msg = "Invalid url: webhooks may only be sent to publicly routable addresses, and " + detail(ssrf.ErrForbidden) + " is not one."
	case errors.Is(err, ssrf.ErrResolve):
		msg = "Invalid url: the host name does not resolve (" + detail(ssrf.ErrResolve) + ")."
	default:
		msg = "Invalid url: " + err.Error() + "."
	}
	return apierror.InvalidRequest("url_invalid", "url", msg)
}

func validEvents(list []string) ([]string, error) {
	if len(list) == 0 {
		return nil, apierror.ParameterInvalid("enabled_events", `Choose at least one event type, or "*" for every event.`)
	}
	if len(list) > webhooks.MaxEnabledEvents {
		return nil, apierror.ParameterInvalid("enabled_events",
			fmt.Sprintf("At most %d event types; use a prefix such as customer.* or \"*\".", webhooks.MaxEnabledEvents))
	}
	out := make([]string, 0, len(list))
	for _, p := range list {
		ok := p == "*"
		if prefix, isPrefix := strings.CutSuffix(p, ".*"); isPrefix {
			ok = len(p) <= events.MaxTypeLen && (events.ValidType(prefix) || events.ValidType(prefix+".x"))
		} else if !ok {
			ok = events.ValidType(p)
		}
		if !ok {
			return nil, apierror.ParameterInvalid("enabled_events",
				fmt.Sprintf(`Invalid event type %q: use a type such as customer.created, a prefix such as customer.*, or "*".`, p))
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

func validDescription(p *string) error {
	if p != nil && (utf8.RuneCountInString(*p) > webhooks.MaxDescriptionLen || strings.IndexByte(*p, 0) >= 0 || !utf8.ValidString(*p)) {
		return apierror.ParameterInvalid("description", fmt.Sprintf("The description must be at most %d characters.", webhooks.MaxDescriptionLen))
	}
	return nil
}

// redactURL keeps tokens in query strings and user info out of the audit log.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Scheme + "://" + u.Host + u.Path
}

func (w *SQLWebhooks) addSecret(ctx context.Context, tx pgx.Tx, endpointID string, now time.Time) (string, error) {
	if w.Box == nil {
		return "", errors.New("dashboard: no master key to seal webhook secrets")
	}
	secret := whsign.NewSecret()
	id := ids.NewAt(secretIDPrefix, now)
	// The row id is the additional data, as controlplane/webhooks and the
	// deliverer expect.
	if _, err := tx.Exec(ctx, `INSERT INTO webhook_endpoint_secrets (id, endpoint_id, ciphertext, created_at)
		VALUES ($1, $2, $3, $4)`, id, endpointID, w.Box.Seal([]byte(secret), []byte(id)), now); err != nil {
		return "", fmt.Errorf("storing signing secret: %w", err)
	}
	return secret, nil
}

// CreateEndpoint implements Webhooks.
func (w *SQLWebhooks) CreateEndpoint(ctx context.Context, actor audit.Actor, t Tenant, p EndpointParams) (string, string, error) {
	if p.URL == nil {
		return "", "", apierror.ParameterMissing("url")
	}
	evs, err := validEvents(p.EnabledEvents)
	if err != nil {
		return "", "", err
	}
	if err := validDescription(p.Description); err != nil {
		return "", "", err
	}
	if p.APIVersion != nil && *p.APIVersion != "" && !apiversion.Valid(*p.APIVersion) {
		return "", "", apierror.ParameterInvalid("api_version", "Unknown API version.")
	}
	if err := w.checkURL(ctx, *p.URL, t.Livemode); err != nil {
		return "", "", err
	}
	now := w.now()
	id := ids.NewAt(ids.WebhookEndpoint, now)
	desc := ""
	if p.Description != nil {
		desc = *p.Description
	}
	var version *string
	if p.APIVersion != nil && *p.APIVersion != "" {
		version = p.APIVersion
	}
	var secret string
	err = pgx.BeginFunc(ctx, w.DB, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
			INSERT INTO webhook_endpoints (id, organization_id, livemode, url, description, enabled_events,
			                               status, api_version, metadata, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, 'enabled', $7, '{}', $8, $8)`,
			id, t.OrganizationID, t.Livemode, *p.URL, desc, evs, version, now); err != nil {
			return fmt.Errorf("creating webhook endpoint: %w", err)
		}
		var err error
		if secret, err = w.addSecret(ctx, tx, id, now); err != nil {
			return err
		}
		return audit.Record(ctx, tx, entry(actor, t, "webhook_endpoint.created", "webhook_endpoint", id, now,
			map[string]any{"url": redactURL(*p.URL), "enabled_events": evs}))
	})
	if err != nil {
		return "", "", err
	}
	return id, secret, nil
}

// UpdateEndpoint implements Webhooks.
func (w *SQLWebhooks) UpdateEndpoint(ctx context.Context, actor audit.Actor, t Tenant, id string, p EndpointParams) error {
	if p.EnabledEvents != nil {
		evs, err := validEvents(p.EnabledEvents)
		if err != nil {
			return err
		}
		p.EnabledEvents = evs
	}
	if err := validDescription(p.Description); err != nil {
		return err
	}
	if p.URL != nil {
		if err := w.checkURL(ctx, *p.URL, t.Livemode); err != nil {
			return err
		}
	}
	now := w.now()
	return pgx.BeginFunc(ctx, w.DB, func(tx pgx.Tx) error {
		var e struct {
			url, desc, status string
			evs               []string
			reason            *string
		}
		err := tx.QueryRow(ctx, `SELECT url, description, enabled_events, status, disabled_reason FROM webhook_endpoints
			WHERE organization_id = $1 AND livemode = $2 AND id = $3 FOR UPDATE`, t.OrganizationID, t.Livemode, id).
			Scan(&e.url, &e.desc, &e.evs, &e.status, &e.reason)
		if errors.Is(err, pgx.ErrNoRows) {
			return errEndpointMissing(id)
		}
		if err != nil {
			return fmt.Errorf("loading webhook endpoint: %w", err)
		}
		var changed []string
		data := map[string]any{}
		if p.URL != nil && *p.URL != e.url {
			e.url = *p.URL
			changed = append(changed, "url")
			data["url"] = redactURL(e.url)
		}
		if p.EnabledEvents != nil && !slices.Equal(p.EnabledEvents, e.evs) {
			data["enabled_events"] = map[string]any{"from": e.evs, "to": p.EnabledEvents}
			e.evs = p.EnabledEvents
			changed = append(changed, "enabled_events")
		}
		if p.Description != nil && *p.Description != e.desc {
			e.desc = *p.Description
			changed = append(changed, "description")
		}
		reenabled := false
		if p.Disabled != nil {
			want := webhooks.StatusEnabled
			if *p.Disabled {
				want = webhooks.StatusDisabled
			}
			if want != e.status {
				data["status"] = map[string]any{"from": e.status, "to": want}
				e.status = want
				changed = append(changed, "status")
				if *p.Disabled {
					reason := "Disabled in the dashboard."
					e.reason = &reason
				} else {
					e.reason, reenabled = nil, true
				}
			}
		}
		if len(changed) == 0 {
			return nil
		}
		// Re-enabling starts the endpoint's health afresh, as the API does.
		if _, err := tx.Exec(ctx, `
			UPDATE webhook_endpoints
			SET url = $4, enabled_events = $5, description = $6, status = $7, disabled_reason = $8, updated_at = $9,
			    failing_since = CASE WHEN $10 THEN NULL ELSE failing_since END,
			    failing_alert_level = CASE WHEN $10 THEN 0 ELSE failing_alert_level END
			WHERE organization_id = $1 AND livemode = $2 AND id = $3`,
			t.OrganizationID, t.Livemode, id, e.url, e.evs, e.desc, e.status, e.reason, now, reenabled); err != nil {
			return fmt.Errorf("updating webhook endpoint: %w", err)
		}
		data["changed"] = changed
		return audit.Record(ctx, tx, entry(actor, t, "webhook_endpoint.updated", "webhook_endpoint", id, now, data))
	})
}

// DeleteEndpoint implements Webhooks.
func (w *SQLWebhooks) DeleteEndpoint(ctx context.Context, actor audit.Actor, t Tenant, id string) error {
	now := w.now()
	return pgx.BeginFunc(ctx, w.DB, func(tx pgx.Tx) error {
		var u string
		err := tx.QueryRow(ctx, `DELETE FROM webhook_endpoints WHERE organization_id = $1 AND livemode = $2 AND id = $3
			RETURNING url`, t.OrganizationID, t.Livemode, id).Scan(&u)
		if errors.Is(err, pgx.ErrNoRows) {
			return errEndpointMissing(id)
		}
		if err != nil {
			return fmt.Errorf("deleting webhook endpoint: %w", err)
		}
		return audit.Record(ctx, tx, entry(actor, t, "webhook_endpoint.deleted", "webhook_endpoint", id, now,
			map[string]any{"url": redactURL(u)}))
	})
}

// RotateSecret implements Webhooks.
func (w *SQLWebhooks) RotateSecret(ctx context.Context, actor audit.Actor, t Tenant, id string, grace time.Duration) (string, error) {
	if grace < 0 || grace > webhooks.MaxRotationGrace {
		return "", apierror.ParameterInvalid("expires_in", "The old secret can keep signing for at most 7 days.")
	}
	now := w.now()
	expires := now.Add(grace)
	var secret string
	err := pgx.BeginFunc(ctx, w.DB, func(tx pgx.Tx) error {
		var found string
		err := tx.QueryRow(ctx, `SELECT id FROM webhook_endpoints WHERE organization_id = $1 AND livemode = $2 AND id = $3
			FOR UPDATE`, t.OrganizationID, t.Livemode, id).Scan(&found)
		if errors.Is(err, pgx.ErrNoRows) {
			return errEndpointMissing(id)
		}
		if err != nil {
			return fmt.Errorf("loading webhook endpoint: %w", err)
		}
		var active int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM webhook_endpoint_secrets
			WHERE endpoint_id = $1 AND (expires_at IS NULL OR expires_at > $2)`, id, now).Scan(&active); err != nil {
			return fmt.Errorf("counting signing secrets: %w", err)
		}
		if grace > 0 && active+1 > maxActiveSecrets {
			return apierror.ParameterInvalid("expires_in", fmt.Sprintf(
				"This endpoint already has %d signing secrets in use; rotate with \"Now\" to expire them, or wait until they expire.", active))
		}
		if _, err := tx.Exec(ctx, `UPDATE webhook_endpoint_secrets
			SET expires_at = LEAST(COALESCE(expires_at, 'infinity'), $3)
			WHERE endpoint_id = $1 AND (expires_at IS NULL OR expires_at > $2)`, id, now, expires); err != nil {
			return fmt.Errorf("expiring signing secrets: %w", err)
		}
		if secret, err = w.addSecret(ctx, tx, id, now); err != nil {
			return err
		}
		return audit.Record(ctx, tx, entry(actor, t, "webhook_endpoint.secret_rotated", "webhook_endpoint", id, now,
			map[string]any{"previous_secrets_expire_at": expires.Unix()}))
	})
	return secret, err
}

// TestEndpoint implements Webhooks: a webhook_endpoint.test event for this
// endpoint alone, never produced to Kafka (it would fan out).
func (w *SQLWebhooks) TestEndpoint(ctx context.Context, actor audit.Actor, t Tenant, id string) (string, error) {
	now := w.now()
	deliveryID := ids.NewAt(ids.Delivery, now)
	err := pgx.BeginFunc(ctx, w.DB, func(tx pgx.Tx) error {
		var e struct {
			url, desc, status string
			evs               []string
			version           *string
			created           time.Time
		}
		err := tx.QueryRow(ctx, `SELECT url, description, enabled_events, status, api_version, created_at
			FROM webhook_endpoints WHERE organization_id = $1 AND livemode = $2 AND id = $3`,
			t.OrganizationID, t.Livemode, id).Scan(&e.url, &e.desc, &e.evs, &e.status, &e.version, &e.created)
		if errors.Is(err, pgx.ErrNoRows) {
			return errEndpointMissing(id)
		}
		if err != nil {
			return fmt.Errorf("loading webhook endpoint: %w", err)
		}
		obj, err := json.Marshal(map[string]any{
			"id": id, "object": "webhook_endpoint", "created": e.created.Unix(), "livemode": t.Livemode, "url": e.url,
			"description": nonEmptyPtr(e.desc), "enabled_events": e.evs, "status": e.status, "api_version": e.version,
		})
		if err != nil {
			return fmt.Errorf("encoding endpoint: %w", err)
		}
		ev := wire.Event{
			V: 1, ID: ids.NewAt(ids.Event, now), OrganizationID: t.OrganizationID, Livemode: t.Livemode,
			Type: webhooks.TestEventType, Created: now.Unix(), APIVersion: apiversion.Latest(),
			Data: json.RawMessage(`{"object":` + string(obj) + `}`),
		}
		if e.version != nil && *e.version != "" {
			ev.APIVersion = *e.version
		}
		if _, err := events.Insert(ctx, tx, ev); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO webhook_deliveries (id, organization_id, livemode, event_id, endpoint_id, status, attempts,
			                                next_attempt_at, manual_pending, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, true, $6, $6)`,
			deliveryID, t.OrganizationID, t.Livemode, ev.ID, id, now); err != nil {
			return fmt.Errorf("creating test delivery: %w", err)
		}
		return audit.Record(ctx, tx, entry(actor, t, "webhook_endpoint.tested", "webhook_endpoint", id, now,
			map[string]any{"event": ev.ID, "delivery": deliveryID}))
	})
	return deliveryID, err
}

func nonEmptyPtr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// Recover implements Webhooks.
func (w *SQLWebhooks) Recover(ctx context.Context, actor audit.Actor, t Tenant, id string, since time.Time) (int64, bool, error) {
	now := w.now()
	switch {
	case since.After(now):
		return 0, false, apierror.ParameterInvalid("since", "The start of the recovery is in the future.")
	case since.Before(now.Add(-webhooks.RecoverWindow)):
		return 0, false, apierror.ParameterInvalid("since", "Recovery reaches back at most 7 days.")
	}
	var n int64
	var more bool
	err := pgx.BeginFunc(ctx, w.DB, func(tx pgx.Tx) error {
		var status string
		err := tx.QueryRow(ctx, `SELECT status FROM webhook_endpoints WHERE organization_id = $1 AND livemode = $2 AND id = $3
			FOR UPDATE`, t.OrganizationID, t.Livemode, id).Scan(&status)
		if errors.Is(err, pgx.ErrNoRows) {
			return errEndpointMissing(id)
		}
		if err != nil {
			return fmt.Errorf("loading webhook endpoint: %w", err)
		}
		if status != webhooks.StatusEnabled {
			return apierror.ParameterInvalid("id", "This endpoint is disabled: enable it before recovering its deliveries.")
		}
		tag, err := tx.Exec(ctx, `
			WITH picked AS (
				SELECT id FROM webhook_deliveries
				WHERE endpoint_id = $1 AND organization_id = $2 AND livemode = $3
				  AND status IN ('failed', 'dead') AND created_at >= $4
				ORDER BY created_at, id LIMIT $5 FOR UPDATE
			)
			UPDATE webhook_deliveries d
			SET status = 'pending', next_attempt_at = $6, manual_pending = true, updated_at = $6
			FROM picked WHERE d.id = picked.id`, id, t.OrganizationID, t.Livemode, since, maxRecoverPerCall, now)
		if err != nil {
			return fmt.Errorf("recovering deliveries: %w", err)
		}
		n = tag.RowsAffected()
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM webhook_deliveries
			WHERE endpoint_id = $1 AND organization_id = $2 AND livemode = $3
			  AND status IN ('failed', 'dead') AND created_at >= $4)`, id, t.OrganizationID, t.Livemode, since).Scan(&more); err != nil {
			return fmt.Errorf("recovering deliveries: %w", err)
		}
		return audit.Record(ctx, tx, entry(actor, t, "webhook_endpoint.recovered", "webhook_endpoint", id, now,
			map[string]any{"since": since.Unix(), "requeued": n, "has_more": more}))
	})
	return n, more, err
}

// RetryDelivery implements Webhooks.
func (w *SQLWebhooks) RetryDelivery(ctx context.Context, actor audit.Actor, t Tenant, id string) error {
	now := w.now()
	return pgx.BeginFunc(ctx, w.DB, func(tx pgx.Tx) error {
		var before, endpoint, event string
		err := tx.QueryRow(ctx, `SELECT status, endpoint_id, event_id FROM webhook_deliveries
			WHERE organization_id = $1 AND livemode = $2 AND id = $3 FOR UPDATE`, t.OrganizationID, t.Livemode, id).
			Scan(&before, &endpoint, &event)
		if errors.Is(err, pgx.ErrNoRows) {
			return apierror.NotFound("webhook_delivery", id)
		}
		if err != nil {
			return fmt.Errorf("loading webhook delivery: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE webhook_deliveries
			SET status = 'pending', next_attempt_at = $4, manual_pending = true, updated_at = $4
			WHERE organization_id = $1 AND livemode = $2 AND id = $3`, t.OrganizationID, t.Livemode, id, now); err != nil {
			return fmt.Errorf("retrying webhook delivery: %w", err)
		}
		return audit.Record(ctx, tx, entry(actor, t, "webhook_delivery.retried", "webhook_delivery", id, now,
			map[string]any{"endpoint": endpoint, "event": event, "previous_status": before}))
	})
}
