package accounts_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/controlplane/accounts"
	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

var ops = audit.Actor{Type: audit.ActorCLI, ID: "root"}

func TestOrganizations(t *testing.T) {
	db, _ := testenv.Pool(t)
	ctx := context.Background()
	svc := accounts.New(db, nil)

	o, err := svc.CreateOrganization(ctx, ops, "  Acme  ")
	if err != nil {
		t.Fatal(err)
	}
	if !ids.Valid(o.ID, ids.Org) || o.Name != "Acme" {
		t.Fatalf("org = %+v", o)
	}
	got, err := svc.GetOrganization(ctx, o.ID)
	if err != nil || got.Name != "Acme" {
		t.Fatalf("get = %+v, %v", got, err)
	}
	if _, err := svc.GetOrganization(ctx, "org_nope"); !errors.Is(err, accounts.ErrOrgNotFound) {
		t.Fatalf("missing org: %v", err)
	}
	for _, name := range []string{"", "   ", strings.Repeat("x", 201), strings.Repeat("é", 201), "Acme\x00", "Acme\xff"} {
		if _, err := svc.CreateOrganization(ctx, ops, name); apierror.From(err).Param != "name" || apierror.From(err).Status != 400 {
			t.Errorf("name %q: err = %v", name, err)
		}
	}
	// The limit counts characters, as its message says, not bytes.
	if _, err := svc.CreateOrganization(ctx, ops, strings.Repeat("é", 200)); err != nil {
		t.Errorf("a name of 200 two-byte characters: %v", err)
	}
	p, err := audit.NewLog(db).List(ctx, o.ID, audit.Filter{})
	if err != nil || len(p.Data) != 1 || p.Data[0].Action != "organization.created" {
		t.Fatalf("audit = %+v, %v", p.Data, err)
	}
}

func TestAddMember(t *testing.T) {
	db, _ := testenv.Pool(t)
	ctx := context.Background()
	svc := accounts.New(db, nil)
	acme, err := svc.CreateOrganization(ctx, ops, "Acme")
	if err != nil {
		t.Fatal(err)
	}
	beta, err := svc.CreateOrganization(ctx, ops, "Beta")
	if err != nil {
		t.Fatal(err)
	}

	type want struct {
		newUser         bool
		previousRole    accounts.Role
		passwordIgnored bool
	}
	var firstID string
	for _, tc := range []struct {
		name string
		p    accounts.AddMemberParams
		want want
	}{
		{"new user", accounts.AddMemberParams{OrganizationID: acme.ID, Email: "Dev@Example.com", Password: "correct horse", Role: accounts.RoleDeveloper},
			want{newUser: true}},
		{"same email, other case, same org: role changes", accounts.AddMemberParams{OrganizationID: acme.ID, Email: "dev@example.COM", Password: "correct horse", Role: accounts.RoleAdmin},
			want{previousRole: accounts.RoleDeveloper}},
		{"repeat is harmless", accounts.AddMemberParams{OrganizationID: acme.ID, Email: "dev@example.com", Password: "correct horse", Role: accounts.RoleAdmin},
			want{}},
		{"existing user joins another org; password kept", accounts.AddMemberParams{OrganizationID: beta.ID, Email: "dev@example.com", Password: "another password", Role: accounts.RoleViewer},
			want{passwordIgnored: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := svc.AddMember(ctx, ops, tc.p)
			if err != nil {
				t.Fatal(err)
			}
			if firstID == "" {
				firstID = res.ID
			}
			got := want{res.NewUser, res.PreviousRole, res.PasswordIgnored}
			if got != tc.want || res.ID != firstID || res.Role != tc.p.Role || res.Email != "Dev@Example.com" {
				t.Fatalf("result = %+v, want %+v for user %s", res, tc.want, firstID)
			}
		})
	}

	// The password is stored as an argon2id hash, verifiable, and the
	// second password did not replace it.
	var hash string
	if err := db.QueryRow(ctx, `SELECT password_hash FROM users WHERE id = $1`, firstID).Scan(&hash); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(hash, "$argon2id$") || strings.Contains(hash, "correct horse") {
		t.Fatalf("stored hash %q", hash)
	}
	if ok, err := accounts.VerifyPassword("correct horse", hash); !ok || err != nil {
		t.Fatalf("hash does not verify: %v", err)
	}
	for _, tc := range []struct {
		name, email, password string
		ok                    bool
	}{
		{"right password, any case email", "DEV@example.com", "correct horse", true},
		{"wrong password", "dev@example.com", "another password", false},
		{"unknown user", "nobody@example.com", "correct horse", false},
	} {
		t.Run("authenticate "+tc.name, func(t *testing.T) {
			u, err := svc.Authenticate(ctx, tc.email, tc.password)
			if tc.ok != (err == nil) || (tc.ok && u.ID != firstID) {
				t.Fatalf("Authenticate = %+v, %v", u, err)
			}
			if !tc.ok && !errors.Is(err, accounts.ErrInvalidCredentials) {
				t.Fatalf("err = %v", err)
			}
		})
	}

	ms, err := svc.ListMembers(ctx, beta.ID)
	if err != nil || len(ms) != 1 || ms[0].Role != accounts.RoleViewer {
		t.Fatalf("beta members = %+v, %v", ms, err)
	}
	p, err := audit.NewLog(db).List(ctx, acme.ID, audit.Filter{Action: "membership.", Limit: 100})
	if err != nil || len(p.Data) != 2 {
		t.Fatalf("acme membership audit = %+v, %v", p.Data, err)
	}

	// Someone joining by themselves (sign-up, an invitation link) who
	// found no user with the email is never made, and so never signed in
	// as, a user created since: without that user's password nothing changes.
	gamma, err := svc.CreateOrganization(ctx, ops, "Gamma")
	if err != nil {
		t.Fatal(err)
	}
	join := accounts.AddMemberParams{OrganizationID: gamma.ID, Email: "dev@example.com", Password: "not their password",
		Role: accounts.RoleOwner, OwnPasswordOnly: true}
	if res, err := svc.AddMember(ctx, ops, join); !errors.Is(err, accounts.ErrInvalidCredentials) {
		t.Fatalf("joining as an existing user without their password: %+v, %v", res, err)
	}
	if ms, err := svc.ListMembers(ctx, gamma.ID); err != nil || len(ms) != 0 {
		t.Fatalf("gamma members after a refused join = %+v, %v", ms, err)
	}
	join.Password = "correct horse"
	if res, err := svc.AddMember(ctx, ops, join); err != nil || res.ID != firstID || res.Role != accounts.RoleOwner {
		t.Fatalf("joining with the user's own password: %+v, %v", res, err)
	}

	// An organisation never loses its last owner, through AddMember either;
	// KeepRole (invitations) leaves an existing member's role alone.
	solo, err := svc.CreateOrganization(ctx, ops, "Solo")
	if err != nil {
		t.Fatal(err)
	}
	owner := accounts.AddMemberParams{OrganizationID: solo.ID, Email: "solo@example.com", Password: "correct horse", Role: accounts.RoleOwner}
	if _, err := svc.AddMember(ctx, ops, owner); err != nil {
		t.Fatal(err)
	}
	demote := owner
	demote.Role = accounts.RoleViewer
	if _, err := svc.AddMember(ctx, ops, demote); !errors.Is(err, accounts.ErrLastOwner) {
		t.Fatalf("demoting the last owner through AddMember: %v", err)
	}
	demote.KeepRole = true
	if res, err := svc.AddMember(ctx, ops, demote); err != nil || res.Role != accounts.RoleOwner {
		t.Fatalf("joining again with KeepRole: %+v, %v", res, err)
	}
}

func TestAddMemberValidation(t *testing.T) {
	db, _ := testenv.Pool(t)
	ctx := context.Background()
	svc := accounts.New(db, nil)
	org, err := svc.CreateOrganization(ctx, ops, "Acme")
	if err != nil {
		t.Fatal(err)
	}
	ok := accounts.AddMemberParams{OrganizationID: org.ID, Email: "a@example.com", Password: "long enough", Role: accounts.RoleDeveloper}
	for _, tc := range []struct {
		name   string
		change func(*accounts.AddMemberParams)
		param  string // "" for organisation not found
	}{
		{"missing email", func(p *accounts.AddMemberParams) { p.Email = "" }, "email"},
		{"no at sign", func(p *accounts.AddMemberParams) { p.Email = "example.com" }, "email"},
		{"display name", func(p *accounts.AddMemberParams) { p.Email = "Al <a@example.com>" }, "email"},
		{"no domain", func(p *accounts.AddMemberParams) { p.Email = "a@" }, "email"},
		{"unknown role", func(p *accounts.AddMemberParams) { p.Role = "superuser" }, "role"},
		{"short password", func(p *accounts.AddMemberParams) { p.Password = "short" }, "password"},
		{"missing password", func(p *accounts.AddMemberParams) { p.Password = "" }, "password"},
		{"unknown organisation", func(p *accounts.AddMemberParams) { p.OrganizationID = "org_nope" }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := ok
			tc.change(&p)
			_, err := svc.AddMember(ctx, ops, p)
			if tc.param == "" {
				if !errors.Is(err, accounts.ErrOrgNotFound) {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if ae := apierror.From(err); ae.Status != 400 || ae.Param != tc.param {
				t.Fatalf("err = %v, want 400 on %s", err, tc.param)
			}
		})
	}
	var n int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM users`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d users after refused adds (%v)", n, err)
	}
}

// Two owners demoting each other at the same moment cannot leave the
// organisation without an owner: the owner rows are locked, so exactly
// one demotion wins and the other is refused as the last owner's.
func TestConcurrentDemotionsKeepAnOwner(t *testing.T) {
	db, _ := testenv.Pool(t)
	ctx := context.Background()
	svc := accounts.New(db, nil)
	for round := range 5 {
		o, err := svc.CreateOrganization(ctx, ops, "Two owners")
		if err != nil {
			t.Fatal(err)
		}
		var owners [2]string
		for i := range owners {
			m, err := svc.AddMember(ctx, ops, accounts.AddMemberParams{OrganizationID: o.ID,
				Email: fmt.Sprintf("owner%d-%d-%s@example.com", i, round, o.ID), Password: "correct horse battery", Role: accounts.RoleOwner})
			if err != nil {
				t.Fatal(err)
			}
			owners[i] = m.ID
		}
		errs := make(chan error, 2)
		start := make(chan struct{})
		for _, id := range owners {
			go func() {
				<-start
				_, err := svc.ChangeRole(ctx, ops, o.ID, id, accounts.RoleAdmin)
				errs <- err
			}()
		}
		close(start)
		var ok, last int
		for range 2 {
			switch err := <-errs; {
			case err == nil:
				ok++
			case errors.Is(err, accounts.ErrLastOwner):
				last++
			default:
				t.Fatal(err)
			}
		}
		ms, _ := svc.ListMembers(ctx, o.ID)
		n := 0
		for _, m := range ms {
			if m.Role == accounts.RoleOwner {
				n++
			}
		}
		if ok != 1 || last != 1 || n != 1 {
			t.Fatalf("round %d: %d demotions went through, %d refused, %d owners left", round, ok, last, n)
		}
	}
	if err := svc.RemoveMember(ctx, ops, "org_nope", "usr_nope"); !errors.Is(err, accounts.ErrMemberNotFound) {
		t.Fatalf("removing a non-member: %v", err)
	}
}

// The service itself enforces who may manage members when a user acts, so
// a page that checked a moment earlier cannot be raced: admins manage
// non-owners, only owners touch or make owners, others manage nobody.
func TestMemberManagementRules(t *testing.T) {
	db, _ := testenv.Pool(t)
	ctx := context.Background()
	svc := accounts.New(db, nil)
	org, err := svc.CreateOrganization(ctx, ops, "Rules")
	if err != nil {
		t.Fatal(err)
	}
	other, err := svc.CreateOrganization(ctx, ops, "Other")
	if err != nil {
		t.Fatal(err)
	}
	add := func(o, email string, role accounts.Role) audit.Actor {
		m, err := svc.AddMember(ctx, ops, accounts.AddMemberParams{OrganizationID: o, Email: email + "@" + org.ID + ".example.com",
			Password: "correct horse battery", Role: role})
		if err != nil {
			t.Fatal(err)
		}
		return audit.Actor{Type: audit.ActorUser, ID: m.ID}
	}
	owner, admin, dev := add(org.ID, "owner", accounts.RoleOwner), add(org.ID, "admin", accounts.RoleAdmin), add(org.ID, "dev", accounts.RoleDeveloper)
	stranger := add(other.ID, "stranger", accounts.RoleOwner)

	for _, tc := range []struct {
		name   string
		actor  audit.Actor
		target audit.Actor
		role   accounts.Role
		want   error
	}{
		{"admin demotes a developer", admin, dev, accounts.RoleViewer, nil},
		{"admin promotes to owner", admin, dev, accounts.RoleOwner, accounts.ErrForbidden},
		{"admin demotes the owner", admin, owner, accounts.RoleAdmin, accounts.ErrForbidden},
		{"a viewer manages", dev, admin, accounts.RoleViewer, accounts.ErrForbidden},
		{"another organisation's owner", stranger, dev, accounts.RoleAdmin, accounts.ErrForbidden},
		{"owner promotes to owner", owner, admin, accounts.RoleOwner, nil},
	} {
		if _, err := svc.ChangeRole(ctx, tc.actor, org.ID, tc.target.ID, tc.role); !errors.Is(err, tc.want) && (tc.want != nil || err != nil) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// admin is an owner now; dev a viewer.
	if err := svc.RemoveMember(ctx, dev, org.ID, admin.ID); !errors.Is(err, accounts.ErrForbidden) {
		t.Errorf("a viewer removes an owner: %v", err)
	}
	if err := svc.RemoveMember(ctx, admin, org.ID, owner.ID); err != nil {
		t.Errorf("an owner removes another owner: %v", err)
	}
}

// SetPassword is the operator's answer to a forgotten password: the new one
// signs in, the old one no longer does, the user's sessions end, the sign-in
// lock-out of the email is lifted, and each of the user's organisations has
// it in its audit trail.
func TestSetPassword(t *testing.T) {
	db, _ := testenv.Pool(t)
	ctx := context.Background()
	svc := accounts.New(db, nil)
	var orgs []string
	for _, name := range []string{"Acme", "Globex"} {
		o, err := svc.CreateOrganization(ctx, ops, name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := svc.AddMember(ctx, ops, accounts.AddMemberParams{OrganizationID: o.ID, Email: "ada@example.com",
			Password: "forgotten password", Role: accounts.RoleDeveloper}); err != nil {
			t.Fatal(err)
		}
		orgs = append(orgs, o.ID)
	}
	u, err := svc.Authenticate(ctx, "ada@example.com", "forgotten password")
	if err != nil {
		t.Fatal(err)
	}
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := db.Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	exec(`INSERT INTO sessions (token_hash, user_id, organization_id, csrf_token, expires_at) VALUES ('\x01', $1, $2, 'c', now() + interval '1 day')`, u.ID, orgs[0])
	exec(`INSERT INTO login_failures (email, ip) VALUES ('ada@example.com', '192.0.2.1'), ('other@example.com', '192.0.2.1')`)

	got, err := svc.SetPassword(ctx, ops, "ADA@example.com", "brand new password")
	if err != nil || got.ID != u.ID {
		t.Fatalf("SetPassword = %+v, %v", got, err)
	}
	if _, err := svc.Authenticate(ctx, "ada@example.com", "brand new password"); err != nil {
		t.Errorf("the new password does not sign in: %v", err)
	}
	if _, err := svc.Authenticate(ctx, "ada@example.com", "forgotten password"); !errors.Is(err, accounts.ErrInvalidCredentials) {
		t.Errorf("the old password still signs in: %v", err)
	}
	var sessions, failures int
	if err := db.QueryRow(ctx, `SELECT (SELECT count(*) FROM sessions), (SELECT count(*) FROM login_failures)`).Scan(&sessions, &failures); err != nil {
		t.Fatal(err)
	}
	if sessions != 0 || failures != 1 {
		t.Errorf("after: %d sessions (want 0), %d sign-in failures (want only another email's)", sessions, failures)
	}
	for _, org := range orgs {
		p, err := audit.NewLog(db).List(ctx, org, audit.Filter{})
		if err != nil || p.Data[0].Action != "user.password_set" || p.Data[0].TargetID != u.ID {
			t.Errorf("audit of %s: %+v, %v", org, p.Data, err)
		}
	}

	// The lock-out is kept under the address as Go lower-cases it, which
	// Postgres' lower() does not do beyond ASCII under the C locale.
	const ozil = "Özil@example.com"
	if _, err := svc.AddMember(ctx, ops, accounts.AddMemberParams{OrganizationID: orgs[0], Email: ozil,
		Password: "forgotten password", Role: accounts.RoleViewer}); err != nil {
		t.Fatal(err)
	}
	exec(`INSERT INTO login_failures (email, ip) VALUES ($1, '192.0.2.1')`, strings.ToLower(ozil))
	if _, err := svc.SetPassword(ctx, ops, ozil, "brand new password"); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(ctx, `SELECT count(*) FROM login_failures WHERE email = $1`, strings.ToLower(ozil)).Scan(&failures); err != nil || failures != 0 {
		t.Errorf("the lock-out of %s after SetPassword: %d sign-in failures, %v", ozil, failures, err)
	}

	if _, err := svc.SetPassword(ctx, ops, "nobody@example.com", "long enough"); !errors.Is(err, accounts.ErrUserNotFound) || apierror.From(err).Status != 400 {
		t.Errorf("unknown email: %v", err)
	}
	if _, err := svc.SetPassword(ctx, ops, "ada@example.com", "short"); apierror.From(err).Param != "password" {
		t.Errorf("short password: %v", err)
	}
}
