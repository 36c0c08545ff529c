package keys_test

import (
	"context"
	"encoding/hex"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/caddymodule/ratelimit/keyspace"
	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/controlplane/keys"
	"github.com/gatehouse/gatehouse/controlplane/limits"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/apikey"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

var (
	t0  = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cli = audit.Actor{Type: audit.ActorCLI, ID: "alice"}
)

// fixture is a migrated database with two organisations, a service on a
// fixed clock, and a connection listening on the notify channel.
type fixture struct {
	db     *pgxpool.Pool
	dsn    string
	svc    *keys.Service
	now    time.Time
	orgA   string
	orgB   string
	listen *pgx.Conn
	// secrets are every key the test created, to prove none is stored
	// anywhere but as a hash.
	secrets []string
}

func setup(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	db, dsn := testenv.Pool(t)
	f := &fixture{db: db, dsn: dsn, now: t0, orgA: "org_A", orgB: "org_B"}
	f.svc = keys.New(db, func() time.Time { return f.now })
	for _, id := range []string{f.orgA, f.orgB} {
		if _, err := db.Exec(ctx, `INSERT INTO organizations (id, name) VALUES ($1, $1)`, id); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, "LISTEN "+keys.NotifyChannel); err != nil {
		t.Fatal(err)
	}
	f.listen = conn
	return f
}

// nextNotification returns the next payload on the channel. To assert that
// nothing else arrived first, callers send a sentinel with f.mark and
// expect it as the next payload — no sleeping, no timeouts to tune.
func (f *fixture) nextNotification(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := f.listen.WaitForNotification(ctx)
	if err != nil {
		t.Fatalf("waiting for notification: %v", err)
	}
	if n.Channel != keys.NotifyChannel {
		t.Fatalf("notification on %q", n.Channel)
	}
	return n.Payload
}

// mark sends a sentinel notification from outside any open transaction.
func (f *fixture) mark(t *testing.T, payload string) {
	t.Helper()
	if _, err := f.db.Exec(context.Background(), `SELECT pg_notify($1, $2)`, keys.NotifyChannel, payload); err != nil {
		t.Fatal(err)
	}
}

// expectQuiet asserts that no notification is pending.
func (f *fixture) expectQuiet(t *testing.T) {
	t.Helper()
	f.mark(t, "sentinel")
	if got := f.nextNotification(t); got != "sentinel" {
		t.Fatalf("unexpected notification %q", got)
	}
}

func hashHex(secret string) string {
	h := apikey.Hash(secret)
	return hex.EncodeToString(h[:])
}

func (f *fixture) create(t *testing.T, org string, env apikey.Environment, p keys.CreateParams) keys.Created {
	t.Helper()
	if p.Kind == "" {
		p.Kind = apikey.Secret
	}
	c, err := f.svc.Create(context.Background(), cli, org, env, p)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	f.secrets = append(f.secrets, c.Secret)
	return c
}

func (f *fixture) auditFor(t *testing.T, org, target string) []audit.Entry {
	t.Helper()
	p, err := audit.NewLog(f.db).List(context.Background(), org, audit.Filter{TargetID: target, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	return p.Data
}

func TestCreate(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	exp := t0.Add(30 * 24 * time.Hour)
	for _, tc := range []struct {
		name   string
		env    apikey.Environment
		params keys.CreateParams
		prefix string
		scopes []string
	}{
		{"sandbox secret", apikey.Sandbox, keys.CreateParams{Kind: apikey.Secret}, "sk_test_", []string{}},
		{"live secret with expiry and name", apikey.Live,
			keys.CreateParams{Kind: apikey.Secret, Name: " deploy ", ExpiresAt: &exp}, "sk_live_", []string{}},
		{"restricted, scopes deduplicated in canonical order", apikey.Sandbox,
			keys.CreateParams{Kind: apikey.Restricted, Scopes: []string{"events:read", "customers:read", "events:read"}},
			"rk_test_", []string{"customers:read", "events:read"}},
		{"restricted live with allowlist", apikey.Live,
			keys.CreateParams{Kind: apikey.Restricted, Scopes: []string{"logs:read"},
				IPAllowlist: []netip.Prefix{netip.MustParsePrefix("10.1.2.3/8"), netip.MustParsePrefix("2001:db8::1/128")}},
			"rk_live_", []string{"logs:read"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := f.create(t, f.orgA, tc.env, tc.params)
			if _, err := apikey.Parse(c.Secret); err != nil || !strings.HasPrefix(c.Secret, tc.prefix) {
				t.Fatalf("secret %q: %v", c.Secret, err)
			}
			if c.Prefix != apikey.DisplayPrefix(c.Secret) || c.Last4 != apikey.Last4(c.Secret) {
				t.Errorf("prefix/last4 = %s/%s for %s", c.Prefix, c.Last4, c.Secret)
			}
			if !slices.Equal(c.Scopes, tc.scopes) {
				t.Errorf("scopes = %v, want %v", c.Scopes, tc.scopes)
			}
			if !c.CreatedAt.Equal(t0) || c.CreatedBy != "cli:alice" || c.Environment != tc.env {
				t.Errorf("created = %v by %q in %s", c.CreatedAt, c.CreatedBy, c.Environment)
			}
			if tc.params.Name != "" && c.Name != strings.TrimSpace(tc.params.Name) {
				t.Errorf("name = %q", c.Name)
			}
			if tc.params.ExpiresAt != nil && (c.ExpiresAt == nil || !c.ExpiresAt.Equal(exp)) {
				t.Errorf("expires_at = %v, want %v", c.ExpiresAt, exp)
			}

			// Only the hash is stored, and it is the hash of the secret.
			var stored []byte
			if err := f.db.QueryRow(ctx, `SELECT key_hash FROM api_keys WHERE id = $1`, c.ID).Scan(&stored); err != nil {
				t.Fatal(err)
			}
			if hex.EncodeToString(stored) != hashHex(c.Secret) {
				t.Fatal("stored hash is not SHA-256 of the key")
			}

			entries := f.auditFor(t, f.orgA, c.ID)
			if len(entries) != 1 || entries[0].Action != "api_key.created" || entries[0].Actor != cli {
				t.Fatalf("audit = %+v", entries)
			}
			e := entries[0]
			if e.Data["prefix"] != c.Prefix || e.Data["last4"] != c.Last4 || e.Data["environment"] != string(tc.env) ||
				e.Livemode == nil || *e.Livemode != (tc.env == apikey.Live) {
				t.Errorf("audit data = %v livemode=%v", e.Data, e.Livemode)
			}
		})
	}
	// The allowlist is stored masked.
	ks, err := f.svc.List(ctx, f.orgA, apikey.Live)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(ks, func(k keys.Key) bool { return k.Kind == apikey.Restricted })
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::1/128")}
	if i < 0 || !slices.Equal(ks[i].IPAllowlist, want) {
		t.Errorf("allowlist of %v, want %v", ks, want)
	}
	// Creating a key changes no existing key: nothing to evict.
	f.expectQuiet(t)
	assertNoSecretsInAudit(t, f)
}

// assertNoSecretsInAudit checks that no audit row carries a key or a hash.
// (Display prefixes and last4 are expected there.)
func assertNoSecretsInAudit(t *testing.T, f *fixture) {
	t.Helper()
	rows, _ := f.db.Query(context.Background(), `SELECT data::text FROM audit_logs`)
	datas, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	var hashes []string
	rows, _ = f.db.Query(context.Background(), `SELECT encode(key_hash, 'hex') FROM api_keys`)
	if hashes, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	for _, d := range datas {
		for _, k := range f.secrets {
			if strings.Contains(d, k) {
				t.Errorf("audit data holds a key: %s", d)
			}
		}
		for _, h := range hashes {
			if strings.Contains(d, h) {
				t.Errorf("audit data holds a key hash: %s", d)
			}
		}
	}
}

func TestCreateValidation(t *testing.T) {
	f := setup(t)
	past := t0.Add(-time.Minute)
	for _, tc := range []struct {
		name    string
		org     string
		env     apikey.Environment
		params  keys.CreateParams
		param   string // of the invalid-request error; "" for not found
		message string
	}{
		{"restricted without scopes", f.orgA, apikey.Sandbox,
			keys.CreateParams{Kind: apikey.Restricted}, "scopes", "at least one scope"},
		{"restricted with unknown scope lists valid ones", f.orgA, apikey.Sandbox,
			keys.CreateParams{Kind: apikey.Restricted, Scopes: []string{"customers:read", "customers:delete"}},
			"scopes", `"customers:delete". Valid scopes: customers:read, customers:write`},
		{"secret with scopes", f.orgA, apikey.Sandbox,
			keys.CreateParams{Kind: apikey.Secret, Scopes: []string{"customers:read"}}, "scopes", "only restricted keys"},
		{"unknown kind", f.orgA, apikey.Sandbox, keys.CreateParams{Kind: "public"}, "kind", "Unknown key kind"},
		{"unknown environment", f.orgA, "production", keys.CreateParams{Kind: apikey.Secret}, "environment", "sandbox or live"},
		{"expiry in the past", f.orgA, apikey.Sandbox,
			keys.CreateParams{Kind: apikey.Secret, ExpiresAt: &past}, "expires_at", "future"},
		{"name too long", f.orgA, apikey.Sandbox,
			keys.CreateParams{Kind: apikey.Secret, Name: strings.Repeat("n", 101)}, "name", "at most"},
		{"NUL in the name", f.orgA, apikey.Sandbox, keys.CreateParams{Kind: apikey.Secret, Name: "ci\x00"}, "name", "NUL"},
		{"name not UTF-8", f.orgA, apikey.Sandbox, keys.CreateParams{Kind: apikey.Secret, Name: "ci\xff"}, "name", "UTF-8"},
		{"unknown organisation", "org_nope", apikey.Sandbox, keys.CreateParams{Kind: apikey.Secret}, "", "No such organization"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.svc.Create(context.Background(), cli, tc.org, tc.env, tc.params)
			ae := apierror.From(err)
			if err == nil || ae.Status == 500 {
				t.Fatalf("err = %v, want a validation error", err)
			}
			if tc.param == "" {
				if !errors.Is(err, keys.ErrOrgNotFound) || ae.Status != 404 {
					t.Fatalf("err = %v, want organization not found", err)
				}
			} else if ae.Param != tc.param || ae.Status != 400 {
				t.Fatalf("err = %+v, want 400 on %s", ae, tc.param)
			}
			if !strings.Contains(ae.Message, tc.message) {
				t.Errorf("message %q lacks %q", ae.Message, tc.message)
			}
		})
	}
	var n int
	if err := f.db.QueryRow(context.Background(), `SELECT count(*) FROM api_keys`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d keys stored after refused creates (%v)", n, err)
	}
	// The limit counts characters, as its message says, not bytes.
	if k := f.create(t, f.orgA, apikey.Sandbox, keys.CreateParams{Kind: apikey.Secret, Name: strings.Repeat("é", 100)}); k.Name != strings.Repeat("é", 100) {
		t.Errorf("name = %q", k.Name)
	}
}

func TestListIsScopedAndNewestFirst(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	var sandboxA []string
	for i := 0; i < 3; i++ {
		f.now = t0.Add(time.Duration(i) * time.Minute)
		sandboxA = append(sandboxA, f.create(t, f.orgA, apikey.Sandbox, keys.CreateParams{}).ID)
	}
	liveA := f.create(t, f.orgA, apikey.Live, keys.CreateParams{}).ID
	sandboxB := f.create(t, f.orgB, apikey.Sandbox, keys.CreateParams{}).ID

	for _, tc := range []struct {
		name string
		org  string
		env  apikey.Environment
		want []string
	}{
		{"org A sandbox, newest first", f.orgA, apikey.Sandbox, []string{sandboxA[2], sandboxA[1], sandboxA[0]}},
		{"org A live", f.orgA, apikey.Live, []string{liveA}},
		{"org B sandbox", f.orgB, apikey.Sandbox, []string{sandboxB}},
		{"org B live is empty", f.orgB, apikey.Live, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ks, err := f.svc.List(ctx, tc.org, tc.env)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, k := range ks {
				got = append(got, k.ID)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("ids = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRoll(t *testing.T) {
	for _, tc := range []struct {
		name        string
		grace       time.Duration
		existingExp *time.Duration // expiry already set on the old key, relative to t0
		wantExp     time.Time
		wantStatus  string
	}{
		{"default grace", keys.DefaultRollGrace, nil, t0.Add(24 * time.Hour), keys.StatusActive},
		{"custom duration", 90 * time.Minute, nil, t0.Add(90 * time.Minute), keys.StatusActive},
		{"now", 0, nil, t0, keys.StatusExpired},
		{"earlier expiry is kept", 24 * time.Hour, ptr(time.Hour), t0.Add(time.Hour), keys.StatusActive},
		{"later expiry is shortened", time.Hour, ptr(48 * time.Hour), t0.Add(time.Hour), keys.StatusActive},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t)
			ctx := context.Background()
			p := keys.CreateParams{Kind: apikey.Restricted, Name: "ci", Scopes: []string{"customers:read", "events:write"},
				IPAllowlist: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
			if tc.existingExp != nil {
				e := t0.Add(*tc.existingExp)
				p.ExpiresAt = &e
			}
			f.now = t0.Add(-time.Hour)
			old := f.create(t, f.orgA, apikey.Live, p)
			f.now = t0

			r, err := f.svc.Roll(ctx, cli, f.orgA, apikey.Live, old.ID, tc.grace)
			if err != nil {
				t.Fatalf("Roll: %v", err)
			}
			// The old key's expiry is exact: the injected clock plus grace.
			if r.Old.ExpiresAt == nil || !r.Old.ExpiresAt.Equal(tc.wantExp) {
				t.Fatalf("old expires_at = %v, want %v", r.Old.ExpiresAt, tc.wantExp)
			}
			if got := r.Old.Status(t0); got != tc.wantStatus {
				t.Errorf("old status at roll time = %s, want %s", got, tc.wantStatus)
			}
			if r.Old.Status(tc.wantExp) != keys.StatusExpired {
				t.Error("old key still active at its expiry")
			}
			if r.Old.RolledTo == nil || *r.Old.RolledTo != r.New.ID {
				t.Errorf("rolled_to = %v, want %s", r.Old.RolledTo, r.New.ID)
			}
			// The new key is a like-for-like replacement, expiring when
			// the old one was set to before the roll.
			n := r.New
			f.secrets = append(f.secrets, n.Secret)
			if _, err := apikey.Parse(n.Secret); err != nil || !strings.HasPrefix(n.Secret, "rk_live_") || n.Secret == old.Secret {
				t.Fatalf("new secret %q: %v", n.Secret, err)
			}
			if n.OrganizationID != f.orgA || n.Environment != apikey.Live || n.Kind != apikey.Restricted || n.Name != "ci" ||
				!slices.Equal(n.Scopes, old.Scopes) || !slices.Equal(n.IPAllowlist, old.IPAllowlist) ||
				(n.ExpiresAt == nil) != (old.ExpiresAt == nil) || (n.ExpiresAt != nil && !n.ExpiresAt.Equal(*old.ExpiresAt)) {
				t.Errorf("new key %+v does not match old %+v", n.Key, old.Key)
			}
			// Gateways holding the old key in cache are told to evict it.
			if got := f.nextNotification(t); got != hashHex(old.Secret) {
				t.Errorf("notification payload = %q, want hash of the old key", got)
			}
			f.expectQuiet(t)

			oldAudit := f.auditFor(t, f.orgA, old.ID)
			if len(oldAudit) != 2 || oldAudit[0].Action != "api_key.rolled" || oldAudit[1].Action != "api_key.created" {
				t.Fatalf("old key audit = %+v", oldAudit)
			}
			d := oldAudit[0].Data
			if d["rolled_to"] != n.ID || d["prefix"] != old.Prefix || d["last4"] != old.Last4 || d["new_last4"] != n.Last4 {
				t.Errorf("rolled audit data = %v", d)
			}
			if ch, _ := d["expires_at"].(map[string]any); ch == nil || ch["to"] != float64(tc.wantExp.Unix()) {
				t.Errorf("rolled audit expires_at = %v", d["expires_at"])
			}
			newAudit := f.auditFor(t, f.orgA, n.ID)
			if len(newAudit) != 1 || newAudit[0].Action != "api_key.created" || newAudit[0].Data["rolled_from"] != old.ID {
				t.Errorf("new key audit = %+v", newAudit)
			}
			assertNoSecretsInAudit(t, f)
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestRollRefusals(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	rolled := f.create(t, f.orgA, apikey.Sandbox, keys.CreateParams{})
	if _, err := f.svc.Roll(ctx, cli, f.orgA, apikey.Sandbox, rolled.ID, time.Hour); err != nil {
		t.Fatal(err)
	}
	revoked := f.create(t, f.orgA, apikey.Sandbox, keys.CreateParams{})
	if _, err := f.svc.Revoke(ctx, cli, f.orgA, apikey.Sandbox, revoked.ID); err != nil {
		t.Fatal(err)
	}
	live := f.create(t, f.orgA, apikey.Live, keys.CreateParams{})
	expired := f.create(t, f.orgA, apikey.Sandbox, keys.CreateParams{ExpiresAt: ptr(f.now.Add(time.Minute))})
	f.nextNotification(t)
	f.nextNotification(t)
	f.now = f.now.Add(2 * time.Minute)

	for _, tc := range []struct {
		name  string
		env   apikey.Environment
		id    string
		grace time.Duration
		want  error // nil: any client error
	}{
		{"already rolled", apikey.Sandbox, rolled.ID, time.Hour, keys.ErrAlreadyRolled},
		{"revoked", apikey.Sandbox, revoked.ID, time.Hour, keys.ErrRevoked},
		{"expired", apikey.Sandbox, expired.ID, time.Hour, keys.ErrExpired},
		{"other environment", apikey.Sandbox, live.ID, time.Hour, keys.ErrNotFound},
		{"negative grace", apikey.Live, live.ID, -time.Hour, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.svc.Roll(ctx, cli, f.orgA, tc.env, tc.id, tc.grace)
			if err == nil {
				t.Fatal("roll succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if apierror.From(err).Status >= 500 {
				t.Fatalf("err = %v is not a client error", err)
			}
		})
	}
	f.expectQuiet(t)
}

// Rolling a leaked temporary key must not make it permanent.
func TestRollKeepsATemporaryKeyTemporary(t *testing.T) {
	f := setup(t)
	expires := f.now.Add(time.Hour)
	k := f.create(t, f.orgA, apikey.Sandbox, keys.CreateParams{ExpiresAt: &expires})
	r, err := f.svc.Roll(context.Background(), cli, f.orgA, apikey.Sandbox, k.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if r.New.ExpiresAt == nil || !r.New.ExpiresAt.Equal(expires) {
		t.Fatalf("the replacement expires at %v, want %v like the key it replaces", r.New.ExpiresAt, expires)
	}
	if !r.Old.ExpiresAt.Equal(f.now) {
		t.Fatalf("the rolled key expires at %v, want now (%v)", r.Old.ExpiresAt, f.now)
	}
}

// A key's own limits (a per-key plan set with `controlplane limits set
// --key`) are the key's, not its secret's: the replacement keeps them.
func TestRollKeepsTheKeysLimitOverrides(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	k := f.create(t, f.orgA, apikey.Live, keys.CreateParams{})
	if _, err := f.db.Exec(ctx, `INSERT INTO limit_overrides (organization_id, livemode, api_key_id, policy, quota, window_seconds, burst)
		VALUES ($1, true, $2, 'per-key', 500, 1, 1000), ($1, true, '', 'per-org', 2000, 1, NULL)`, f.orgA, k.ID); err != nil {
		t.Fatal(err)
	}
	r, err := f.svc.Roll(ctx, cli, f.orgA, apikey.Live, k.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var quota, burst int64
	err = f.db.QueryRow(ctx, `SELECT quota, burst FROM limit_overrides
		WHERE organization_id = $1 AND livemode AND api_key_id = $2 AND policy = 'per-key'`, f.orgA, r.New.ID).Scan(&quota, &burst)
	if err != nil || quota != 500 || burst != 1000 {
		t.Fatalf("the replacement's per-key override: quota %d burst %d (%v), want 500 and 1000", quota, burst, err)
	}
	// The audit trail says where the new key's limits came from.
	var created *audit.Entry
	for _, e := range f.auditFor(t, f.orgA, r.New.ID) {
		if e.Action == "api_key.created" {
			created = &e
		}
	}
	if created == nil {
		t.Fatal("no api_key.created entry for the replacement")
	}
	copied, _ := created.Data["limit_overrides"].([]any)
	if len(copied) != 1 || copied[0].(map[string]any)["policy"] != "per-key" || copied[0].(map[string]any)["quota"] != float64(500) {
		t.Errorf("api_key.created data = %v, want the copied per-key override", created.Data)
	}
}

// The gateway enforces overrides from Redis: the replacement's copied
// overrides must be there when Roll returns, not a minute later at the next
// Sync (meanwhile the new key ran on the default limits).
func TestRollMirrorsTheCopiedOverridesIntoRedis(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	rdb, prefix := testenv.Redis(t)
	svc := keys.New(f.db, func() time.Time { return f.now }).WithLimits(limits.New(f.db, rdb, prefix))
	k := f.create(t, f.orgA, apikey.Live, keys.CreateParams{})
	if _, err := f.db.Exec(ctx, `INSERT INTO limit_overrides (organization_id, livemode, api_key_id, policy, quota, window_seconds, burst)
		VALUES ($1, true, $2, 'per-key', 500, 1, 1000)`, f.orgA, k.ID); err != nil {
		t.Fatal(err)
	}
	r, err := svc.Roll(ctx, cli, f.orgA, apikey.Live, k.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	got, err := rdb.HGet(ctx, keyspace.Overrides(prefix, f.orgA), keyspace.Field(keyspace.Env(true), "per-key", r.New.ID)).Result()
	if err != nil || got != "500 1 1000" {
		t.Fatalf("the replacement's per-key override in Redis: %q (%v), want \"500 1 1000\"", got, err)
	}
	if ok, err := rdb.SIsMember(ctx, keyspace.Index(prefix), f.orgA).Result(); err != nil || !ok {
		t.Fatalf("organisation not in the overrides index: %v %v", ok, err)
	}
}

func TestRevoke(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	k := f.create(t, f.orgA, apikey.Sandbox, keys.CreateParams{})
	f.now = t0.Add(time.Hour)

	got, err := f.svc.Revoke(ctx, cli, f.orgA, apikey.Sandbox, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.RevokedAt == nil || !got.RevokedAt.Equal(f.now) || got.Status(f.now) != keys.StatusRevoked {
		t.Fatalf("revoked_at = %v, status %s", got.RevokedAt, got.Status(f.now))
	}
	if p := f.nextNotification(t); p != hashHex(k.Secret) {
		t.Fatalf("payload = %q", p)
	}
	entries := f.auditFor(t, f.orgA, k.ID)
	if len(entries) != 2 || entries[0].Action != "api_key.revoked" || entries[0].Data["last4"] != k.Last4 {
		t.Fatalf("audit = %+v", entries)
	}
	// Revoking twice is refused and changes nothing.
	if _, err := f.svc.Revoke(ctx, cli, f.orgA, apikey.Sandbox, k.ID); !errors.Is(err, keys.ErrRevoked) {
		t.Fatalf("second revoke: %v", err)
	}
	f.expectQuiet(t)
	if n := len(f.auditFor(t, f.orgA, k.ID)); n != 2 {
		t.Fatalf("%d audit entries after refused revoke", n)
	}
}

func TestSetExpiryAndAllowlist(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	k := f.create(t, f.orgA, apikey.Live, keys.CreateParams{})
	in := t0.Add(7 * 24 * time.Hour)
	past := t0.Add(-time.Hour)
	for _, tc := range []struct {
		name   string
		change func() (keys.Key, error)
		check  func(t *testing.T, k keys.Key)
		field  string
	}{
		{"set expiry", func() (keys.Key, error) { return f.svc.SetExpiry(ctx, cli, f.orgA, apikey.Live, k.ID, &in) },
			func(t *testing.T, k keys.Key) {
				if k.ExpiresAt == nil || !k.ExpiresAt.Equal(in) {
					t.Errorf("expires_at = %v", k.ExpiresAt)
				}
			}, "expires_at"},
		{"clear expiry", func() (keys.Key, error) { return f.svc.SetExpiry(ctx, cli, f.orgA, apikey.Live, k.ID, nil) },
			func(t *testing.T, k keys.Key) {
				if k.ExpiresAt != nil {
					t.Errorf("expires_at = %v", k.ExpiresAt)
				}
			}, "expires_at"},
		{"expiry in the past expires now", func() (keys.Key, error) { return f.svc.SetExpiry(ctx, cli, f.orgA, apikey.Live, k.ID, &past) },
			func(t *testing.T, k keys.Key) {
				if k.ExpiresAt == nil || !k.ExpiresAt.Equal(f.now) || k.Status(f.now) != keys.StatusExpired {
					t.Errorf("expires_at = %v", k.ExpiresAt)
				}
			}, "expires_at"},
		{"set allowlist", func() (keys.Key, error) {
			return f.svc.SetIPAllowlist(ctx, cli, f.orgA, apikey.Live, k.ID, []netip.Prefix{netip.MustParsePrefix("198.51.100.7/24")})
		}, func(t *testing.T, k keys.Key) {
			if !slices.Equal(k.IPAllowlist, []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}) {
				t.Errorf("allowlist = %v", k.IPAllowlist)
			}
		}, "ip_allowlist"},
		{"clear allowlist", func() (keys.Key, error) { return f.svc.SetIPAllowlist(ctx, cli, f.orgA, apikey.Live, k.ID, nil) },
			func(t *testing.T, k keys.Key) {
				if len(k.IPAllowlist) != 0 {
					t.Errorf("allowlist = %v", k.IPAllowlist)
				}
			}, "ip_allowlist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Audit entries sort by time; step the clock so this change's
			// entry is the newest.
			f.now = f.now.Add(time.Second)
			got, err := tc.change()
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, got)
			if p := f.nextNotification(t); p != hashHex(k.Secret) {
				t.Fatalf("payload = %q", p)
			}
			e := f.auditFor(t, f.orgA, k.ID)[0]
			if e.Action != "api_key.updated" || e.Data[tc.field] == nil {
				t.Fatalf("audit = %+v", e)
			}
		})
	}
}

// A key that stopped working, or was replaced, stays that way: changing
// the expiry must not revive a leaked secret.
func TestSetExpiryNeverRevivesAKey(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	rolled := f.create(t, f.orgA, apikey.Live, keys.CreateParams{})
	r, err := f.svc.Roll(ctx, cli, f.orgA, apikey.Live, rolled.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	expired := f.create(t, f.orgA, apikey.Live, keys.CreateParams{ExpiresAt: ptr(f.now.Add(time.Minute))})
	f.nextNotification(t) // the roll's
	f.now = f.now.Add(2 * time.Minute)
	later := f.now.Add(24 * time.Hour)
	for _, tc := range []struct {
		name string
		id   string
		at   *time.Time
		want error
	}{
		{"expired key given a later expiry", expired.ID, &later, keys.ErrExpired},
		{"expired key's expiry removed", expired.ID, nil, keys.ErrExpired},
		{"rolled key's grace postponed", rolled.ID, &later, keys.ErrAlreadyRolled},
		{"rolled key's expiry removed", rolled.ID, nil, keys.ErrAlreadyRolled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.svc.SetExpiry(ctx, cli, f.orgA, apikey.Live, tc.id, tc.at)
			if !errors.Is(err, tc.want) || apierror.From(err).Status != 400 {
				t.Fatalf("err = %v, want %v as a 400", err, tc.want)
			}
		})
	}
	f.expectQuiet(t)

	// Ending a rolled key's grace early is what an operator does after a
	// leak, and stays allowed.
	soon := f.now.Add(time.Minute)
	got, err := f.svc.SetExpiry(ctx, cli, f.orgA, apikey.Live, rolled.ID, &soon)
	if err != nil {
		t.Fatal(err)
	}
	if !got.ExpiresAt.Equal(soon) || *got.RolledTo != r.New.ID {
		t.Fatalf("rolled key after bringing its expiry forward: expires %v, rolled to %v", got.ExpiresAt, *got.RolledTo)
	}
	f.nextNotification(t)
}

func TestTenantIsolation(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	k := f.create(t, f.orgA, apikey.Sandbox, keys.CreateParams{})
	at := t0.Add(time.Hour)
	for _, tc := range []struct {
		name string
		org  string
		env  apikey.Environment
		call func(org string, env apikey.Environment) error
	}{
		{"org B get", f.orgB, apikey.Sandbox, func(org string, env apikey.Environment) error {
			_, err := f.svc.Get(ctx, org, env, k.ID)
			return err
		}},
		{"org B roll", f.orgB, apikey.Sandbox, func(org string, env apikey.Environment) error {
			_, err := f.svc.Roll(ctx, cli, org, env, k.ID, 0)
			return err
		}},
		{"org B revoke", f.orgB, apikey.Sandbox, func(org string, env apikey.Environment) error {
			_, err := f.svc.Revoke(ctx, cli, org, env, k.ID)
			return err
		}},
		{"org B set expiry", f.orgB, apikey.Sandbox, func(org string, env apikey.Environment) error {
			_, err := f.svc.SetExpiry(ctx, cli, org, env, k.ID, &at)
			return err
		}},
		{"org B set allowlist", f.orgB, apikey.Sandbox, func(org string, env apikey.Environment) error {
			_, err := f.svc.SetIPAllowlist(ctx, cli, org, env, k.ID, nil)
			return err
		}},
		{"org A live revoke of a sandbox key", f.orgA, apikey.Live, func(org string, env apikey.Environment) error {
			_, err := f.svc.Revoke(ctx, cli, org, env, k.ID)
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(tc.org, tc.env)
			if !errors.Is(err, keys.ErrNotFound) {
				t.Fatalf("err = %v, want not found", err)
			}
			if ae := apierror.From(err); ae.Status != 404 || ae.Code != "resource_missing" {
				t.Fatalf("error object = %+v", ae)
			}
		})
	}
	// Org A's key is untouched, nobody was told to evict it, and org B's
	// audit trail saw nothing.
	got, err := f.svc.Get(ctx, f.orgA, apikey.Sandbox, k.ID)
	if err != nil || got.RevokedAt != nil || got.ExpiresAt != nil || got.RolledTo != nil {
		t.Fatalf("key changed: %+v, %v", got, err)
	}
	f.expectQuiet(t)
	if p, _ := audit.NewLog(f.db).List(ctx, f.orgB, audit.Filter{}); len(p.Data) != 0 {
		t.Fatalf("org B audit = %+v", p.Data)
	}
}

// TestNotifyOnlyOnCommit runs the service inside an outer transaction (the
// service accepts a pgx.Tx as its database) to show that gateways hear of a
// change when it commits, and never of one that rolls back.
func TestNotifyOnlyOnCommit(t *testing.T) {
	for _, tc := range []struct {
		name   string
		commit bool
	}{
		{"commit delivers after the commit", true},
		{"rollback delivers nothing", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t)
			ctx := context.Background()
			k := f.create(t, f.orgA, apikey.Sandbox, keys.CreateParams{})
			tx, err := f.db.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			if _, err := keys.New(tx, func() time.Time { return t0 }).Revoke(ctx, cli, f.orgA, apikey.Sandbox, k.ID); err != nil {
				t.Fatal(err)
			}
			// Before the commit: the sentinel, sent later but committed
			// first, is the next thing the listener hears.
			f.mark(t, "before-commit")
			if got := f.nextNotification(t); got != "before-commit" {
				t.Fatalf("heard %q before the commit", got)
			}
			if tc.commit {
				if err := tx.Commit(ctx); err != nil {
					t.Fatal(err)
				}
				if got := f.nextNotification(t); got != hashHex(k.Secret) {
					t.Fatalf("after commit heard %q", got)
				}
			} else if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			f.expectQuiet(t)
		})
	}
}

func TestParseIPAllowlist(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want []string
		bad  bool
	}{
		{"single addresses", "10.0.0.1, 2001:db8::5", []string{"10.0.0.1/32", "2001:db8::5/128"}, false},
		{"networks are masked and deduplicated", "192.168.1.7/24,192.168.1.0/24", []string{"192.168.1.0/24"}, false},
		{"empty items ignored", ",10.0.0.0/8,", []string{"10.0.0.0/8"}, false},
		{"garbage", "10.0.0.0/8,example.com", nil, true},
		{"bad mask", "10.0.0.0/33", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := keys.ParseIPAllowlist(tc.in)
			if tc.bad {
				if ae := apierror.From(err); err == nil || ae.Param != "ip_allowlist" {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var s []string
			for _, p := range got {
				s = append(s, p.String())
			}
			if !slices.Equal(s, tc.want) {
				t.Fatalf("got %v, want %v", s, tc.want)
			}
		})
	}
}
