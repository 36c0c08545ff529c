package dashboard

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/controlplane/accounts"
	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/internal/ids"
)

// signupActor creates organisations on behalf of people signing up, before
// they exist as users, from the client's address as every dashboard change.
func signupActor(ip string) audit.Actor {
	return audit.Actor{Type: audit.ActorSystem, ID: "dashboard-signup", IP: ip}
}

func (d *Dashboard) signupPage(w http.ResponseWriter, r *http.Request, s *Session) error {
	if s != nil {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return nil
	}
	d.render(w, r, nil, http.StatusOK, "signup.html", "Create your account", "", map[string]any{})
	return nil
}

func (d *Dashboard) signup(w http.ResponseWriter, r *http.Request, _ *Session) error {
	ctx := r.Context()
	email := strings.TrimSpace(r.PostFormValue("email"))
	password := r.PostFormValue("password")
	orgName := strings.TrimSpace(r.PostFormValue("organization"))
	form := map[string]any{"Email": email, "Organization": orgName}
	again := func(msg string) error {
		form["Error"] = msg
		d.render(w, r, nil, http.StatusBadRequest, "signup.html", "Create your account", "", form)
		return nil
	}
	ok, err := d.hit(ctx, "signup:"+d.clientNetwork(r), time.Hour, signupsPerIPPerHour)
	if err != nil {
		return err
	}
	if !ok {
		return errTooMany("Too many sign-ups from your address. Try again in an hour.")
	}
	switch {
	case orgName == "":
		return again("Enter your organisation's name.")
	case len(password) < accounts.MinPasswordLen:
		return again(fmt.Sprintf("Choose a password of at least %d characters.", accounts.MinPasswordLen))
	case len(password) > accounts.MaxPasswordLen:
		return again("That password is too long.")
	}
	var exists bool
	if err := d.cfg.DB.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = lower($1))`, email).
		Scan(&exists); err != nil {
		return fmt.Errorf("checking email: %w", err)
	}
	if exists {
		return again("An account with this email already exists. Sign in instead; an admin of another organisation can invite you.")
	}
	actor := signupActor(d.clientIP(r))
	org, err := d.cfg.Accounts.CreateOrganization(ctx, actor, orgName)
	if err != nil {
		if msg, ok := userMessage(err); ok {
			return again(msg)
		}
		return err
	}
	m, err := d.cfg.Accounts.AddMember(ctx, actor, accounts.AddMemberParams{
		OrganizationID: org.ID, Email: email, Password: password, Role: accounts.RoleOwner, OwnPasswordOnly: true,
	})
	if err != nil {
		// The organisation has no member and is useless: remove it so the
		// person can simply try again.
		_, _ = d.cfg.DB.Exec(context.WithoutCancel(ctx), `DELETE FROM organizations WHERE id = $1`, org.ID)
		if errors.Is(err, accounts.ErrInvalidCredentials) { // the email was taken a moment ago
			return again("An account with this email already exists. Sign in instead; an admin of another organisation can invite you.")
		}
		if msg, ok := userMessage(err); ok {
			return again(msg)
		}
		return err
	}
	if err := d.startSession(w, r, m.ID, org.ID); err != nil {
		return err
	}
	redirect(w, r, "/", "Welcome to Gatehouse. You are in test mode: create a sandbox key to make your first request.")
	return nil
}

func (d *Dashboard) loginPage(w http.ResponseWriter, r *http.Request, s *Session) error {
	if s != nil {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return nil
	}
	d.render(w, r, nil, http.StatusOK, "login.html", "Sign in", "", map[string]any{"Next": safeNext(r.URL.Query().Get("next"))})
	return nil
}

func (d *Dashboard) login(w http.ResponseWriter, r *http.Request, _ *Session) error {
	ctx := r.Context()
	email := strings.TrimSpace(r.PostFormValue("email"))
	password := r.PostFormValue("password")
	next := safeNext(r.PostFormValue("next"))
	ip := d.clientNetwork(r)
	form := map[string]any{"Email": email, "Next": next}
	if _, err := accounts.ValidEmail(email); err != nil {
		// No account has such an address (and one past the length a
		// throttle row can index must not reach it): nothing to check.
		form["Error"] = "The email or password is not right."
		d.render(w, r, nil, http.StatusUnauthorized, "login.html", "Sign in", "", form)
		return nil
	}
	attempt, wait, err := d.reserveSignIn(ctx, email, ip)
	if err != nil {
		return err
	}
	if wait > 0 {
		form["Error"] = fmt.Sprintf("Too many failed sign-ins. Try again in %d minutes, or ask the platform's operators to set a new password.",
			int(wait.Minutes())+1)
		w.Header().Set("Retry-After", fmt.Sprint(int(wait.Seconds())+1))
		d.render(w, r, nil, http.StatusTooManyRequests, "login.html", "Sign in", "", form)
		return nil
	}
	u, err := d.cfg.Accounts.Authenticate(ctx, email, password)
	if errors.Is(err, accounts.ErrInvalidCredentials) {
		form["Error"] = "The email or password is not right."
		d.render(w, r, nil, http.StatusUnauthorized, "login.html", "Sign in", "", form)
		return nil
	}
	if err != nil {
		d.releaseSignIn(ctx, attempt)
		return err
	}
	d.clearLoginFailures(ctx, email, ip)
	var org string
	err = d.cfg.DB.QueryRow(ctx, `SELECT organization_id FROM memberships WHERE user_id = $1
		ORDER BY created_at DESC LIMIT 1`, u.ID).Scan(&org)
	if errors.Is(err, pgx.ErrNoRows) {
		form["Error"] = "Your account is not a member of any organisation any more. Ask an admin for an invitation."
		d.render(w, r, nil, http.StatusForbidden, "login.html", "Sign in", "", form)
		return nil
	}
	if err != nil {
		return fmt.Errorf("loading membership: %w", err)
	}
	if err := d.startSession(w, r, u.ID, org); err != nil {
		return err
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
	return nil
}

func (d *Dashboard) logout(w http.ResponseWriter, r *http.Request, s *Session) error {
	if err := d.endSession(w, r, s); err != nil {
		return err
	}
	redirect(w, r, "/login", "You are signed out.")
	return nil
}

func (d *Dashboard) switchOrg(w http.ResponseWriter, r *http.Request, s *Session) error {
	org := r.PostFormValue("organization")
	for _, o := range s.Orgs {
		if o.ID == org {
			// Each organisation starts in test mode, so a switch never
			// lands someone in another organisation's live data by surprise.
			if _, err := d.cfg.DB.Exec(r.Context(), `UPDATE sessions SET organization_id = $2, livemode = false
				WHERE token_hash = $1`, s.tokenHash, org); err != nil {
				return fmt.Errorf("switching organization: %w", err)
			}
			redirect(w, r, "/", "Switched to "+o.Name+".")
			return nil
		}
	}
	return errNotFound()
}

func (d *Dashboard) switchEnv(w http.ResponseWriter, r *http.Request, s *Session) error {
	var live bool
	switch r.PostFormValue("environment") {
	case "live":
		live = true
	case "sandbox":
	default:
		return errBadRequest("Choose sandbox or live.")
	}
	if _, err := d.cfg.DB.Exec(r.Context(), `UPDATE sessions SET livemode = $2 WHERE token_hash = $1`,
		s.tokenHash, live); err != nil {
		return fmt.Errorf("switching environment: %w", err)
	}
	// Stay on the same kind of page, with the range and filters that mean
	// the same in either environment; an object page of the other
	// environment would be a 404, and ids and cursors name one
	// environment's objects.
	back := "/"
	if ref := r.PostFormValue("back"); ref != "" {
		if u, err := url.Parse(safeNext(ref)); err == nil {
			back = u.EscapedPath() // not Path: a %5C decoded would make /\evil.example
			if i := strings.IndexByte(back[1:], '/'); i >= 0 {
				back = back[:i+1] // an object page: its list
			} else if q := neutralQuery(u.Query()); q != "" {
				back += "?" + q
			}
		}
	}
	redirect(w, r, safeNext(back), "")
	return nil
}

// neutralQuery is the list pages' ranges and filters in q that mean the
// same in sandbox and live.
func neutralQuery(q url.Values) string {
	keep := url.Values{}
	for _, k := range []string{"days", "status", "method", "path", "since", "from", "to", "error_code", "type", "action"} {
		if v := q.Get(k); v != "" {
			keep.Set(k, v)
		}
	}
	return keep.Encode()
}

// Invitations.

const invitationTTL = 7 * 24 * time.Hour

// Invitation is a pending or past invitation as the members page shows it.
type Invitation struct {
	ID         string        `db:"id"`
	Email      string        `db:"email"`
	Role       accounts.Role `db:"role"`
	InvitedBy  string        `db:"invited_by"`
	CreatedAt  time.Time     `db:"created_at"`
	ExpiresAt  time.Time     `db:"expires_at"`
	AcceptedAt *time.Time    `db:"accepted_at"`
	RevokedAt  *time.Time    `db:"revoked_at"`
}

// Status is pending, accepted, revoked or expired at now.
func (i Invitation) Status(now time.Time) string {
	switch {
	case i.AcceptedAt != nil:
		return "accepted"
	case i.RevokedAt != nil:
		return "revoked"
	case !now.Before(i.ExpiresAt):
		return "expired"
	}
	return "pending"
}

func (d *Dashboard) membersPage(w http.ResponseWriter, r *http.Request, s *Session) error {
	return d.renderMembers(w, r, s, http.StatusOK, map[string]any{"ConfirmRemove": r.URL.Query().Get("remove")})
}

func (d *Dashboard) renderMembers(w http.ResponseWriter, r *http.Request, s *Session, status int, data map[string]any) error {
	ms, err := d.cfg.Accounts.ListMembers(r.Context(), s.OrgID)
	if err != nil {
		return err
	}
	rows, _ := d.cfg.DB.Query(r.Context(), `SELECT id, email, role, invited_by, created_at, expires_at, accepted_at, revoked_at
		FROM invitations WHERE organization_id = $1 ORDER BY created_at DESC LIMIT 100`, s.OrgID)
	invs, err := pgx.CollectRows(rows, pgx.RowToStructByName[Invitation])
	if err != nil {
		return fmt.Errorf("listing invitations: %w", err)
	}
	data["Members"] = ms
	data["Invitations"] = invs
	data["Roles"] = d.assignableRoles(s)
	// The invitation form shows the role chosen before a refusal, so that
	// fixing the email does not quietly invite a developer instead.
	if role, _ := data["Role"].(accounts.Role); !slices.Contains(d.assignableRoles(s), role) {
		data["Role"] = accounts.RoleDeveloper
	}
	d.render(w, r, s, status, "members.html", "Members", "members", data)
	return nil
}

// assignableRoles are the roles s may give: only owners make owners.
func (d *Dashboard) assignableRoles(s *Session) []accounts.Role {
	if s.Role == accounts.RoleOwner {
		return accounts.Roles
	}
	return []accounts.Role{accounts.RoleAdmin, accounts.RoleDeveloper, accounts.RoleViewer}
}

func (d *Dashboard) invite(w http.ResponseWriter, r *http.Request, s *Session) error {
	ctx := r.Context()
	email := strings.TrimSpace(r.PostFormValue("email"))
	role := accounts.Role(r.PostFormValue("role"))
	form := map[string]any{"Email": email, "Role": role}
	if indexOf(roleStrings(d.assignableRoles(s)), string(role)) < 0 {
		if role == accounts.RoleOwner {
			return errForbidden("Only owners can invite owners.")
		}
		form["Error"] = "Choose a role."
		return d.renderMembers(w, r, s, http.StatusBadRequest, form)
	}
	if _, err := accounts.ValidEmail(email); err != nil {
		form["Error"] = "Enter the email address of the person to invite."
		return d.renderMembers(w, r, s, http.StatusBadRequest, form)
	}
	ms, err := d.cfg.Accounts.ListMembers(ctx, s.OrgID)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if strings.EqualFold(m.Email, email) {
			form["Error"] = email + " is already a member; change their role in the list above."
			return d.renderMembers(w, r, s, http.StatusBadRequest, form)
		}
	}
	token := newToken()
	now := d.now()
	id := ids.NewAt(ids.Invite, now)
	err = pgx.BeginFunc(ctx, d.cfg.DB, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO invitations (id, organization_id, email, role, token_hash, invited_by, created_at, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, id, s.OrgID, email, string(role), hashToken(token), s.UserID, now,
			now.Add(invitationTTL)); err != nil {
			return fmt.Errorf("creating invitation: %w", err)
		}
		return audit.Record(ctx, tx, audit.Entry{OrganizationID: s.OrgID, Actor: s.Actor(), Action: "invitation.created",
			TargetType: "invitation", TargetID: id, Data: map[string]any{"email": email, "role": role}, IP: d.clientIP(r), CreatedAt: now})
	})
	if err != nil {
		return err
	}
	scheme := "http"
	if isTLS(r) {
		scheme = "https"
	}
	form = map[string]any{"InviteLink": scheme + "://" + r.Host + "/invitations/" + token, "InvitedEmail": email, "InvitedRole": role}
	return d.renderMembers(w, r, s, http.StatusOK, form)
}

// member loads the member id of the session's organisation. Who may
// manage whom is the accounts service's rule, checked in its transaction.
func (d *Dashboard) member(r *http.Request, s *Session, id string) (accounts.Member, error) {
	ms, err := d.cfg.Accounts.ListMembers(r.Context(), s.OrgID)
	if err != nil {
		return accounts.Member{}, err
	}
	for _, m := range ms {
		if m.ID == id {
			return m, nil
		}
	}
	return accounts.Member{}, errNotFound()
}

// memberError turns the accounts service's refusals into pages.
func memberError(err error) error {
	if errors.Is(err, accounts.ErrForbidden) {
		return errForbidden("Only owners can make owners or change them; only owners and admins manage members.")
	}
	if errors.Is(err, accounts.ErrLastOwner) {
		return &httpError{http.StatusConflict, "Last owner", "This is the organisation's only owner. Make another member an owner first."}
	}
	if errors.Is(err, accounts.ErrMemberNotFound) {
		return errNotFound()
	}
	return err
}

func (d *Dashboard) changeRole(w http.ResponseWriter, r *http.Request, s *Session) error {
	role := accounts.Role(r.PostFormValue("role"))
	if !accounts.ValidRole(role) {
		return errBadRequest("Choose one of the roles offered.")
	}
	m, err := d.cfg.Accounts.ChangeRole(r.Context(), s.Actor(), s.OrgID, r.PathValue("id"), role)
	if err != nil {
		return memberError(err)
	}
	redirect(w, r, "/members", fmt.Sprintf("%s is now %s.", m.Email, role))
	return nil
}

func (d *Dashboard) removeMember(w http.ResponseWriter, r *http.Request, s *Session) error {
	m, err := d.member(r, s, r.PathValue("id"))
	if err != nil {
		return err
	}
	if r.PostFormValue("confirm") != "yes" {
		return errBadRequest("Confirm the removal first.")
	}
	if err := d.cfg.Accounts.RemoveMember(r.Context(), s.Actor(), s.OrgID, m.ID); err != nil {
		return memberError(err)
	}
	if m.ID == s.UserID {
		redirect(w, r, "/", "You left "+s.OrgName+".")
		return nil
	}
	redirect(w, r, "/members", m.Email+" was removed.")
	return nil
}

func roleStrings(rs []accounts.Role) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = string(r)
	}
	return out
}

func (d *Dashboard) revokeInvitation(w http.ResponseWriter, r *http.Request, s *Session) error {
	ctx := r.Context()
	id := r.PathValue("id")
	now := d.now()
	err := pgx.BeginFunc(ctx, d.cfg.DB, func(tx pgx.Tx) error {
		var email string
		var role accounts.Role
		err := tx.QueryRow(ctx, `SELECT email, role FROM invitations
			WHERE id = $1 AND organization_id = $2 AND accepted_at IS NULL AND revoked_at IS NULL
			FOR UPDATE`, id, s.OrgID).Scan(&email, &role)
		if errors.Is(err, pgx.ErrNoRows) {
			return errNotFound()
		}
		if err != nil {
			return fmt.Errorf("revoking invitation: %w", err)
		}
		// As with inviting, changing or removing owners: an owner's
		// decision stands unless another owner undoes it.
		if !s.CanManage(role) {
			return errForbidden("Only owners can revoke an invitation to become an owner.")
		}
		if _, err := tx.Exec(ctx, `UPDATE invitations SET revoked_at = $2 WHERE id = $1`, id, now); err != nil {
			return fmt.Errorf("revoking invitation: %w", err)
		}
		return audit.Record(ctx, tx, audit.Entry{OrganizationID: s.OrgID, Actor: s.Actor(), Action: "invitation.revoked",
			TargetType: "invitation", TargetID: id, Data: map[string]any{"email": email}, IP: d.clientIP(r), CreatedAt: now})
	})
	if err != nil {
		return err
	}
	redirect(w, r, "/members", "Invitation revoked.")
	return nil
}

// pendingInvitation loads the live invitation a token stands for.
func (d *Dashboard) pendingInvitation(ctx context.Context, token string) (Invitation, string, string, error) {
	var inv Invitation
	var orgID, orgName string
	if len(token) != 43 {
		return inv, "", "", errNotFound()
	}
	err := d.cfg.DB.QueryRow(ctx, `SELECT i.id, i.email, i.role, i.invited_by, i.created_at, i.expires_at, i.accepted_at,
			i.revoked_at, o.id, o.name
		FROM invitations i JOIN organizations o ON o.id = i.organization_id WHERE i.token_hash = $1`, hashToken(token)).
		Scan(&inv.ID, &inv.Email, &inv.Role, &inv.InvitedBy, &inv.CreatedAt, &inv.ExpiresAt, &inv.AcceptedAt,
			&inv.RevokedAt, &orgID, &orgName)
	if errors.Is(err, pgx.ErrNoRows) {
		return inv, "", "", errNotFound()
	}
	if err != nil {
		return inv, "", "", fmt.Errorf("loading invitation: %w", err)
	}
	if inv.Status(d.now()) != "pending" {
		return inv, "", "", &httpError{http.StatusGone, "Invitation no longer valid",
			"This invitation was already used, revoked or has expired. Ask an admin for a new one."}
	}
	// The link carries its inviter's authority: an admin removed or demoted
	// since must not still add members through the links they kept.
	if strings.HasPrefix(inv.InvitedBy, ids.User+"_") {
		var role accounts.Role
		err := d.cfg.DB.QueryRow(ctx, `SELECT role FROM memberships WHERE organization_id = $1 AND user_id = $2`,
			orgID, inv.InvitedBy).Scan(&role)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return inv, "", "", fmt.Errorf("loading the inviter's membership: %w", err)
		}
		if role != accounts.RoleOwner && (role != accounts.RoleAdmin || inv.Role == accounts.RoleOwner) {
			return inv, "", "", &httpError{http.StatusGone, "Invitation no longer valid",
				"The person who sent this invitation can no longer invite members. Ask an admin for a new one."}
		}
	}
	return inv, orgID, orgName, nil
}

func (d *Dashboard) invitationPage(w http.ResponseWriter, r *http.Request, s *Session) error {
	inv, _, orgName, err := d.pendingInvitation(r.Context(), r.PathValue("token"))
	if err != nil {
		return err
	}
	var exists bool
	if err := d.cfg.DB.QueryRow(r.Context(), `SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = lower($1))`,
		inv.Email).Scan(&exists); err != nil {
		return fmt.Errorf("checking user: %w", err)
	}
	d.render(w, r, nil, http.StatusOK, "invitation.html", "Join "+orgName, "", map[string]any{
		"Invitation": inv, "OrgName": orgName, "Existing": exists, "Token": r.PathValue("token"),
	})
	return nil
}

func (d *Dashboard) acceptInvitation(w http.ResponseWriter, r *http.Request, _ *Session) error {
	ctx := r.Context()
	token := r.PathValue("token")
	inv, orgID, orgName, err := d.pendingInvitation(ctx, token)
	if err != nil {
		return err
	}
	password := r.PostFormValue("password")
	var exists bool
	if err := d.cfg.DB.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = lower($1))`,
		inv.Email).Scan(&exists); err != nil {
		return fmt.Errorf("checking user: %w", err)
	}
	again := func(status int, msg string) error {
		d.render(w, r, nil, status, "invitation.html", "Join "+orgName, "", map[string]any{
			"Invitation": inv, "OrgName": orgName, "Existing": exists, "Token": token, "Error": msg,
		})
		return nil
	}
	ip := d.clientIP(r)
	if exists {
		// An existing account joins only with its own password: the link
		// alone must not attach someone else's account.
		attempt, wait, err := d.reserveSignIn(ctx, inv.Email, d.clientNetwork(r))
		if err != nil {
			return err
		}
		if wait > 0 {
			return again(http.StatusTooManyRequests, "Too many failed attempts. Try again later.")
		}
		_, err = d.cfg.Accounts.Authenticate(ctx, inv.Email, password)
		if errors.Is(err, accounts.ErrInvalidCredentials) {
			return again(http.StatusUnauthorized, "That is not the password of "+inv.Email+".")
		}
		d.releaseSignIn(ctx, attempt)
		if err != nil {
			return err
		}
	} else if len(password) < accounts.MinPasswordLen {
		return again(http.StatusBadRequest, fmt.Sprintf("Choose a password of at least %d characters.", accounts.MinPasswordLen))
	}
	// Claim the invitation first, so that two tabs cannot both use it.
	now := d.now()
	tag, err := d.cfg.DB.Exec(ctx, `UPDATE invitations SET accepted_at = $2
		WHERE id = $1 AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $2`, inv.ID, now)
	if err != nil {
		return fmt.Errorf("accepting invitation: %w", err)
	}
	if tag.RowsAffected() != 1 {
		return &httpError{http.StatusGone, "Invitation no longer valid", "This invitation was just used or revoked."}
	}
	actor := audit.Actor{Type: audit.ActorUser, ID: inv.InvitedBy}
	if !strings.HasPrefix(inv.InvitedBy, ids.User+"_") {
		actor = audit.Actor{Type: audit.ActorSystem, ID: "dashboard-invitations"}
	}
	m, err := d.cfg.Accounts.AddMember(ctx, actor, accounts.AddMemberParams{
		OrganizationID: orgID, Email: inv.Email, Password: password, Role: inv.Role, KeepRole: true, OwnPasswordOnly: true,
	})
	if err != nil {
		_, _ = d.cfg.DB.Exec(context.WithoutCancel(ctx), `UPDATE invitations SET accepted_at = NULL WHERE id = $1`, inv.ID)
		if errors.Is(err, accounts.ErrInvalidCredentials) { // an account with the email was created a moment ago
			exists = true
			return again(http.StatusUnauthorized, "An account with "+inv.Email+" exists now: enter its password to join.")
		}
		if msg, ok := userMessage(err); ok {
			return again(http.StatusBadRequest, msg)
		}
		return err
	}
	_, _ = d.cfg.DB.Exec(ctx, `UPDATE invitations SET accepted_by = $2 WHERE id = $1`, inv.ID, m.ID)
	_ = audit.Record(ctx, d.cfg.DB, audit.Entry{OrganizationID: orgID, Actor: audit.Actor{Type: audit.ActorUser, ID: m.ID},
		Action: "invitation.accepted", TargetType: "invitation", TargetID: inv.ID,
		Data: map[string]any{"email": inv.Email, "role": inv.Role}, IP: ip, CreatedAt: now})
	if err := d.startSession(w, r, m.ID, orgID); err != nil {
		return err
	}
	redirect(w, r, "/", "Welcome to "+orgName+".")
	return nil
}
