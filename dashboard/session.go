package dashboard

import (
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/controlplane/accounts"
	"github.com/gatehouse/gatehouse/controlplane/audit"
)

// Cookie names. The session cookie holds the only copy of the session
// token; the pre-session cookie carries the CSRF token of the sign-in,
// sign-up and invitation forms (double submit), before a session exists.
const (
	sessionCookie    = "gh_session"
	preSessionCookie = "gh_csrf"
	csrfField        = "csrf_token"
)

// Session is a signed-in user acting in one organisation and environment.
type Session struct {
	tokenHash []byte
	UserID    string
	Email     string
	OrgID     string
	OrgName   string
	Role      accounts.Role
	Livemode  bool
	CSRF      string
	// Orgs are every organisation the user belongs to, for the switcher.
	Orgs []OrgChoice
	// ip is the client's address on this request, for the audit trail.
	ip string
}

// OrgChoice is one entry of the organisation switcher.
type OrgChoice struct {
	ID   string
	Name string
	Role accounts.Role
}

// Env is the session's environment as keys name it.
func (s *Session) Env() string {
	if s.Livemode {
		return "live"
	}
	return "sandbox"
}

// modeName is the environment as the dashboard names it to people.
func (s *Session) modeName() string {
	if s.Livemode {
		return "live mode"
	}
	return "test mode"
}

// Actor is the session's user as the audit trail records them, with the
// address they acted from.
func (s *Session) Actor() audit.Actor {
	return audit.Actor{Type: audit.ActorUser, ID: s.UserID, IP: s.ip}
}

// CanWrite reports whether the role may change the organisation's data.
func (s *Session) CanWrite() bool { return s != nil && s.Role != accounts.RoleViewer }

// CanAdmin reports whether the role may manage members.
func (s *Session) CanAdmin() bool {
	return s != nil && (s.Role == accounts.RoleOwner || s.Role == accounts.RoleAdmin)
}

// CanManage reports whether the role may change, remove or revoke what
// carries role (a member, an invitation): admins and owners may, and only
// owners when it is an owner.
func (s *Session) CanManage(role accounts.Role) bool {
	return s.CanAdmin() && (role != accounts.RoleOwner || s.Role == accounts.RoleOwner)
}

// CanManageLiveKeys reports whether the role may create, roll or revoke
// live keys: developers work in sandbox only.
func (s *Session) CanManageLiveKeys() bool { return s.CanAdmin() }

// allowed enforces a route's access level for the session's role.
func (s *Session) allowed(a Access) error {
	switch a {
	case Public, Member, Self:
		return nil
	case Writer:
		if !s.CanWrite() {
			return errForbidden("Your role (viewer) can read this organisation's data but not change it. Ask an admin for the developer role.")
		}
	case Admin:
		if !s.CanAdmin() {
			return errForbidden("Only admins and owners can manage members and invitations.")
		}
	}
	return nil
}

func newToken() string {
	var b [32]byte
	if _, err := crand.Read(b[:]); err != nil {
		panic("dashboard: crypto/rand failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func hashToken(t string) []byte {
	h := sha256.Sum256([]byte(t))
	return h[:]
}

// loadSession returns the request's session, or nil when it has none (or
// an expired one). A session whose membership was removed moves to another
// organisation of the user, or ends.
func (d *Dashboard) loadSession(r *http.Request) (*Session, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || len(c.Value) != 43 {
		return nil, nil
	}
	ctx := r.Context()
	s := &Session{tokenHash: hashToken(c.Value), ip: d.clientIP(r)}
	err = d.cfg.DB.QueryRow(ctx, `
		SELECT s.user_id, u.email, s.organization_id, s.livemode, s.csrf_token
		FROM sessions s JOIN users u ON u.id = s.user_id
		WHERE s.token_hash = $1 AND s.expires_at > $2`, s.tokenHash, d.now()).
		Scan(&s.UserID, &s.Email, &s.OrgID, &s.Livemode, &s.CSRF)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("loading session: %w", err)
	}
	rows, _ := d.cfg.DB.Query(ctx, `
		SELECT o.id, o.name, m.role FROM memberships m JOIN organizations o ON o.id = m.organization_id
		WHERE m.user_id = $1 ORDER BY o.name, o.id`, s.UserID)
	s.Orgs, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (OrgChoice, error) {
		var o OrgChoice
		err := row.Scan(&o.ID, &o.Name, &o.Role)
		return o, err
	})
	if err != nil {
		return nil, fmt.Errorf("loading memberships: %w", err)
	}
	for _, o := range s.Orgs {
		if o.ID == s.OrgID {
			s.OrgName, s.Role = o.Name, o.Role
		}
	}
	if s.Role == "" {
		if len(s.Orgs) == 0 {
			_, _ = d.cfg.DB.Exec(ctx, `DELETE FROM sessions WHERE token_hash = $1`, s.tokenHash)
			return nil, nil
		}
		o := s.Orgs[0]
		if _, err := d.cfg.DB.Exec(ctx, `UPDATE sessions SET organization_id = $2, livemode = false WHERE token_hash = $1`,
			s.tokenHash, o.ID); err != nil {
			return nil, fmt.Errorf("moving session: %w", err)
		}
		s.OrgID, s.OrgName, s.Role, s.Livemode = o.ID, o.Name, o.Role, false
	}
	return s, nil
}

// startSession signs the user in to org (sandbox first, like Stripe's test
// mode) and sets the cookie. Any pre-session CSRF cookie is cleared.
func (d *Dashboard) startSession(w http.ResponseWriter, r *http.Request, userID, org string) error {
	token := newToken()
	now := d.now()
	_, err := d.cfg.DB.Exec(r.Context(), `
		INSERT INTO sessions (token_hash, user_id, organization_id, livemode, csrf_token, created_at, expires_at)
		VALUES ($1, $2, $3, false, $4, $5, $6)`, hashToken(token), userID, org, newToken(), now, now.Add(d.cfg.SessionTTL))
	if err != nil {
		return fmt.Errorf("creating session: %w", err)
	}
	// Expired sessions are swept now and then rather than by a worker.
	if rand.IntN(20) == 0 {
		_, _ = d.cfg.DB.Exec(r.Context(), `DELETE FROM sessions WHERE expires_at < $1`, now)
	}
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: token, Path: "/", HttpOnly: true, Secure: isTLS(r),
		SameSite: http.SameSiteLaxMode, Expires: now.Add(d.cfg.SessionTTL),
	})
	http.SetCookie(w, &http.Cookie{Name: preSessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: isTLS(r), SameSite: http.SameSiteStrictMode})
	return nil
}

func (d *Dashboard) endSession(w http.ResponseWriter, r *http.Request, s *Session) error {
	if s != nil {
		if _, err := d.cfg.DB.Exec(r.Context(), `DELETE FROM sessions WHERE token_hash = $1`, s.tokenHash); err != nil {
			return fmt.Errorf("ending session: %w", err)
		}
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: isTLS(r), SameSite: http.SameSiteLaxMode})
	return nil
}

// preSessionToken returns the CSRF token of the anonymous forms, setting
// its cookie when the browser has none yet.
func (d *Dashboard) preSessionToken(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(preSessionCookie); err == nil && len(c.Value) == 43 {
		return c.Value
	}
	t := newToken()
	http.SetCookie(w, &http.Cookie{Name: preSessionCookie, Value: t, Path: "/", HttpOnly: true, Secure: isTLS(r),
		SameSite: http.SameSiteStrictMode, MaxAge: 86400})
	return t
}

// context names the organisation and environment a page is shown in. Pages
// of a session carry it after their CSRF token ("<token>.<context>"), so
// that a form acts where it was shown: a sandbox page's "Create sandbox
// key", submitted after another tab switched the session to live, must not
// create a live key.
func (s *Session) context() string { return s.OrgID + ":" + s.Env() }

// showedIn reports whether a page shown in context (as context writes it)
// still fits the session for a form of this access: Writer forms act on
// one environment's data, Admin forms (members, invitations) on the
// organisation's, whatever the environment.
func (s *Session) showedIn(context string, access Access) bool {
	if access == Admin {
		org, _, _ := strings.Cut(context, ":")
		return org == s.OrgID
	}
	return context == s.context()
}

// checkCSRF refuses a POST unless its csrf_token field matches the
// session's token (or, without a session, the pre-session cookie), and
// unless the browser says it came from this site. A form that changes the
// organisation's data (access above Self) must also have been shown in
// the session's current organisation and environment.
func (d *Dashboard) checkCSRF(w http.ResponseWriter, r *http.Request, s *Session, access Access) error {
	refused := errForbidden("This form has expired or did not come from this dashboard. Go back, reload the page and try again.")
	if !sameSite(r) {
		return refused
	}
	got, shown, _ := strings.Cut(r.PostFormValue(csrfField), ".")
	var want string
	if s != nil {
		want = s.CSRF
	} else if c, err := r.Cookie(preSessionCookie); err == nil {
		want = c.Value
	}
	if got == "" || want == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		return refused
	}
	if s != nil && access > Self && !s.showedIn(shown, access) {
		return &httpError{http.StatusConflict, "Page out of date",
			"This page was shown for another organisation or environment than the one you have switched to since " +
				"(in another tab?), so nothing was changed. Reload the page and try again."}
	}
	return nil
}

// sameSite reports whether the browser says a request came from this site
// (or says nothing: an old browser or a client that is not one).
func sameSite(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return false
	}
	if origin := r.Header.Get("Origin"); origin != "" && origin != "null" {
		u, err := url.Parse(origin)
		if err != nil || !strings.EqualFold(u.Host, r.Host) {
			return false
		}
	}
	return true
}

// clientIP is the address the request came from: the connection's peer,
// or, when that peer is a trusted proxy (Config.TrustedProxies), the
// right-most X-Forwarded-For address that is not one. A header the client
// could write itself is never believed: it would let a password guesser
// dodge sign-in throttling with a new address per attempt, and forge the
// address the audit trail records.
func (d *Dashboard) clientIP(r *http.Request) string {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	ip := peer.Addr().Unmap()
	if !d.trustedProxy(ip) {
		return ip.String()
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop, ok := parseHop(hops[i])
		if !ok {
			break // a hop we cannot read: stop at the last one we trust
		}
		ip = hop
		if !d.trustedProxy(ip) {
			break
		}
	}
	return ip.String()
}

// clientNetwork is what the sign-in, sign-up and public POST throttles
// count by: the client's IPv4 address, or the /64 of its IPv6 one. A host
// is given a whole /64, and throttling each of its addresses apart let one
// guesser take a new address every few tries and never be slowed.
func (d *Dashboard) clientNetwork(r *http.Request) string {
	ip := d.clientIP(r)
	if a, err := netip.ParseAddr(ip); err == nil && a.Is6() && !a.Is4In6() {
		return netip.PrefixFrom(a, 64).Masked().String()
	}
	return ip
}

// parseHop reads one X-Forwarded-For entry: an address, which some proxies
// write with a port ("203.0.113.9:51234", "[2001:db8::9]:443") or in
// brackets.
func parseHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); err == nil && strings.HasPrefix(s, "[") {
		return a.Unmap(), true
	}
	return netip.Addr{}, false
}

func (d *Dashboard) trustedProxy(ip netip.Addr) bool {
	for _, p := range d.cfg.TrustedProxies {
		// An IPv4 peer also matches a range written as ::ffff:a.b.c.d/n.
		if p.Contains(ip) || ip.Is4() && p.Contains(netip.AddrFrom16(ip.As16())) {
			return true
		}
	}
	return false
}

// Throttling limits.
const (
	loginWindow         = 15 * time.Minute
	loginFailuresPerKey = 5  // per email and address
	loginFailuresPerIP  = 50 // per address, any email
	signupsPerIPPerHour = 10
	publicPostsPerMin   = 30
)

// reserveSignIn checks the throttle and, unless sign-ins for email from ip
// are paused (wait > 0), records this attempt as a failure before the
// password is checked, returning the row's id: parallel guesses then count
// each other, where checking first and recording after let 25 concurrent
// guesses through a limit of 5. A wrong password leaves the row; any other
// outcome removes it (releaseSignIn, or clearLoginFailures on success).
func (d *Dashboard) reserveSignIn(ctx context.Context, email, ip string) (id int64, wait time.Duration, err error) {
	email = strings.ToLower(strings.TrimSpace(email))
	now := d.now()
	err = pgx.BeginFunc(ctx, d.cfg.DB, func(tx pgx.Tx) error {
		// One address's attempts take turns here, each seeing the rows of
		// those before it.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('gatehouse.login_failures'), hashtext($1))`, ip); err != nil {
			return err
		}
		var perKey, perIP int
		var oldest *time.Time
		if err := tx.QueryRow(ctx, `
			SELECT count(*) FILTER (WHERE email = $1),
			       count(*),
			       min(created_at) FILTER (WHERE email = $1)
			FROM login_failures WHERE ip = $2 AND created_at > $3`,
			email, ip, now.Add(-loginWindow)).Scan(&perKey, &perIP, &oldest); err != nil {
			return err
		}
		switch {
		case perKey >= loginFailuresPerKey && oldest != nil:
			wait = oldest.Add(loginWindow).Sub(now)
			return nil
		case perIP >= loginFailuresPerIP:
			wait = loginWindow
			return nil
		}
		return tx.QueryRow(ctx, `INSERT INTO login_failures (email, ip, created_at) VALUES ($1, $2, $3) RETURNING id`,
			email, ip, now).Scan(&id)
	})
	if err != nil {
		return 0, 0, fmt.Errorf("checking login throttle: %w", err)
	}
	if rand.IntN(50) == 0 {
		_, _ = d.cfg.DB.Exec(ctx, `DELETE FROM login_failures WHERE created_at < $1`, now.Add(-24*time.Hour))
	}
	return id, wait, nil
}

// releaseSignIn removes a reservation (reserveSignIn) that turned out not
// to be a wrong password. Best effort: a row left behind counts as one
// failure for the window.
func (d *Dashboard) releaseSignIn(ctx context.Context, id int64) {
	_, _ = d.cfg.DB.Exec(context.WithoutCancel(ctx), `DELETE FROM login_failures WHERE id = $1`, id)
}

func (d *Dashboard) clearLoginFailures(ctx context.Context, email, ip string) {
	_, _ = d.cfg.DB.Exec(ctx, `DELETE FROM login_failures WHERE email = $1 AND ip = $2`,
		strings.ToLower(strings.TrimSpace(email)), ip)
}

// hit counts one action in bucket's current fixed window and reports
// whether it is within limit.
func (d *Dashboard) hit(ctx context.Context, bucket string, window time.Duration, limit int) (bool, error) {
	now := d.now()
	start := now.Truncate(window)
	var hits int
	err := d.cfg.DB.QueryRow(ctx, `
		INSERT INTO dashboard_rate_limits AS l (bucket, window_start, hits) VALUES ($1, $2, 1)
		ON CONFLICT (bucket, window_start) DO UPDATE SET hits = l.hits + 1
		RETURNING hits`, bucket, start).Scan(&hits)
	if err != nil {
		return false, fmt.Errorf("counting dashboard action: %w", err)
	}
	if rand.IntN(100) == 0 {
		_, _ = d.cfg.DB.Exec(ctx, `DELETE FROM dashboard_rate_limits WHERE window_start < $1`, now.Add(-2*time.Hour))
	}
	return hits <= limit, nil
}

// rateLimitAction bounds POSTs: per user when signed in, per address
// otherwise.
func (d *Dashboard) rateLimitAction(r *http.Request, s *Session) error {
	bucket, limit := "ip:"+d.clientNetwork(r), publicPostsPerMin
	if s != nil {
		bucket, limit = "user:"+s.UserID, d.cfg.ActionsPerMinute
	}
	ok, err := d.hit(r.Context(), bucket, time.Minute, limit)
	if err != nil {
		return err
	}
	if !ok {
		return errTooMany("You are making changes faster than the dashboard allows. Wait a minute and try again.")
	}
	return nil
}

func urlQueryEscape(s string) string { return url.QueryEscape(s) }

// safeNext keeps post-login redirects on this site.
func safeNext(next string) string {
	// Browsers drop tabs and newlines from a URL and read a backslash as "/", so
	// "/\t/evil.example" goes where "//evil.example" would: refuse any
	// control character or backslash, then anything but a path on this site.
	if strings.ContainsFunc(next, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '\\' }) {
		return "/"
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.Opaque != "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") {
		return "/"
	}
	return next
}
