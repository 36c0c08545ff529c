package dashboard

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/controlplane/webhooks"
	"github.com/gatehouse/gatehouse/internal/apiversion"
	"github.com/gatehouse/gatehouse/internal/ids"
)

// Tenant is the organisation and environment a change applies to.
type Tenant struct {
	OrganizationID string
	Livemode       bool
}

// EndpointParams are the editable fields of a webhook endpoint. Nil
// pointers (and a nil EnabledEvents) leave a field unchanged on update.
type EndpointParams = webhooks.EndpointParams

// Webhooks makes the changes of the webhook pages. Every method is scoped
// to the tenant (another tenant's id is not found) and audited with the
// actor in the same transaction. SQLWebhooks implements it with the
// service of controlplane/webhooks.
type Webhooks interface {
	// CreateEndpoint returns the new endpoint's id and signing secret.
	CreateEndpoint(ctx context.Context, actor audit.Actor, t Tenant, p EndpointParams) (id, secret string, err error)
	UpdateEndpoint(ctx context.Context, actor audit.Actor, t Tenant, id string, p EndpointParams) error
	DeleteEndpoint(ctx context.Context, actor audit.Actor, t Tenant, id string) error
	// RotateSecret adds a secret and makes the others expire after grace.
	RotateSecret(ctx context.Context, actor audit.Actor, t Tenant, id string, grace time.Duration) (secret string, err error)
	// TestEndpoint sends the endpoint a webhook_endpoint.test event and
	// returns the delivery's id.
	TestEndpoint(ctx context.Context, actor audit.Actor, t Tenant, id string) (deliveryID string, err error)
	// Recover queues the failed and dead deliveries created since, after
	// the delivery id after ("" for the first; webhooks.RecoverEndpoint).
	Recover(ctx context.Context, actor audit.Actor, t Tenant, id string, since time.Time, after string) (webhooks.Recovery, error)
	RetryDelivery(ctx context.Context, actor audit.Actor, t Tenant, id string) error
}

var (
	deliveryStatuses = []string{"pending", "succeeded", "failed", "dead"}
	rotateGraces     = []choice{{"0s", "Now — stop signing with the old secret at once"}, {"1h", "In 1 hour"},
		{"24h", "In 24 hours (recommended)"}, {"72h", "In 3 days"}, {"168h", "In 7 days"}}
	recoverWindows = []choice{{"1h", "Last hour"}, {"24h", "Last 24 hours"}, {"72h", "Last 3 days"}, {"168h", "Last 7 days"}}
	// commonEvents are offered as checkboxes; any other type can be typed.
	commonEvents = []string{"*", "customer.created", "customer.updated", "customer.deleted"}
)

func tenant(s *Session) Tenant { return Tenant{OrganizationID: s.OrgID, Livemode: s.Livemode} }

func (d *Dashboard) needWebhooks() error {
	if d.cfg.Webhooks == nil {
		return &httpError{http.StatusServiceUnavailable, "Not available",
			"Webhook changes are not enabled on this control plane."}
	}
	return nil
}

func (d *Dashboard) endpointsPage(w http.ResponseWriter, r *http.Request, s *Session) error {
	list, err := d.listEndpoints(r.Context(), s)
	if err != nil {
		return err
	}
	stats := map[string]endpointStats{}
	for _, e := range list {
		st, err := d.endpointStats(r.Context(), s, e.ID)
		if err != nil {
			return err
		}
		stats[e.ID] = st
	}
	d.render(w, r, s, http.StatusOK, "endpoints.html", "Webhooks", "webhooks", map[string]any{
		"Endpoints": list, "Stats": stats,
	})
	return nil
}

func (d *Dashboard) endpointForm(w http.ResponseWriter, r *http.Request, s *Session, status int, e Endpoint, isNew bool, errMsg string) {
	title := "Add a webhook endpoint"
	if !isNew {
		title = "Edit " + e.URL
	}
	// A refused new endpoint is shown again with the version chosen, so
	// that fixing its URL does not quietly pin the organisation's version.
	var version string
	if e.APIVersion != nil {
		version = *e.APIVersion
	}
	d.render(w, r, s, status, "endpoint_form.html", title, "webhooks", map[string]any{
		"E": e, "New": isNew, "Error": errMsg, "Common": commonEvents, "Versions": apiversion.Supported, "Version": version,
		"Other": strings.Join(slices.DeleteFunc(slices.Clone(e.EnabledEvents), func(x string) bool {
			return slices.Contains(commonEvents, x)
		}), ", "),
	})
}

func (d *Dashboard) newEndpointPage(w http.ResponseWriter, r *http.Request, s *Session) error {
	d.endpointForm(w, r, s, http.StatusOK, Endpoint{EnabledEvents: []string{"*"}}, true, "")
	return nil
}

func (d *Dashboard) editEndpointPage(w http.ResponseWriter, r *http.Request, s *Session) error {
	e, err := d.getEndpoint(r.Context(), s, r.PathValue("id"))
	if err != nil {
		return err
	}
	d.endpointForm(w, r, s, http.StatusOK, e, false, "")
	return nil
}

// readEndpointForm reads the endpoint form into params and into an
// Endpoint to re-show the form with.
func readEndpointForm(r *http.Request, e Endpoint) (EndpointParams, Endpoint) {
	_ = r.ParseForm()
	u := strings.TrimSpace(r.PostFormValue("url"))
	desc := strings.TrimSpace(r.PostFormValue("description"))
	evs := slices.Clone(r.PostForm["events"])
	for _, x := range strings.FieldsFunc(r.PostFormValue("other_events"), func(c rune) bool { return c == ',' || c == ' ' || c == '\n' }) {
		if !slices.Contains(evs, x) {
			evs = append(evs, x)
		}
	}
	if evs == nil {
		evs = []string{}
	}
	p := EndpointParams{URL: &u, Description: &desc, EnabledEvents: evs}
	if v := r.PostFormValue("api_version"); v != "" {
		p.APIVersion = &v
		e.APIVersion = &v
	}
	e.URL, e.Description, e.EnabledEvents = u, desc, evs
	return p, e
}

func (d *Dashboard) createEndpoint(w http.ResponseWriter, r *http.Request, s *Session) error {
	if err := d.needWebhooks(); err != nil {
		return err
	}
	p, e := readEndpointForm(r, Endpoint{})
	id, secret, err := d.cfg.Webhooks.CreateEndpoint(r.Context(), s.Actor(), tenant(s), p)
	if err != nil {
		if msg, ok := userMessage(err); ok {
			d.endpointForm(w, r, s, http.StatusBadRequest, e, true, msg)
			return nil
		}
		return err
	}
	return d.renderEndpoint(w, r, s, id, map[string]any{"Secret": secret, "SecretNew": true})
}

func (d *Dashboard) updateEndpoint(w http.ResponseWriter, r *http.Request, s *Session) error {
	if err := d.needWebhooks(); err != nil {
		return err
	}
	old, err := d.getEndpoint(r.Context(), s, r.PathValue("id"))
	if err != nil {
		return err
	}
	p, e := readEndpointForm(r, old)
	p.APIVersion = nil // fixed at creation
	if err := d.cfg.Webhooks.UpdateEndpoint(r.Context(), s.Actor(), tenant(s), old.ID, p); err != nil {
		if msg, ok := userMessage(err); ok {
			d.endpointForm(w, r, s, http.StatusBadRequest, e, false, msg)
			return nil
		}
		return err
	}
	redirect(w, r, "/webhooks/"+old.ID, "Endpoint updated.")
	return nil
}

func (d *Dashboard) setDisabled(w http.ResponseWriter, r *http.Request, s *Session, disabled bool) error {
	if err := d.needWebhooks(); err != nil {
		return err
	}
	e, err := d.getEndpoint(r.Context(), s, r.PathValue("id"))
	if err != nil {
		return err
	}
	if err := d.cfg.Webhooks.UpdateEndpoint(r.Context(), s.Actor(), tenant(s), e.ID, EndpointParams{Disabled: &disabled}); err != nil {
		return err
	}
	msg := "Endpoint enabled: new events are delivered again."
	if disabled {
		msg = "Endpoint disabled: no events are sent to it until you enable it."
	}
	redirect(w, r, "/webhooks/"+e.ID, msg)
	return nil
}

func (d *Dashboard) disableEndpoint(w http.ResponseWriter, r *http.Request, s *Session) error {
	return d.setDisabled(w, r, s, true)
}

func (d *Dashboard) enableEndpoint(w http.ResponseWriter, r *http.Request, s *Session) error {
	return d.setDisabled(w, r, s, false)
}

func (d *Dashboard) deleteEndpoint(w http.ResponseWriter, r *http.Request, s *Session) error {
	if err := d.needWebhooks(); err != nil {
		return err
	}
	e, err := d.getEndpoint(r.Context(), s, r.PathValue("id"))
	if err != nil {
		return err
	}
	if r.PostFormValue("confirm") != "yes" {
		return errBadRequest("Confirm the deletion first.")
	}
	if err := d.cfg.Webhooks.DeleteEndpoint(r.Context(), s.Actor(), tenant(s), e.ID); err != nil {
		return err
	}
	redirect(w, r, "/webhooks", "Endpoint "+e.URL+" deleted.")
	return nil
}

// revealSecret shows the endpoint's signing secrets and records that this
// user saw them.
func (d *Dashboard) revealSecret(w http.ResponseWriter, r *http.Request, s *Session) error {
	e, err := d.getEndpoint(r.Context(), s, r.PathValue("id"))
	if err != nil {
		return err
	}
	if d.cfg.Box == nil {
		return &httpError{http.StatusServiceUnavailable, "Not available", "Revealing secrets is not enabled on this control plane."}
	}
	secrets, err := webhooks.ActiveSecrets(r.Context(), d.cfg.DB, d.cfg.Box, e.ID, d.now())
	if err != nil {
		return err
	}
	live := s.Livemode
	if err := audit.Record(r.Context(), d.cfg.DB, audit.Entry{OrganizationID: s.OrgID, Livemode: &live, Actor: s.Actor(),
		Action: "webhook_endpoint.secret_revealed", TargetType: "webhook_endpoint", TargetID: e.ID,
		Data: map[string]any{"secrets": len(secrets)}, IP: d.clientIP(r), CreatedAt: d.now()}); err != nil {
		return err
	}
	return d.renderEndpoint(w, r, s, e.ID, map[string]any{"Secrets": secrets})
}

func (d *Dashboard) rotateSecret(w http.ResponseWriter, r *http.Request, s *Session) error {
	if err := d.needWebhooks(); err != nil {
		return err
	}
	e, err := d.getEndpoint(r.Context(), s, r.PathValue("id"))
	if err != nil {
		return err
	}
	grace, ok := parseChoice(r.PostFormValue("expires_in"), rotateGraces)
	if !ok {
		return errBadRequest("Choose when the current secret stops signing.")
	}
	if grace == 0 && r.PostFormValue("confirm") != "yes" {
		// Receivers that still check the old secret refuse every delivery.
		http.Redirect(w, r, "/webhooks/"+e.ID+"?confirm=rotate-now", http.StatusSeeOther)
		return nil
	}
	secret, err := d.cfg.Webhooks.RotateSecret(r.Context(), s.Actor(), tenant(s), e.ID, grace)
	if err != nil {
		return err
	}
	return d.renderEndpoint(w, r, s, e.ID, map[string]any{"Secret": secret, "SecretNew": true, "Rotated": true})
}

func (d *Dashboard) testEndpoint(w http.ResponseWriter, r *http.Request, s *Session) error {
	if err := d.needWebhooks(); err != nil {
		return err
	}
	e, err := d.getEndpoint(r.Context(), s, r.PathValue("id"))
	if err != nil {
		return err
	}
	did, err := d.cfg.Webhooks.TestEndpoint(r.Context(), s.Actor(), tenant(s), e.ID)
	if err != nil {
		return err
	}
	redirect(w, r, "/deliveries/"+did, "Test event queued. Reload to see the attempt.")
	return nil
}

func (d *Dashboard) recoverEndpoint(w http.ResponseWriter, r *http.Request, s *Session) error {
	if err := d.needWebhooks(); err != nil {
		return err
	}
	e, err := d.getEndpoint(r.Context(), s, r.PathValue("id"))
	if err != nil {
		return err
	}
	if e.Status != webhooks.StatusEnabled {
		// The page hides the form then; this is a form shown before the
		// endpoint was disabled (in another tab?). The service's refusal
		// is worded for the API.
		return errBadRequest("This endpoint is disabled. Enable the endpoint to recover its deliveries.")
	}
	var since time.Time
	after := r.PostFormValue("starting_after")
	if after != "" && !ids.Valid(after, ids.Delivery) {
		return errBadRequest("Start the recovery again from the endpoint's page.")
	}
	if v := r.PostFormValue("since_unix"); v != "" { // continuing a recovery
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return errBadRequest("Start the recovery again from the endpoint's page.")
		}
		since = time.Unix(n, 0)
	} else if v := r.PostFormValue("since_time"); v != "" {
		t, err := time.Parse("2006-01-02T15:04", v)
		if err != nil {
			return errBadRequest("Since must be a date and time (UTC).")
		}
		since = t
	} else {
		win, ok := parseChoice(r.PostFormValue("window"), recoverWindows)
		if !ok || win == 0 {
			return errBadRequest("Choose how far back to recover.")
		}
		// Rounded up to the minute: the service reads its own clock a
		// moment later and refuses a since older than its window, which
		// "Last 7 days" computed to the nanosecond would be whenever a
		// second ticked over in between.
		since = d.now().Add(-win).Truncate(time.Minute).Add(time.Minute)
	}
	rec, err := d.cfg.Webhooks.Recover(r.Context(), s.Actor(), tenant(s), e.ID, since, after)
	if err != nil {
		return err
	}
	msg := "Requeued " + comma(rec.Requeued) + " failed deliveries."
	if rec.HasMore {
		// The endpoint's page offers to continue after the last one.
		redirect(w, r, "/webhooks/"+e.ID+"?"+url.Values{"recover_since": {strconv.FormatInt(rec.Since, 10)},
			"recover_after": {rec.LastDelivery}}.Encode()+"#rec-h", msg+" More remain: continue below.")
		return nil
	}
	redirect(w, r, "/deliveries?endpoint="+e.ID, msg)
	return nil
}

func (d *Dashboard) renderEndpoint(w http.ResponseWriter, r *http.Request, s *Session, id string, data map[string]any) error {
	e, err := d.getEndpoint(r.Context(), s, id)
	if err != nil {
		return err
	}
	st, err := d.endpointStats(r.Context(), s, e.ID)
	if err != nil {
		return err
	}
	recent, _, err := d.listDeliveries(r.Context(), s, deliveryFilter{Endpoint: e.ID})
	if err != nil {
		return err
	}
	if len(recent) > 10 {
		recent = recent[:10]
	}
	data["E"] = e
	data["Stats"] = st
	data["Recent"] = recent
	data["Graces"] = rotateGraces
	data["Windows"] = recoverWindows
	data["CanReveal"] = d.cfg.Box != nil
	d.render(w, r, s, http.StatusOK, "endpoint.html", e.URL, "webhooks", data)
	return nil
}

func (d *Dashboard) endpointPage(w http.ResponseWriter, r *http.Request, s *Session) error {
	q := r.URL.Query()
	data := map[string]any{"Confirm": q.Get("confirm")}
	// A recovery that stopped at its bound continues after its last one.
	if after, since := q.Get("recover_after"), q.Get("recover_since"); ids.Valid(after, ids.Delivery) {
		if n, err := strconv.ParseInt(since, 10, 64); err == nil {
			data["RecoverAfter"], data["RecoverSince"] = after, n
		}
	}
	return d.renderEndpoint(w, r, s, r.PathValue("id"), data)
}

func (d *Dashboard) deliveriesPage(w http.ResponseWriter, r *http.Request, s *Session) error {
	v := r.URL.Query()
	f := deliveryFilter{Status: v.Get("status"), Endpoint: v.Get("endpoint"), Event: v.Get("event"), Since: v.Get("since")}
	var problems []string
	if f.Status != "" && !slices.Contains(deliveryStatuses, f.Status) {
		problems = append(problems, "Choose a status from the list.")
	}
	if dur, ok := parseChoice(f.Since, sinceChoices); !ok {
		problems = append(problems, "Choose a time range from the list.")
	} else if dur > 0 {
		f.CreatedGTE = d.now().Add(-dur)
	}
	if f.Endpoint != "" && !ids.Valid(f.Endpoint, ids.WebhookEndpoint) {
		problems = append(problems, "Endpoint must be an endpoint id (we_…).")
	}
	if f.Event != "" && !ids.Valid(f.Event, ids.Event) {
		problems = append(problems, "Event must be an event id (evt_…).")
	}
	if a := v.Get("after"); ids.Valid(a, ids.Delivery) {
		f.After = a
	} else if b := v.Get("before"); ids.Valid(b, ids.Delivery) {
		f.Before = b
	}
	data := map[string]any{"F": f, "Statuses": deliveryStatuses, "SinceChoices": sinceChoices, "Problems": problems}
	if len(problems) == 0 {
		list, p, err := d.listDeliveries(r.Context(), s, f)
		if err != nil {
			return err
		}
		data["Deliveries"], data["Pager"] = list, pageLinks(r, p)
	}
	eps, err := d.listEndpoints(r.Context(), s)
	if err != nil {
		return err
	}
	data["Endpoints"] = eps
	d.render(w, r, s, http.StatusOK, "deliveries.html", "Webhook deliveries", "deliveries", data)
	return nil
}

func (d *Dashboard) deliveryPage(w http.ResponseWriter, r *http.Request, s *Session) error {
	dl, err := d.getDelivery(r.Context(), s, r.PathValue("id"))
	if err != nil {
		return err
	}
	data := map[string]any{"D": dl}
	if ev, err := d.getEvent(r.Context(), s, dl.EventID); err == nil {
		data["Payload"] = ev.Payload(s.Livemode, dl.EndpointAPIVersion)
	}
	d.render(w, r, s, http.StatusOK, "delivery.html", "Delivery "+dl.ID, "deliveries", data)
	return nil
}

func (d *Dashboard) retryDelivery(w http.ResponseWriter, r *http.Request, s *Session) error {
	if err := d.needWebhooks(); err != nil {
		return err
	}
	dl, err := d.getDelivery(r.Context(), s, r.PathValue("id"))
	if err != nil {
		return err
	}
	if err := d.cfg.Webhooks.RetryDelivery(r.Context(), s.Actor(), tenant(s), dl.ID); err != nil {
		return err
	}
	redirect(w, r, "/deliveries/"+dl.ID, "Retry queued: the deliverer sends it within seconds. Reload to see the attempt.")
	return nil
}

func (d *Dashboard) eventsPage(w http.ResponseWriter, r *http.Request, s *Session) error {
	v := r.URL.Query()
	f := eventFilter{Type: strings.TrimSpace(v.Get("type"))}
	var problems []string
	if f.Type != "" && (len(f.Type) > 100 || strings.ContainsAny(f.Type, " %'\"")) {
		problems = append(problems, "Type must look like customer.created or customer.*.")
	}
	if a := v.Get("after"); ids.Valid(a, ids.Event) {
		f.After = a
	} else if b := v.Get("before"); ids.Valid(b, ids.Event) {
		f.Before = b
	}
	data := map[string]any{"F": f, "Problems": problems}
	if len(problems) == 0 {
		list, p, err := d.listEvents(r.Context(), s, f)
		if err != nil {
			return err
		}
		data["Events"], data["Pager"] = list, pageLinks(r, p)
	}
	d.render(w, r, s, http.StatusOK, "events.html", "Events", "events", data)
	return nil
}

func (d *Dashboard) eventPage(w http.ResponseWriter, r *http.Request, s *Session) error {
	ev, err := d.getEvent(r.Context(), s, r.PathValue("id"))
	if err != nil {
		return err
	}
	d.render(w, r, s, http.StatusOK, "event.html", ev.Type+" "+ev.ID, "events", map[string]any{
		"Ev": ev, "Payload": ev.Payload(s.Livemode, ""),
	})
	return nil
}
