package dashboard

import (
	"net/http"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/controlplane/keys"
	"github.com/gatehouse/gatehouse/internal/apikey"
)

// Choices offered by the key forms.
var (
	keyExpiries = []choice{{"", "Never"}, {"168h", "In 7 days"}, {"720h", "In 30 days"}, {"2160h", "In 90 days"}, {"8760h", "In 1 year"}}
	rollGraces  = []choice{{"0s", "Now — the old key stops working at once"}, {"1h", "In 1 hour"},
		{"24h", "In 24 hours (recommended)"}, {"72h", "In 3 days"}, {"168h", "In 7 days"}}
)

type choice struct{ Value, Label string }

func parseChoice(v string, allowed []choice) (time.Duration, bool) {
	for _, c := range allowed {
		if c.Value == v {
			if v == "" {
				return 0, true
			}
			d, err := time.ParseDuration(v)
			return d, err == nil
		}
	}
	return 0, false
}

func (d *Dashboard) keysPage(w http.ResponseWriter, r *http.Request, s *Session) error {
	return d.renderKeys(w, r, s, http.StatusOK, map[string]any{})
}

func (d *Dashboard) renderKeys(w http.ResponseWriter, r *http.Request, s *Session, status int, data map[string]any) error {
	list, err := d.cfg.Keys.List(r.Context(), s.OrgID, apikey.Environment(s.Env()))
	if err != nil {
		return err
	}
	data["Keys"] = list
	data["Scopes"] = apikey.Scopes
	data["Expiries"] = keyExpiries
	data["CanCreate"] = s.CanWrite() && (!s.Livemode || s.CanManageLiveKeys())
	if _, ok := data["Kind"]; !ok {
		data["Kind"] = "secret"
	}
	d.render(w, r, s, status, "keys.html", "API keys", "keys", data)
	return nil
}

// mayManageKeys refuses developers in live mode: live keys reach
// production data, so only admins and owners hold them.
func mayManageKeys(s *Session) error {
	if s.Livemode && !s.CanManageLiveKeys() {
		return errForbidden("Developers manage sandbox keys only. Ask an admin or owner to create, roll or revoke live keys.")
	}
	return nil
}

func (d *Dashboard) createKey(w http.ResponseWriter, r *http.Request, s *Session) error {
	if err := mayManageKeys(s); err != nil {
		return err
	}
	_ = r.ParseForm()
	kind := apikey.Kind(r.PostFormValue("kind"))
	name := strings.TrimSpace(r.PostFormValue("name"))
	scopes := r.PostForm["scopes"]
	allow := strings.TrimSpace(r.PostFormValue("ip_allowlist"))
	form := map[string]any{"Name": name, "Kind": string(kind), "Selected": scopes, "Expiry": r.PostFormValue("expires_in"),
		"Allowlist": allow}
	if kind != apikey.Secret && kind != apikey.Restricted {
		form["Error"] = "Choose a secret or a restricted key."
		return d.renderKeys(w, r, s, http.StatusBadRequest, form)
	}
	if kind == apikey.Secret {
		scopes = nil
	}
	expiry, ok := parseChoice(r.PostFormValue("expires_in"), keyExpiries)
	if !ok {
		form["Error"] = "Choose when the key expires."
		return d.renderKeys(w, r, s, http.StatusBadRequest, form)
	}
	p := keys.CreateParams{Kind: kind, Name: name, Scopes: scopes}
	if expiry > 0 {
		at := d.cfg.Keys.Now().Add(expiry)
		p.ExpiresAt = &at
	}
	if allow != "" {
		nets, err := keys.ParseIPAllowlist(allow)
		if err != nil {
			msg, _ := userMessage(err)
			form["Error"] = msg
			return d.renderKeys(w, r, s, http.StatusBadRequest, form)
		}
		p.IPAllowlist = nets
	}
	c, err := d.cfg.Keys.Create(r.Context(), s.Actor(), s.OrgID, apikey.Environment(s.Env()), p)
	if err != nil {
		if msg, ok := userMessage(err); ok {
			form["Error"] = msg
			return d.renderKeys(w, r, s, http.StatusBadRequest, form)
		}
		return err
	}
	// The secret is shown in this response only: it is not stored, and the
	// page is not cached (render sets no-store).
	return d.renderKeys(w, r, s, http.StatusOK, map[string]any{"Created": c})
}

// loadKey loads the key of the path's {id}, which wrap has checked is a key id.
func (d *Dashboard) loadKey(r *http.Request, s *Session) (keys.Key, error) {
	return d.cfg.Keys.Get(r.Context(), s.OrgID, apikey.Environment(s.Env()), r.PathValue("id"))
}

func (d *Dashboard) keyPage(w http.ResponseWriter, r *http.Request, s *Session) error {
	k, err := d.loadKey(r, s)
	if err != nil {
		return err
	}
	page, err := d.cfg.Audit.List(r.Context(), s.OrgID, audit.Filter{TargetID: k.ID, Limit: 20})
	if err != nil {
		return err
	}
	d.render(w, r, s, http.StatusOK, "key.html", "API key "+k.Masked(), "keys", map[string]any{
		"Key": k, "Graces": rollGraces, "CanManage": s.CanWrite() && mayManageKeys(s) == nil,
		"Audit": page, "Confirm": r.URL.Query().Get("confirm"),
	})
	return nil
}

func (d *Dashboard) rollKey(w http.ResponseWriter, r *http.Request, s *Session) error {
	k, err := d.loadKey(r, s)
	if err != nil {
		return err
	}
	if err := mayManageKeys(s); err != nil {
		return err
	}
	grace, ok := parseChoice(r.PostFormValue("expires_in"), rollGraces)
	if !ok {
		return errBadRequest("Choose when the current key stops working.")
	}
	if grace == 0 && r.PostFormValue("confirm") != "yes" {
		// Cutting a key off at once breaks whoever still uses it: say so first.
		http.Redirect(w, r, "/keys/"+k.ID+"?confirm=roll-now", http.StatusSeeOther)
		return nil
	}
	rolled, err := d.cfg.Keys.Roll(r.Context(), s.Actor(), s.OrgID, apikey.Environment(s.Env()), k.ID, grace)
	if err != nil {
		return err
	}
	return d.renderKeys(w, r, s, http.StatusOK, map[string]any{"Created": rolled.New, "RolledFrom": rolled.Old})
}

func (d *Dashboard) revokeKey(w http.ResponseWriter, r *http.Request, s *Session) error {
	k, err := d.loadKey(r, s)
	if err != nil {
		return err
	}
	if err := mayManageKeys(s); err != nil {
		return err
	}
	if r.PostFormValue("confirm") != k.Masked() && r.PostFormValue("confirm") != "yes" {
		return errBadRequest("Confirm the revocation first.")
	}
	if _, err := d.cfg.Keys.Revoke(r.Context(), s.Actor(), s.OrgID, apikey.Environment(s.Env()), k.ID); err != nil {
		return err
	}
	redirect(w, r, "/keys", "Key "+k.Masked()+" revoked. Requests using it now fail with api_key_invalid.")
	return nil
}
