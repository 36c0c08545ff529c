// Package accounts manages organisations, the people who use the dashboard
// and their memberships. Passwords are stored only as argon2id hashes (a
// memory-hard function, DESIGN §9).
package accounts

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/alexedwards/argon2id"
	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/ids"
)

// Role is a member's role in an organisation, from most to least powerful.
type Role string

// Roles; the memberships check constraint allows exactly these.
const (
	RoleOwner     Role = "owner"
	RoleAdmin     Role = "admin"
	RoleDeveloper Role = "developer"
	RoleViewer    Role = "viewer"
)

// Roles lists every role, most powerful first.
var Roles = []Role{RoleOwner, RoleAdmin, RoleDeveloper, RoleViewer}

// ValidRole reports whether r is one of Roles.
func ValidRole(r Role) bool {
	for _, x := range Roles {
		if x == r {
			return true
		}
	}
	return false
}

// Limits on user input.
const (
	MaxNameLen        = 200
	MinPasswordLen    = 8
	MaxPasswordLen    = 1024 // bounds the work a login can cause
	maxEmailLen       = 254
	orgObject         = "organization"
	errInvalidCredMsg = "invalid email or password"
)

// Sentinel errors, for errors.Is.
var (
	ErrOrgNotFound        = errors.New("organization not found")
	ErrMemberNotFound     = errors.New("member not found")
	ErrUserNotFound       = errors.New("user not found")
	ErrLastOwner          = errors.New("the organization's last owner")
	ErrForbidden          = errors.New("not allowed to manage this member")
	ErrInvalidCredentials = errors.New(errInvalidCredMsg)
)

// Organization is a tenant.
type Organization struct {
	ID        string    `db:"id"`
	Name      string    `db:"name"`
	CreatedAt time.Time `db:"created_at"`
}

// User is a person who can sign in to the dashboard.
type User struct {
	ID        string    `db:"id"`
	Email     string    `db:"email"`
	Name      string    `db:"name"`
	CreatedAt time.Time `db:"created_at"`
}

// Member is a user as seen from one organisation.
type Member struct {
	User
	Role     Role      `db:"role"`
	JoinedAt time.Time `db:"joined_at"`
}

// DB is what the service needs from Postgres: a *pgxpool.Pool, or a pgx.Tx
// to compose with a larger transaction.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Service manages accounts.
type Service struct {
	db     DB
	now    func() time.Time
	params *argon2id.Params
}

// New returns a service over db; now may be nil for time.Now.
func New(db DB, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{db: db, now: now, params: argon2id.DefaultParams}
}

// CreateOrganization makes a new, empty organisation.
func (s *Service) CreateOrganization(ctx context.Context, actor audit.Actor, name string) (Organization, error) {
	if err := actor.Validate(); err != nil {
		return Organization{}, err
	}
	name = strings.TrimSpace(name)
	if err := apierror.CheckName("name", name); err != nil {
		return Organization{}, err
	}
	switch {
	case name == "":
		return Organization{}, apierror.ParameterMissing("name")
	case utf8.RuneCountInString(name) > MaxNameLen:
		return Organization{}, apierror.ParameterInvalid("name", fmt.Sprintf("The name must be at most %d characters.", MaxNameLen))
	}
	now := s.now()
	o := Organization{ID: ids.NewAt(ids.Org, now), Name: name, CreatedAt: now}
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO organizations (id, name, created_at) VALUES ($1, $2, $3)`,
			o.ID, o.Name, o.CreatedAt); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{
			OrganizationID: o.ID, Actor: actor, Action: "organization.created",
			TargetType: orgObject, TargetID: o.ID, Data: map[string]any{"name": o.Name}, CreatedAt: now,
		})
	})
	if err != nil {
		return Organization{}, fmt.Errorf("creating organization: %w", err)
	}
	return o, nil
}

// GetOrganization returns one organisation.
func (s *Service) GetOrganization(ctx context.Context, id string) (Organization, error) {
	rows, _ := s.db.Query(ctx, `SELECT id, name, created_at FROM organizations WHERE id = $1`, id)
	o, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Organization])
	if errors.Is(err, pgx.ErrNoRows) {
		return Organization{}, orgNotFound(id)
	}
	if err != nil {
		return Organization{}, fmt.Errorf("loading organization: %w", err)
	}
	return o, nil
}

// ListOrganizations returns every organisation, newest first. It is for
// operators; tenants only ever see their own.
func (s *Service) ListOrganizations(ctx context.Context) ([]Organization, error) {
	rows, _ := s.db.Query(ctx, `SELECT id, name, created_at FROM organizations ORDER BY created_at DESC, id DESC`)
	orgs, err := pgx.CollectRows(rows, pgx.RowToStructByName[Organization])
	if err != nil {
		return nil, fmt.Errorf("listing organizations: %w", err)
	}
	return orgs, nil
}

// AddMemberParams describe a person joining an organisation.
type AddMemberParams struct {
	OrganizationID string
	Email          string
	// Password is used only when the user is new: an existing user keeps
	// their password (see AddMemberResult.PasswordIgnored).
	Password string
	Role     Role
	// KeepRole leaves an existing member's role as it is (joining through
	// an invitation never changes a role; roles change with ChangeRole).
	KeepRole bool
	// OwnPasswordOnly is for people joining by themselves (sign-up, an
	// invitation link), who checked beforehand that no user has the email:
	// if one was created since, AddMember changes nothing and fails with
	// ErrInvalidCredentials unless Password is that user's, so the person
	// is never signed in as an account they do not hold.
	OwnPasswordOnly bool
}

// AddMemberResult says what AddMember did.
type AddMemberResult struct {
	Member
	NewUser bool // the user did not exist and was created
	// PreviousRole is set when the user was already a member with another
	// role, which AddMember replaced.
	PreviousRole Role
	// PasswordIgnored is true when the user existed and the given password
	// is not theirs; it was not changed.
	PasswordIgnored bool
}

// AddMember makes the user with that email (compared case-insensitively) a
// member of the organisation with the role, creating the user if needed.
// Repeating it is harmless: an existing membership takes the given role.
func (s *Service) AddMember(ctx context.Context, actor audit.Actor, p AddMemberParams) (AddMemberResult, error) {
	if err := actor.Validate(); err != nil {
		return AddMemberResult{}, err
	}
	email, err := ValidEmail(p.Email)
	if err != nil {
		return AddMemberResult{}, err
	}
	if !ValidRole(p.Role) {
		return AddMemberResult{}, apierror.ParameterInvalid("role",
			fmt.Sprintf("Unknown role %q; use one of owner, admin, developer, viewer.", p.Role))
	}
	if err := validPassword(p.Password); err != nil {
		return AddMemberResult{}, err
	}
	// Hash before the transaction: argon2id is deliberately slow and must
	// not hold row locks. Wasted when the user exists, which is rare.
	hash, err := HashPassword(p.Password, s.params)
	if err != nil {
		return AddMemberResult{}, err
	}
	now := s.now()
	var res AddMemberResult
	var storedHash string
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		res = AddMemberResult{}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM organizations WHERE id = $1)`, p.OrganizationID).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			return orgNotFound(p.OrganizationID)
		}
		// Insert-or-nothing, then read: each statement sees what committed
		// before it, so a concurrent AddMember for the same email makes
		// both calls agree on one user.
		tag, err := tx.Exec(ctx, `INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT ((lower(email))) DO NOTHING`, ids.NewAt(ids.User, now), email, hash, now)
		if err != nil {
			return fmt.Errorf("creating user: %w", err)
		}
		res.NewUser = tag.RowsAffected() == 1
		err = tx.QueryRow(ctx, `SELECT id, email, name, created_at, password_hash FROM users WHERE lower(email) = lower($1)`,
			email).Scan(&res.ID, &res.Email, &res.Name, &res.User.CreatedAt, &storedHash)
		if err != nil {
			return fmt.Errorf("loading user: %w", err)
		}
		if !res.NewUser && p.OwnPasswordOnly {
			// Before any lock is taken: argon2id is deliberately slow.
			if ok, _ := VerifyPassword(p.Password, storedHash); !ok {
				return ErrInvalidCredentials
			}
		}
		// Whoever becomes a member has no use for the organisation's other
		// links to that address: left pending, one would let them back in
		// after they were removed.
		if _, err := tx.Exec(ctx, `UPDATE invitations SET revoked_at = $3
			WHERE organization_id = $1 AND lower(email) = lower($2) AND accepted_at IS NULL AND revoked_at IS NULL`,
			p.OrganizationID, res.Email, now); err != nil {
			return fmt.Errorf("spending invitations: %w", err)
		}

		owners, err := lockOwners(ctx, tx, p.OrganizationID)
		if err != nil {
			return err
		}
		var prev Role
		err = tx.QueryRow(ctx, `SELECT role FROM memberships WHERE organization_id = $1 AND user_id = $2 FOR UPDATE`,
			p.OrganizationID, res.ID).Scan(&prev)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("loading membership: %w", err)
		}
		if prev != "" && p.KeepRole {
			res.Role = prev
			return nil
		}
		if prev == RoleOwner && p.Role != RoleOwner && owners == 1 {
			return errLastOwner()
		}
		err = tx.QueryRow(ctx, `
			INSERT INTO memberships (organization_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (organization_id, user_id) DO UPDATE SET role = excluded.role
			RETURNING created_at`,
			p.OrganizationID, res.ID, string(p.Role), now).Scan(&res.JoinedAt)
		if err != nil {
			return fmt.Errorf("saving membership: %w", err)
		}
		res.Role = p.Role
		action, data := "membership.created", map[string]any{"email": res.Email, "role": res.Role, "new_user": res.NewUser}
		switch prev {
		case "":
		case p.Role:
			return nil // already a member with this role: nothing to audit
		default:
			res.PreviousRole = prev
			action, data = "membership.updated", map[string]any{"email": res.Email,
				"role": map[string]any{"from": prev, "to": res.Role}}
		}
		return audit.Record(ctx, tx, audit.Entry{
			OrganizationID: p.OrganizationID, Actor: actor, Action: action,
			TargetType: "user", TargetID: res.ID, Data: data, CreatedAt: now,
		})
	})
	if err != nil {
		return AddMemberResult{}, fmt.Errorf("adding member: %w", err)
	}
	if !res.NewUser {
		ok, _ := VerifyPassword(p.Password, storedHash)
		res.PasswordIgnored = !ok
	}
	return res, nil
}

// SetPassword gives the user with email (compared case-insensitively) a new
// password: the operator's answer to a forgotten one. It ends the user's
// dashboard sessions, clears the sign-in lock-out of that email, and is
// recorded in the audit trail of every organisation the user belongs to.
func (s *Service) SetPassword(ctx context.Context, actor audit.Actor, email, password string) (User, error) {
	if err := actor.Validate(); err != nil {
		return User{}, err
	}
	email, err := ValidEmail(email)
	if err != nil {
		return User{}, err
	}
	if err := validPassword(password); err != nil {
		return User{}, err
	}
	hash, err := HashPassword(password, s.params) // before the transaction: deliberately slow
	if err != nil {
		return User{}, err
	}
	now := s.now()
	var u User
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `UPDATE users SET password_hash = $2 WHERE lower(email) = lower($1)
			RETURNING id, email, name, created_at`, email, hash).Scan(&u.ID, &u.Email, &u.Name, &u.CreatedAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return &Error{sentinel: ErrUserNotFound, api: apierror.ParameterInvalid("email", fmt.Sprintf("No user has the email %q.", email))}
		}
		if err != nil {
			return fmt.Errorf("setting password: %w", err)
		}
		ended, err := tx.Exec(ctx, `DELETE FROM sessions WHERE user_id = $1`, u.ID)
		if err != nil {
			return fmt.Errorf("ending sessions: %w", err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM login_failures WHERE email = $1`, strings.ToLower(email)); err != nil {
			return fmt.Errorf("clearing sign-in failures: %w", err)
		}
		rows, err := tx.Query(ctx, `SELECT organization_id FROM memberships WHERE user_id = $1 ORDER BY organization_id`, u.ID)
		if err != nil {
			return fmt.Errorf("loading memberships: %w", err)
		}
		orgs, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("loading memberships: %w", err)
		}
		for _, org := range orgs {
			if err := audit.Record(ctx, tx, audit.Entry{
				OrganizationID: org, Actor: actor, Action: "user.password_set", TargetType: "user", TargetID: u.ID,
				Data: map[string]any{"email": u.Email, "sessions_ended": ended.RowsAffected()}, CreatedAt: now,
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return User{}, fmt.Errorf("setting password: %w", err)
	}
	return u, nil
}

// ChangeRole gives the member userID of org the role. An organisation
// always keeps an owner: demoting its last one fails with ErrLastOwner.
// A user acting (audit.ActorUser) must be an admin or owner of org, and
// only owners make owners or change them (ErrForbidden); the check runs in
// the same transaction, so a role that changed a moment ago counts.
func (s *Service) ChangeRole(ctx context.Context, actor audit.Actor, org, userID string, role Role) (Member, error) {
	if err := actor.Validate(); err != nil {
		return Member{}, err
	}
	if !ValidRole(role) {
		return Member{}, apierror.ParameterInvalid("role",
			fmt.Sprintf("Unknown role %q; use one of owner, admin, developer, viewer.", role))
	}
	now := s.now()
	var m Member
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		prev, owners, err := lockMembership(ctx, tx, org, userID)
		if err != nil {
			return err
		}
		if err := mayManage(ctx, tx, actor, org, prev == RoleOwner || role == RoleOwner); err != nil {
			return err
		}
		if prev == RoleOwner && role != RoleOwner && owners == 1 {
			return errLastOwner()
		}
		err = tx.QueryRow(ctx, `
			UPDATE memberships m SET role = $3 FROM users u
			WHERE m.organization_id = $1 AND m.user_id = $2 AND u.id = m.user_id
			RETURNING u.id, u.email, u.name, u.created_at, m.role, m.created_at`, org, userID, string(role)).
			Scan(&m.ID, &m.Email, &m.Name, &m.CreatedAt, &m.Role, &m.JoinedAt)
		if err != nil {
			return fmt.Errorf("changing role: %w", err)
		}
		if prev == role {
			return nil
		}
		return audit.Record(ctx, tx, audit.Entry{
			OrganizationID: org, Actor: actor, Action: "membership.updated",
			TargetType: "user", TargetID: userID, CreatedAt: now,
			Data: map[string]any{"email": m.Email, "role": map[string]any{"from": prev, "to": role}},
		})
	})
	if err != nil {
		return Member{}, err
	}
	return m, nil
}

// RemoveMember ends userID's membership of org; their dashboard sessions
// lose the organisation on their next request. The last owner cannot be
// removed (ErrLastOwner); a user acting must be allowed as for ChangeRole.
func (s *Service) RemoveMember(ctx context.Context, actor audit.Actor, org, userID string) error {
	if err := actor.Validate(); err != nil {
		return err
	}
	now := s.now()
	return pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		prev, owners, err := lockMembership(ctx, tx, org, userID)
		if err != nil {
			return err
		}
		if err := mayManage(ctx, tx, actor, org, prev == RoleOwner); err != nil {
			return err
		}
		if prev == RoleOwner && owners == 1 {
			return errLastOwner()
		}
		var email string
		if err := tx.QueryRow(ctx, `
			WITH d AS (DELETE FROM memberships WHERE organization_id = $1 AND user_id = $2 RETURNING user_id)
			SELECT u.email FROM d JOIN users u ON u.id = d.user_id`, org, userID).Scan(&email); err != nil {
			return fmt.Errorf("removing member: %w", err)
		}
		return audit.Record(ctx, tx, audit.Entry{
			OrganizationID: org, Actor: actor, Action: "membership.deleted",
			TargetType: "user", TargetID: userID, CreatedAt: now,
			Data: map[string]any{"email": email, "role": prev},
		})
	})
}

// lockOwners locks the organisation's owner memberships, always first and
// in one order, so that two concurrent changes cannot each leave the other
// owner alone and then both go; it returns how many there are.
func lockOwners(ctx context.Context, tx pgx.Tx, org string) (int, error) {
	rows, _ := tx.Query(ctx, `SELECT user_id FROM memberships WHERE organization_id = $1 AND role = 'owner'
		ORDER BY user_id FOR UPDATE`, org)
	owners, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, fmt.Errorf("locking owners: %w", err)
	}
	return len(owners), nil
}

// lockMembership locks the owners (lockOwners) and then the member, and
// returns the member's role and how many owners there are.
func lockMembership(ctx context.Context, tx pgx.Tx, org, userID string) (Role, int, error) {
	owners, err := lockOwners(ctx, tx, org)
	if err != nil {
		return "", 0, err
	}
	var role Role
	err = tx.QueryRow(ctx, `SELECT role FROM memberships WHERE organization_id = $1 AND user_id = $2 FOR UPDATE`,
		org, userID).Scan(&role)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", 0, &Error{sentinel: ErrMemberNotFound, api: apierror.NotFound("member", userID)}
	}
	if err != nil {
		return "", 0, fmt.Errorf("loading membership: %w", err)
	}
	return role, owners, nil
}

// mayManage checks, inside the change's transaction, that a user acting
// may manage org's members: admins and owners may, and only owners when
// an owner is involved. Operators (the CLI, the system) may always.
func mayManage(ctx context.Context, tx pgx.Tx, actor audit.Actor, org string, ownerInvolved bool) error {
	if actor.Type != audit.ActorUser {
		return nil
	}
	var role Role
	err := tx.QueryRow(ctx, `SELECT role FROM memberships WHERE organization_id = $1 AND user_id = $2 FOR SHARE`,
		org, actor.ID).Scan(&role)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("loading the actor's membership: %w", err)
	}
	switch {
	case role == RoleOwner, role == RoleAdmin && !ownerInvolved:
		return nil
	case role == RoleAdmin:
		return forbidden("Only owners can make owners or change them.")
	}
	return forbidden("Only owners and admins can manage members.")
}

func errLastOwner() error {
	return &Error{sentinel: ErrLastOwner, api: apierror.InvalidRequest("last_owner", "",
		"This is the organization's only owner. Make another member an owner first.")}
}

func forbidden(msg string) error {
	return &Error{sentinel: ErrForbidden, api: apierror.Permission("permission_denied", msg)}
}

// ListMembers returns org's members, newest first.
func (s *Service) ListMembers(ctx context.Context, org string) ([]Member, error) {
	if _, err := s.GetOrganization(ctx, org); err != nil {
		return nil, err
	}
	rows, _ := s.db.Query(ctx, `
		SELECT u.id, u.email, u.name, u.created_at, m.role, m.created_at AS joined_at
		FROM memberships m JOIN users u ON u.id = m.user_id
		WHERE m.organization_id = $1
		ORDER BY m.created_at DESC, u.id DESC`, org)
	ms, err := pgx.CollectRows(rows, pgx.RowToStructByName[Member])
	if err != nil {
		return nil, fmt.Errorf("listing members: %w", err)
	}
	return ms, nil
}

// Authenticate returns the user with email if password is theirs. Unknown
// emails cost the same hashing work as wrong passwords, so response times
// do not reveal which emails have accounts.
func (s *Service) Authenticate(ctx context.Context, email, password string) (User, error) {
	var u User
	var hash string
	err := s.db.QueryRow(ctx, `SELECT id, email, name, created_at, password_hash FROM users WHERE lower(email) = lower($1)`,
		strings.TrimSpace(email)).Scan(&u.ID, &u.Email, &u.Name, &u.CreatedAt, &hash)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		hash = dummyHash()
	case err != nil:
		return User{}, fmt.Errorf("loading user: %w", err)
	}
	if len(password) > MaxPasswordLen {
		return User{}, ErrInvalidCredentials
	}
	ok, err := VerifyPassword(password, hash)
	if err != nil || !ok || u.ID == "" {
		return User{}, ErrInvalidCredentials
	}
	return u, nil
}

// dummyHash is verified against when no user matches, to spend the same time.
// It is made on first use so that binaries which never log anyone in do not
// pay for it at start-up.
var dummyHash = sync.OnceValue(func() string {
	h, _ := argon2id.CreateHash("gatehouse-dummy-password", argon2id.DefaultParams)
	return h
})

// HashPassword returns the argon2id hash of password in the PHC string
// format ("$argon2id$v=19$m=…"), salt included.
func HashPassword(password string, params *argon2id.Params) (string, error) {
	h, err := argon2id.CreateHash(password, params)
	if err != nil {
		return "", fmt.Errorf("hashing password: %w", err)
	}
	return h, nil
}

// VerifyPassword reports whether password matches hash, in constant time.
func VerifyPassword(password, hash string) (bool, error) {
	return argon2id.ComparePasswordAndHash(password, hash)
}

// ValidEmail returns s trimmed when it is one plain email address (no
// display name) of at most 254 bytes, and a parameter error naming "email"
// otherwise.
func ValidEmail(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", apierror.ParameterMissing("email")
	}
	a, err := mail.ParseAddress(s)
	local, domain, _ := strings.Cut(s, "@")
	if err != nil || a.Address != s || a.Name != "" || len(s) > maxEmailLen || local == "" || domain == "" {
		return "", apierror.ParameterInvalid("email", fmt.Sprintf("%q is not a valid email address.", s))
	}
	return s, nil
}

func validPassword(p string) error {
	switch {
	case p == "":
		return apierror.ParameterMissing("password")
	case len(p) < MinPasswordLen:
		return apierror.ParameterInvalid("password", fmt.Sprintf("The password must be at least %d characters.", MinPasswordLen))
	case len(p) > MaxPasswordLen:
		return apierror.ParameterInvalid("password", fmt.Sprintf("The password must be at most %d characters.", MaxPasswordLen))
	}
	return nil
}

// Error is a domain error that is both a sentinel (errors.Is) and the public
// error object (errors.As / apierror.From).
type Error struct {
	sentinel error
	api      *apierror.Error
}

func (e *Error) Error() string   { return e.api.Message }
func (e *Error) Unwrap() []error { return []error{e.sentinel, e.api} }

func orgNotFound(id string) error {
	return &Error{sentinel: ErrOrgNotFound, api: apierror.NotFound(orgObject, id)}
}
