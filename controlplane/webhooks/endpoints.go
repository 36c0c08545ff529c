package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/controlplane/events"
	"github.com/gatehouse/gatehouse/controlplane/router"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/apiversion"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/redact"
	"github.com/gatehouse/gatehouse/internal/ssrf"
	"github.com/gatehouse/gatehouse/internal/wire"
)

// Endpoint is the webhook_endpoint object.
type Endpoint struct {
	ID            string   `json:"id"`
	Object        string   `json:"object"` // "webhook_endpoint"
	Created       int64    `json:"created"`
	Livemode      bool     `json:"livemode"`
	URL           string   `json:"url"`
	Description   *string  `json:"description"`
	EnabledEvents []string `json:"enabled_events"`
	// Status is enabled or disabled; DisabledReason says why when the
	// platform disabled it (410 Gone, failing too long) or a user did.
	Status         string            `json:"status"`
	DisabledReason *string           `json:"disabled_reason"`
	APIVersion     *string           `json:"api_version"`
	Metadata       map[string]string `json:"metadata"`
	// Secret is present only when it was just created (create, rotate-secret).
	Secret string `json:"secret,omitempty"`
}

// Endpoint statuses.
const (
	StatusEnabled  = "enabled"
	StatusDisabled = "disabled"
)

// reasonUserDisabled is disabled_reason when a caller disabled the endpoint.
const reasonUserDisabled = "Disabled through the API."

// endpointRow is a webhook_endpoints row.
type endpointRow struct {
	ID             string            `db:"id"`
	Livemode       bool              `db:"livemode"`
	URL            string            `db:"url"`
	Description    string            `db:"description"`
	EnabledEvents  []string          `db:"enabled_events"`
	Status         string            `db:"status"`
	DisabledReason *string           `db:"disabled_reason"`
	APIVersion     *string           `db:"api_version"`
	Metadata       map[string]string `db:"metadata"`
	CreatedAt      time.Time         `db:"created_at"`
}

const endpointColumns = `id, livemode, url, description, enabled_events, status, disabled_reason, api_version,
	metadata, created_at`

func (e endpointRow) object() Endpoint {
	o := Endpoint{
		ID: e.ID, Object: "webhook_endpoint", Created: e.CreatedAt.Unix(), Livemode: e.Livemode, URL: e.URL,
		EnabledEvents: e.EnabledEvents, Status: e.Status, DisabledReason: e.DisabledReason,
		APIVersion: e.APIVersion, Metadata: e.Metadata,
	}
	if e.Description != "" {
		o.Description = &e.Description
	}
	if o.Metadata == nil {
		o.Metadata = map[string]string{}
	}
	if o.EnabledEvents == nil {
		o.EnabledEvents = []string{}
	}
	return o
}

// loadEndpoint reads one of org's endpoints in livemode; lock adds FOR
// UPDATE.
func loadEndpoint(ctx context.Context, q Querier, org string, livemode bool, id string, lock bool) (endpointRow, error) {
	if !ids.Valid(id, ids.WebhookEndpoint) {
		return endpointRow{}, ErrEndpointNotFound
	}
	sql := `SELECT ` + endpointColumns + ` FROM webhook_endpoints
		WHERE organization_id = $1 AND livemode = $2 AND id = $3`
	if lock {
		sql += ` FOR UPDATE`
	}
	rows, err := q.Query(ctx, sql, org, livemode, id)
	if err != nil {
		return endpointRow{}, fmt.Errorf("loading webhook endpoint: %w", err)
	}
	e, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[endpointRow])
	if errors.Is(err, pgx.ErrNoRows) {
		return endpointRow{}, ErrEndpointNotFound
	}
	if err != nil {
		return endpointRow{}, fmt.Errorf("loading webhook endpoint: %w", err)
	}
	return e, nil
}

// EndpointParams are the fields of an endpoint a caller sets. On update,
// nil leaves a field unchanged.
type EndpointParams struct {
	URL           *string
	EnabledEvents []string // nil: not sent
	Description   *string  // nil: not sent; "" clears
	// APIVersion pins the version of the payloads; it can only be set at
	// creation, where nil or "" means the organisation's default.
	APIVersion *string
	Disabled   *bool
	// metadata is only changed through the API, which reads it from the
	// request body.
	metadata metadataChange
}

func readEndpointParams(p router.Params, create bool) (EndpointParams, error) {
	var ep EndpointParams
	allowed := []string{"url", "enabled_events", "description", "metadata", "api_version"}
	if !create {
		allowed = []string{"url", "enabled_events", "description", "metadata", "disabled", "api_version"}
	}
	if err := p.Only(allowed...); err != nil {
		return ep, err
	}
	if s, present, err := p.Str("url"); err != nil {
		return ep, err
	} else if present {
		if s == nil || *s == "" {
			return ep, apierror.ParameterMissing("url")
		}
		if err := validateText("url", *s, MaxURLLen); err != nil {
			return ep, err
		}
		ep.URL = s
	} else if create {
		return ep, apierror.ParameterMissing("url")
	}

	if list, present, err := p.Strings("enabled_events"); err != nil {
		return ep, err
	} else if present {
		if ep.EnabledEvents, err = validEnabledEvents(list); err != nil {
			return ep, err
		}
	} else if create {
		return ep, apierror.ParameterMissing("enabled_events")
	}

	if s, present, err := p.Str("description"); err != nil {
		return ep, err
	} else if present {
		d := ""
		if s != nil {
			d = *s
		}
		if err := validateText("description", d, MaxDescriptionLen); err != nil {
			return ep, err
		}
		ep.Description = &d
	}

	if s, present, err := p.Str("api_version"); err != nil {
		return ep, err
	} else if present {
		if !create {
			return ep, errAPIVersionFixed
		}
		if s != nil && *s != "" {
			if err := validAPIVersion(*s); err != nil {
				return ep, err
			}
			ep.APIVersion = s
		}
	}

	if b, present, err := p.Bool("disabled"); err != nil {
		return ep, err
	} else if present {
		ep.Disabled = &b
	}

	if raw, present := p["metadata"]; present {
		mc, err := parseMetadata(raw)
		if err != nil {
			return ep, err
		}
		ep.metadata = mc
	}
	return ep, nil
}

// errAPIVersionFixed refuses an api_version on update.
var errAPIVersionFixed = apierror.ParameterInvalid("api_version",
	"An endpoint's api_version cannot be changed: create an endpoint with the new version, move to it, then delete this one.")

func validAPIVersion(v string) error {
	if !apiversion.Valid(v) {
		return apierror.ParameterInvalid("api_version",
			fmt.Sprintf("Unknown api_version %q; supported versions are %s.", v, strings.Join(apiversion.Supported, ", ")))
	}
	return nil
}

// validate checks p as readEndpointParams does, for callers that build p
// themselves; it normalises EnabledEvents and an empty APIVersion.
func (p *EndpointParams) validate(create bool) error {
	switch {
	case p.URL != nil && *p.URL != "":
		if err := validateText("url", *p.URL, MaxURLLen); err != nil {
			return err
		}
	case create || p.URL != nil:
		return apierror.ParameterMissing("url")
	}
	switch {
	case p.EnabledEvents != nil:
		evs, err := validEnabledEvents(p.EnabledEvents)
		if err != nil {
			return err
		}
		p.EnabledEvents = evs
	case create:
		return apierror.ParameterMissing("enabled_events")
	}
	if p.Description != nil {
		if err := validateText("description", *p.Description, MaxDescriptionLen); err != nil {
			return err
		}
	}
	if p.APIVersion != nil {
		switch {
		case !create:
			return errAPIVersionFixed
		case *p.APIVersion == "":
			p.APIVersion = nil
		default:
			if err := validAPIVersion(*p.APIVersion); err != nil {
				return err
			}
		}
	}
	return nil
}

// validEnabledEvents checks and de-duplicates the subscription list: "*"
// (every event), an event type (customer.created), or a prefix ending in
// ".*" (customer.* — every customer event). The deliverer matches with the
// same three rules.
func validEnabledEvents(list []string) ([]string, error) {
	if len(list) == 0 {
		return nil, apierror.ParameterInvalid("enabled_events",
			`Invalid enabled_events: list at least one event type, or "*" for every event.`)
	}
	if len(list) > MaxEnabledEvents {
		return nil, apierror.ParameterInvalid("enabled_events",
			fmt.Sprintf("Invalid enabled_events: at most %d entries (got %d); use a prefix such as customer.* or \"*\".", MaxEnabledEvents, len(list)))
	}
	out := make([]string, 0, len(list))
	for i, p := range list {
		if !validPattern(p) {
			return nil, apierror.ParameterInvalid(fmt.Sprintf("enabled_events[%d]", i),
				fmt.Sprintf(`Invalid event type %q: use a type such as customer.created, a prefix such as customer.*, or "*".`, router.Printable(p)))
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

func validPattern(p string) bool {
	if p == "*" {
		return true
	}
	if prefix, ok := strings.CutSuffix(p, ".*"); ok {
		// "customer" alone is a valid prefix although not a valid type.
		return len(p) <= events.MaxTypeLen && (events.ValidType(prefix) || events.ValidType(prefix+".x"))
	}
	return events.ValidType(p)
}

// metadataChange is what a request does to metadata: optionally clear it
// all, then set keys; a key with value "" (or null) is deleted.
type metadataChange struct {
	clear bool
	keys  map[string]string
}

func (mc metadataChange) apply(m map[string]string) (map[string]string, error) {
	out := map[string]string{}
	if !mc.clear {
		maps.Copy(out, m)
	}
	for k, v := range mc.keys {
		if v == "" {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	if len(out) > maxMetadataKeys {
		return nil, apierror.ParameterInvalid("metadata",
			fmt.Sprintf("Metadata can have at most %d keys; this request would leave %d.", maxMetadataKeys, len(out)))
	}
	return out, nil
}

// parseMetadata reads metadata: an object of strings, or null or "" to
// clear it (Stripe's conventions, in JSON and forms alike).
func parseMetadata(raw json.RawMessage) (metadataChange, error) {
	var s string
	if router.IsNull(raw) || (json.Unmarshal(raw, &s) == nil && s == "") {
		return metadataChange{clear: true}, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return metadataChange{}, apierror.ParameterInvalid("metadata",
			`Invalid metadata: expected an object of string values, or null or "" to clear it.`)
	}
	mc := metadataChange{keys: make(map[string]string, len(obj))}
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		param := "metadata[" + router.Printable(k) + "]"
		switch {
		case k == "":
			return mc, apierror.ParameterInvalid("metadata", "Metadata keys must not be empty.")
		case strings.ContainsAny(k, "[]"):
			return mc, apierror.ParameterInvalid("metadata", "Metadata keys must not contain '[' or ']'.")
		}
		if err := validateText("metadata", k, maxMetadataKeyLen); err != nil {
			return mc, apierror.ParameterInvalid("metadata",
				fmt.Sprintf("Invalid metadata key: keys must be valid UTF-8 without NUL and at most %d characters.", maxMetadataKeyLen))
		}
		var v string
		if !router.IsNull(obj[k]) {
			if err := json.Unmarshal(obj[k], &v); err != nil {
				return mc, apierror.ParameterInvalid(param, fmt.Sprintf("Invalid %s: metadata values must be strings.", param))
			}
		}
		if err := validateText(param, v, maxMetadataValueLen); err != nil {
			return mc, err
		}
		mc.keys[k] = v
	}
	if len(mc.keys) > maxMetadataKeys {
		return mc, apierror.ParameterInvalid("metadata", fmt.Sprintf("Metadata can have at most %d keys.", maxMetadataKeys))
	}
	return mc, nil
}

// validateText checks what every stored string must satisfy. Postgres text
// cannot hold NUL, so catching it here keeps it a 400, not a 500.
func validateText(param, v string, maxLen int) error {
	if err := apierror.CheckText(param, v); err != nil {
		return err
	}
	if n := utf8.RuneCountInString(v); n > maxLen {
		return apierror.ParameterInvalid(param, fmt.Sprintf("Invalid %s: must be at most %d characters (got %d).", param, maxLen, n))
	}
	return nil
}

// checkURL refuses destinations the deliverer would refuse (internal/ssrf),
// so a user learns at once, with a reason, instead of from failed
// deliveries. The deliverer checks again when it dials.
func (s *Service) checkURL(ctx context.Context, raw string, livemode bool) error {
	p := s.policy
	p.RequireHTTPS = p.RequireHTTPS || livemode
	ctx, cancel := context.WithTimeout(ctx, urlCheckTimeout)
	defer cancel()
	err := ssrf.CheckURL(ctx, raw, p)
	if err == nil {
		return nil
	}
	detail := func(sentinel error) string { return strings.TrimPrefix(err.Error(), sentinel.Error()+": ") }
	var msg string
	switch {
	case errors.Is(err, ssrf.ErrInvalidURL) && livemode && strings.Contains(err.Error(), "https is required"):
		msg = "Invalid url: live mode webhook endpoints must use https."
	case errors.Is(err, ssrf.ErrInvalidURL):
		msg = "Invalid url: " + detail(ssrf.ErrInvalidURL) + "."
	case errors.Is(err, ssrf.ErrForbidden):
		msg = "Invalid url: webhooks may only be sent to publicly routable addresses; " + detail(ssrf.ErrForbidden) + "."
	case errors.Is(err, ssrf.ErrResolve):
		msg = "Invalid url: the host name does not resolve (" + detail(ssrf.ErrResolve) + ")."
	default:
		msg = "Invalid url: " + err.Error() + "."
	}
	return apierror.InvalidRequest("url_invalid", "url", msg)
}

// writeSecret answers with an endpoint carrying its new signing secret,
// marked Cache-Control: no-store so that no cache, and no idempotency record
// at the gateway (which keeps only that the request ran), holds the secret
// in plain text.
func writeSecret(w http.ResponseWriter, o Endpoint) {
	w.Header().Set("Cache-Control", "no-store")
	router.WriteJSON(w, http.StatusOK, o)
}

// disabledReason is disabled_reason when actor disables an endpoint, so
// the endpoint's page says where it was done.
func disabledReason(actor audit.Actor) string {
	if actor.Type == audit.ActorUser {
		return "Disabled in the dashboard."
	}
	return reasonUserDisabled
}

// MaxEndpoints is how many webhook endpoints an organisation may have in
// each environment, as Stripe allows. Every event is fanned out to every
// matching endpoint in the deliverer's shared rounds, so an unbounded list
// would let one tenant slow everyone's deliveries.
const MaxEndpoints = 16

// CreateEndpoint creates an endpoint in org's environment; the returned
// object carries the signing secret, the only time it is shown.
func (s *Service) CreateEndpoint(ctx context.Context, actor audit.Actor, org string, livemode bool, p EndpointParams) (Endpoint, error) {
	if err := p.validate(true); err != nil {
		return Endpoint{}, err
	}
	if err := s.checkURL(ctx, *p.URL, livemode); err != nil {
		return Endpoint{}, err
	}
	md, err := p.metadata.apply(nil)
	if err != nil {
		return Endpoint{}, err
	}
	now := s.now()
	row := endpointRow{
		ID: ids.NewAt(ids.WebhookEndpoint, now), Livemode: livemode, URL: *p.URL,
		EnabledEvents: p.EnabledEvents, Status: StatusEnabled, APIVersion: p.APIVersion, Metadata: md, CreatedAt: now,
	}
	if p.Description != nil {
		row.Description = *p.Description
	}
	var secret string
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		// The organisation's row lock orders concurrent creates, so two
		// cannot both take the last place. The count is a statement of its
		// own: one that waited for the lock must count what the creates it
		// waited for committed, which a subquery of the locking statement,
		// reading its snapshot from before the wait, would not see.
		if _, err := tx.Exec(ctx, `SELECT FROM organizations WHERE id = $1 FOR NO KEY UPDATE`, org); err != nil {
			return fmt.Errorf("locking the organisation: %w", err)
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM webhook_endpoints WHERE organization_id = $1 AND livemode = $2`,
			org, livemode).Scan(&n); err != nil {
			return fmt.Errorf("counting webhook endpoints: %w", err)
		}
		if n >= MaxEndpoints {
			env := "sandbox"
			if livemode {
				env = "live"
			}
			return apierror.InvalidRequest("limit_reached", "", fmt.Sprintf(
				"This organisation already has %d webhook endpoints in %s, the most it may have. Delete one it no longer uses, or have one receiver route events further.",
				n, env))
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO webhook_endpoints (id, organization_id, livemode, url, description, enabled_events,
			                               status, api_version, metadata, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)`,
			row.ID, org, row.Livemode, row.URL, row.Description, row.EnabledEvents, row.Status,
			row.APIVersion, row.Metadata, now); err != nil {
			return fmt.Errorf("creating webhook endpoint: %w", err)
		}
		var err error
		if secret, err = addSecret(ctx, tx, s.box, row.ID, now); err != nil {
			return err
		}
		return audit.Record(ctx, tx, auditEntry(actor, org, livemode, "webhook_endpoint.created", "webhook_endpoint", row.ID, now,
			map[string]any{"url": redact.EndpointURL(row.URL), "enabled_events": row.EnabledEvents}))
	})
	if err != nil {
		return Endpoint{}, err
	}
	o := row.object()
	o.Secret = secret
	return o, nil
}

func (a *API) createEndpoint(w http.ResponseWriter, r *http.Request, c caller) error {
	if err := router.NoQuery(r); err != nil {
		return err
	}
	p, err := router.ReadParams(w, r)
	if err != nil {
		return err
	}
	ep, err := readEndpointParams(p, true)
	if err != nil {
		return err
	}
	o, err := a.svc.CreateEndpoint(r.Context(), c.actor, c.OrgID, c.Livemode, ep)
	if err != nil {
		return err
	}
	writeSecret(w, o)
	return nil
}

func (a *API) getEndpoint(w http.ResponseWriter, r *http.Request, c caller) error {
	if err := router.NoQuery(r); err != nil {
		return err
	}
	e, err := loadEndpoint(r.Context(), a.db, c.OrgID, c.Livemode, r.PathValue("id"), false)
	if err != nil {
		return err
	}
	router.WriteJSON(w, http.StatusOK, e.object())
	return nil
}

func (a *API) listEndpoints(w http.ResponseWriter, r *http.Request, c caller) error {
	q, err := router.ParseList(r.URL.Query(), router.ListSpec{IDPrefix: ids.WebhookEndpoint, Object: "a webhook endpoint"}, nil)
	if err != nil {
		return err
	}
	f := router.PageSQL{}
	f.Add("organization_id = $%d", c.OrgID)
	f.Add("livemode = $%d", c.Livemode)
	sql, args, asc := f.Query(`SELECT `+endpointColumns+` FROM webhook_endpoints`, "id", q)
	rows, err := a.db.Query(r.Context(), sql, args...)
	if err != nil {
		return fmt.Errorf("listing webhook endpoints: %w", err)
	}
	rs, err := pgx.CollectRows(rows, pgx.RowToStructByName[endpointRow])
	if err != nil {
		return fmt.Errorf("listing webhook endpoints: %w", err)
	}
	rs, more := router.TrimPage(rs, q.Limit, asc)
	data := make([]Endpoint, len(rs))
	for i, e := range rs {
		data[i] = e.object()
	}
	router.WriteJSON(w, http.StatusOK, router.NewList("/v1/webhook-endpoints", data, more))
	return nil
}

// UpdateEndpoint changes one of org's endpoints in livemode. Re-enabling
// an endpoint starts its health afresh.
func (s *Service) UpdateEndpoint(ctx context.Context, actor audit.Actor, org string, livemode bool, id string,
	p EndpointParams) (Endpoint, error) {
	if err := p.validate(false); err != nil {
		return Endpoint{}, err
	}
	if !ids.Valid(id, ids.WebhookEndpoint) {
		return Endpoint{}, ErrEndpointNotFound
	}
	// The URL is checked (DNS included) before any row is locked.
	if p.URL != nil {
		if err := s.checkURL(ctx, *p.URL, livemode); err != nil {
			return Endpoint{}, err
		}
	}
	now := s.now()
	var out endpointRow
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		e, err := loadEndpoint(ctx, tx, org, livemode, id, true)
		if err != nil {
			return err
		}
		var changed []string
		data := map[string]any{}
		if p.URL != nil && *p.URL != e.URL {
			e.URL = *p.URL
			changed = append(changed, "url")
			data["url"] = redact.EndpointURL(e.URL)
		}
		if p.EnabledEvents != nil && !slices.Equal(p.EnabledEvents, e.EnabledEvents) {
			data["enabled_events"] = map[string]any{"from": e.EnabledEvents, "to": p.EnabledEvents}
			e.EnabledEvents = p.EnabledEvents
			changed = append(changed, "enabled_events")
		}
		if p.Description != nil && *p.Description != e.Description {
			e.Description = *p.Description
			changed = append(changed, "description")
		}
		if p.metadata.clear || len(p.metadata.keys) > 0 {
			md, err := p.metadata.apply(e.Metadata)
			if err != nil {
				return err
			}
			if !maps.Equal(md, e.Metadata) {
				e.Metadata = md
				changed = append(changed, "metadata")
			}
		}
		reenabled := false
		if p.Disabled != nil {
			want := StatusEnabled
			if *p.Disabled {
				want = StatusDisabled
			}
			if want != e.Status {
				data["status"] = map[string]any{"from": e.Status, "to": want}
				e.Status = want
				changed = append(changed, "status")
				if want == StatusDisabled {
					reason := disabledReason(actor)
					e.DisabledReason = &reason
				} else {
					e.DisabledReason = nil
					reenabled = true
				}
			}
		}
		out = e
		if len(changed) == 0 {
			return nil
		}
		// Re-enabling starts the endpoint's health afresh: with the old
		// failing_since the deliverer would disable it again on its first
		// failure. failing_alert_level (migration 0007) resets with it.
		if _, err := tx.Exec(ctx, `
			UPDATE webhook_endpoints
			SET url = $4, enabled_events = $5, description = $6, metadata = $7, status = $8,
			    disabled_reason = $9, updated_at = $10,
			    failing_since = CASE WHEN $11 THEN NULL ELSE failing_since END,
			    failing_alert_level = CASE WHEN $11 THEN 0 ELSE failing_alert_level END
			WHERE organization_id = $1 AND livemode = $2 AND id = $3`,
			org, livemode, e.ID, e.URL, e.EnabledEvents, e.Description, e.Metadata, e.Status,
			e.DisabledReason, now, reenabled); err != nil {
			return fmt.Errorf("updating webhook endpoint: %w", err)
		}
		data["changed"] = changed
		return audit.Record(ctx, tx, auditEntry(actor, org, livemode, "webhook_endpoint.updated", "webhook_endpoint", e.ID, now, data))
	})
	if err != nil {
		return Endpoint{}, err
	}
	return out.object(), nil
}

func (a *API) updateEndpoint(w http.ResponseWriter, r *http.Request, c caller) error {
	if err := router.NoQuery(r); err != nil {
		return err
	}
	p, err := router.ReadParams(w, r)
	if err != nil {
		return err
	}
	ep, err := readEndpointParams(p, false)
	if err != nil {
		return err
	}
	o, err := a.svc.UpdateEndpoint(r.Context(), c.actor, c.OrgID, c.Livemode, r.PathValue("id"), ep)
	if err != nil {
		return err
	}
	router.WriteJSON(w, http.StatusOK, o)
	return nil
}

// DeleteEndpoint deletes one of org's endpoints in livemode.
func (s *Service) DeleteEndpoint(ctx context.Context, actor audit.Actor, org string, livemode bool, id string) error {
	if !ids.Valid(id, ids.WebhookEndpoint) {
		return ErrEndpointNotFound
	}
	now := s.now()
	return s.inTx(ctx, func(tx pgx.Tx) error {
		var u string
		err := tx.QueryRow(ctx, `DELETE FROM webhook_endpoints
			WHERE organization_id = $1 AND livemode = $2 AND id = $3 RETURNING url`, org, livemode, id).Scan(&u)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrEndpointNotFound
		}
		if err != nil {
			return fmt.Errorf("deleting webhook endpoint: %w", err)
		}
		return audit.Record(ctx, tx, auditEntry(actor, org, livemode, "webhook_endpoint.deleted", "webhook_endpoint", id, now,
			map[string]any{"url": redact.EndpointURL(u)}))
	})
}

func (a *API) deleteEndpoint(w http.ResponseWriter, r *http.Request, c caller) error {
	if _, err := router.ReadBody(w, r); err != nil { // takes no parameters: a body with any is refused
		return err
	}
	id := r.PathValue("id")
	if err := a.svc.DeleteEndpoint(r.Context(), c.actor, c.OrgID, c.Livemode, id); err != nil {
		return err
	}
	router.WriteJSON(w, http.StatusOK, struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Deleted bool   `json:"deleted"`
	}{id, "webhook_endpoint", true})
	return nil
}

// errExpiresIn refuses a rotation grace out of range.
var errExpiresIn = apierror.ParameterInvalid("expires_in", fmt.Sprintf(
	"Invalid expires_in: seconds the current secret keeps signing, from 0 (expire it now) to %d (7 days).",
	int64(MaxRotationGrace/time.Second)))

// RotateSecret adds a signing secret to one of org's endpoints and makes
// the others expire after grace (sooner if they were due to already). The
// returned object carries the new secret.
func (s *Service) RotateSecret(ctx context.Context, actor audit.Actor, org string, livemode bool, id string,
	grace time.Duration) (Endpoint, error) {
	if grace < 0 || grace > MaxRotationGrace {
		return Endpoint{}, errExpiresIn
	}
	now := s.now()
	expires := now.Add(grace)
	var (
		e      endpointRow
		secret string
	)
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		if e, err = loadEndpoint(ctx, tx, org, livemode, id, true); err != nil {
			return err
		}
		var active int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM webhook_endpoint_secrets
			WHERE endpoint_id = $1 AND (expires_at IS NULL OR expires_at > $2)`, e.ID, now).Scan(&active); err != nil {
			return fmt.Errorf("counting signing secrets: %w", err)
		}
		if grace > 0 && active+1 > MaxActiveSecrets {
			return apierror.ParameterInvalid("expires_in", fmt.Sprintf(
				"This endpoint already has %d signing secrets in use; rotate with expires_in=0 to expire them now, or wait until they expire.", active))
		}
		// Expired secrets sign nothing, but the deliverer reads every row
		// of an endpoint: without this, rotating in a loop would grow them
		// without bound.
		if _, err := tx.Exec(ctx, `DELETE FROM webhook_endpoint_secrets
			WHERE endpoint_id = $1 AND expires_at <= $2`, e.ID, now); err != nil {
			return fmt.Errorf("removing expired signing secrets: %w", err)
		}
		// Secrets already due to expire sooner keep their earlier expiry.
		if _, err := tx.Exec(ctx, `UPDATE webhook_endpoint_secrets
			SET expires_at = LEAST(COALESCE(expires_at, 'infinity'), $3)
			WHERE endpoint_id = $1 AND (expires_at IS NULL OR expires_at > $2)`, e.ID, now, expires); err != nil {
			return fmt.Errorf("expiring signing secrets: %w", err)
		}
		if secret, err = addSecret(ctx, tx, s.box, e.ID, now); err != nil {
			return err
		}
		return audit.Record(ctx, tx, auditEntry(actor, org, livemode, "webhook_endpoint.secret_rotated", "webhook_endpoint", e.ID, now,
			map[string]any{"previous_secrets_expire_at": expires.Unix()}))
	})
	if err != nil {
		return Endpoint{}, err
	}
	o := e.object()
	o.Secret = secret
	return o, nil
}

func (a *API) rotateSecret(w http.ResponseWriter, r *http.Request, c caller) error {
	p, err := router.ReadBody(w, r, "expires_in")
	if err != nil {
		return err
	}
	grace := DefaultRotationGrace
	if n, present, err := p.Int("expires_in"); err != nil {
		return err
	} else if present {
		// Checked here too: a large n would overflow the Duration.
		if n < 0 || n > int64(MaxRotationGrace/time.Second) {
			return errExpiresIn
		}
		grace = time.Duration(n) * time.Second
	}
	o, err := a.svc.RotateSecret(r.Context(), c.actor, c.OrgID, c.Livemode, r.PathValue("id"), grace)
	if err != nil {
		return err
	}
	writeSecret(w, o)
	return nil
}

// Recovery is the result of POST /v1/webhook-endpoints/{id}/recover.
type Recovery struct {
	Object   string `json:"object"` // "webhook_endpoint_recovery"
	Endpoint string `json:"endpoint"`
	Livemode bool   `json:"livemode"`
	Since    int64  `json:"since"`
	// Requeued counts the failed and dead deliveries sent again.
	Requeued int64 `json:"requeued"`
	// LastDelivery is the id of the last delivery requeued, in id order
	// ("" when none was).
	LastDelivery string `json:"last_delivery,omitempty"`
	// HasMore says more remain beyond MaxRecover: call again with the same
	// since and starting_after = LastDelivery. (Without the cursor a call
	// would take the first ones again once their new attempts had failed.)
	HasMore bool `json:"has_more"`
}

// RecoverEndpoint queues a manual attempt of the failed and dead
// deliveries of one of org's endpoints created since then, in id order
// after the delivery id after ("" for the first), at most MaxRecover of
// them. The endpoint must be enabled.
func (s *Service) RecoverEndpoint(ctx context.Context, actor audit.Actor, org string, livemode bool, id string,
	since time.Time, after string) (Recovery, error) {
	now := s.now()
	switch {
	case after != "" && !ids.Valid(after, ids.Delivery):
		return Recovery{}, apierror.ParameterInvalid("starting_after",
			"Invalid starting_after: expected the last_delivery (whd_…) of the previous recovery.")
	case since.Unix() > now.Unix():
		return Recovery{}, apierror.ParameterInvalid("since", "Invalid since: it is in the future.")
	case since.Unix() < now.Add(-RecoverWindow).Unix() && after != "":
		// A continuation keeps its since while the window moves on
		// (someone waited before "Recover the next ones"): it reaches back
		// as far as the window still allows.
		since = now.Add(-RecoverWindow).Add(time.Second).Truncate(time.Second)
	case since.Unix() < now.Add(-RecoverWindow).Unix():
		return Recovery{}, apierror.ParameterInvalid("since", fmt.Sprintf(
			"Invalid since: recovery reaches back at most 7 days (since >= %d).", now.Add(-RecoverWindow).Unix()))
	}
	rec := Recovery{Object: "webhook_endpoint_recovery", Endpoint: id, Livemode: livemode, Since: since.Unix()}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		e, err := loadEndpoint(ctx, tx, org, livemode, id, true)
		if err != nil {
			return err
		}
		if e.Status != StatusEnabled {
			return apierror.ParameterInvalid("id",
				"The webhook endpoint "+id+" is disabled; enable it (disabled=false) before recovering its deliveries.")
		}
		const recoverable = `endpoint_id = $1 AND organization_id = $2 AND livemode = $3
			AND status IN ('failed', 'dead') AND created_at >= $4 AND id > $5`
		if err := tx.QueryRow(ctx, `
			WITH picked AS (
				SELECT id FROM webhook_deliveries WHERE `+recoverable+`
				ORDER BY id
				LIMIT $6
				FOR UPDATE
			), requeued AS (
				UPDATE webhook_deliveries d
				SET status = 'pending', next_attempt_at = $7, manual_pending = true, updated_at = $7
				FROM picked WHERE d.id = picked.id
				RETURNING d.id
			)
			SELECT count(*), coalesce(max(id), '') FROM requeued`, e.ID, org, livemode, since, after, MaxRecover, now).
			Scan(&rec.Requeued, &rec.LastDelivery); err != nil {
			return fmt.Errorf("recovering deliveries: %w", err)
		}
		if rec.LastDelivery != "" {
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM webhook_deliveries WHERE `+recoverable+`)`,
				e.ID, org, livemode, since, rec.LastDelivery).Scan(&rec.HasMore); err != nil {
				return fmt.Errorf("recovering deliveries: %w", err)
			}
		}
		return audit.Record(ctx, tx, auditEntry(actor, org, livemode, "webhook_endpoint.recovered", "webhook_endpoint", e.ID, now,
			map[string]any{"since": rec.Since, "requeued": rec.Requeued, "has_more": rec.HasMore}))
	})
	if err != nil {
		return Recovery{}, err
	}
	return rec, nil
}

func (a *API) recoverEndpoint(w http.ResponseWriter, r *http.Request, c caller) error {
	p, err := router.ReadBody(w, r, "since", "starting_after")
	if err != nil {
		return err
	}
	sinceUnix, present, err := p.Int("since")
	switch {
	case err != nil:
		return err
	case !present:
		return apierror.ParameterMissing("since")
	}
	after, present, err := p.Str("starting_after")
	switch {
	case err != nil:
		return err
	case present && after == nil:
		return apierror.ParameterInvalid("starting_after", "Invalid starting_after: expected a string.")
	}
	var afterID string
	if after != nil {
		afterID = *after
	}
	rec, err := a.svc.RecoverEndpoint(r.Context(), c.actor, c.OrgID, c.Livemode, r.PathValue("id"), time.Unix(sinceUnix, 0), afterID)
	if err != nil {
		return err
	}
	router.WriteJSON(w, http.StatusOK, rec)
	return nil
}

// TestOrigin is what a test event records about the request that asked
// for it. The zero value suits callers other than the API.
type TestOrigin struct {
	// APIVersion is the payload version when the endpoint pins none;
	// the latest when empty.
	APIVersion     string
	RequestID      string
	IdempotencyKey string
}

// TestEndpoint sends one of org's endpoints a webhook_endpoint.test event,
// and only it: see the package documentation. It returns the delivery.
func (s *Service) TestEndpoint(ctx context.Context, actor audit.Actor, org string, livemode bool, id string,
	origin TestOrigin) (Delivery, error) {
	now := s.now()
	var d deliveryRow
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		// Locked so that a concurrent delete cannot pull the endpoint from
		// under the delivery row.
		e, err := loadEndpoint(ctx, tx, org, livemode, id, true)
		if err != nil {
			return err
		}
		// The event is readable with events:read alone: its copy of the
		// endpoint leaves out the URL's query and credentials, as the
		// audit trail does.
		o := e.object()
		o.URL = redact.EndpointURL(o.URL)
		obj, err := json.Marshal(o)
		if err != nil {
			return fmt.Errorf("encoding endpoint: %w", err)
		}
		ev := wire.Event{
			V: 1, ID: ids.NewAt(ids.Event, now), OrganizationID: org, Livemode: livemode,
			Type: TestEventType, Created: now.Unix(), APIVersion: origin.APIVersion,
			Data:      json.RawMessage(`{"object":` + string(obj) + `}`),
			RequestID: origin.RequestID, IdempotencyKey: origin.IdempotencyKey,
		}
		if e.APIVersion != nil {
			ev.APIVersion = *e.APIVersion
		}
		if ev.APIVersion == "" {
			ev.APIVersion = apiversion.Latest()
		}
		if _, err := events.Insert(ctx, tx, ev); err != nil {
			return err
		}
		d = deliveryRow{
			ID: ids.NewAt(ids.Delivery, now), Livemode: livemode, EventID: ev.ID, EventType: &ev.Type,
			EndpointID: e.ID, Status: "pending", NextAttemptAt: &now, ManualPending: true, CreatedAt: now,
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO webhook_deliveries (id, organization_id, livemode, event_id, endpoint_id, status, attempts,
			                                next_attempt_at, manual_pending, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, true, $6, $6)`,
			d.ID, org, livemode, ev.ID, e.ID, now); err != nil {
			return fmt.Errorf("creating test delivery: %w", err)
		}
		return audit.Record(ctx, tx, auditEntry(actor, org, livemode, "webhook_endpoint.tested", "webhook_endpoint", e.ID, now,
			map[string]any{"event": ev.ID, "delivery": d.ID}))
	})
	if err != nil {
		return Delivery{}, err
	}
	return d.object(), nil
}

func (a *API) testEndpoint(w http.ResponseWriter, r *http.Request, c caller) error {
	if _, err := router.ReadBody(w, r); err != nil {
		return err
	}
	d, err := a.svc.TestEndpoint(r.Context(), c.actor, c.OrgID, c.Livemode, r.PathValue("id"), TestOrigin{
		APIVersion: c.APIVersion, RequestID: c.RequestID, IdempotencyKey: idempotencyKey(r),
	})
	if err != nil {
		return err
	}
	router.WriteJSON(w, http.StatusOK, d)
	return nil
}

// idempotencyKey is the request's Idempotency-Key when it is one the
// gateway would have accepted; anything else is not stored.
func idempotencyKey(r *http.Request) string {
	k := r.Header.Get("Idempotency-Key")
	if len(k) > events.MaxIdempotencyKeyLen || !utf8.ValidString(k) || strings.IndexByte(k, 0) >= 0 {
		return ""
	}
	return k
}
