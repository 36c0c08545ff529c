package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/caddymodule/ratelimit/keyspace"
	"github.com/gatehouse/gatehouse/controlplane/accounts"
	"github.com/gatehouse/gatehouse/controlplane/cli"
	"github.com/gatehouse/gatehouse/internal/apikey"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/secretbox"
	"github.com/gatehouse/gatehouse/internal/testenv"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

type result struct {
	code           int
	stdout, stderr string
}

func run(args ...string) result {
	var out, errOut bytes.Buffer
	code := cli.Run(args, &out, &errOut)
	return result{code, out.String(), errOut.String()}
}

// failingWriter is standard output that cannot be written.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// mustJSON runs a --json command that must succeed and decodes its output.
func mustJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	r := run(args...)
	if r.code != 0 {
		t.Fatalf("%v: exit %d: %s", args, r.code, r.stderr)
	}
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		t.Fatalf("%v printed no single JSON object: %v\n%s", args, err, r.stdout)
	}
}

type keyOut struct {
	ID          string   `json:"id"`
	Object      string   `json:"object"`
	Key         string   `json:"key"`
	Environment string   `json:"environment"`
	Kind        string   `json:"kind"`
	Prefix      string   `json:"prefix"`
	Last4       string   `json:"last4"`
	Scopes      []string `json:"scopes"`
	Status      string   `json:"status"`
	ExpiresAt   *int64   `json:"expires_at"`
	RevokedAt   *int64   `json:"revoked_at"`
	RolledTo    *string  `json:"rolled_to"`
	Created     int64    `json:"created"`
	RolledFrom  *keyOut  `json:"rolled_from"`
}

func TestEndToEnd(t *testing.T) {
	db, dsn := testenv.Pool(t)
	t.Setenv("DATABASE_URL", dsn)
	ctx := context.Background()

	var org struct {
		ID, Object, Name string
		Created          int64
	}
	mustJSON(t, &org, "orgs", "create", "--name", "Acme", "--json")
	if !ids.Valid(org.ID, ids.Org) || org.Object != "organization" || org.Name != "Acme" || org.Created == 0 {
		t.Fatalf("org = %+v", org)
	}
	// Without --json, the id alone, for shell scripts.
	if r := run("orgs", "create", "--name", "Beta"); r.code != 0 || !ids.Valid(strings.TrimSpace(r.stdout), ids.Org) {
		t.Fatalf("orgs create = %+v", r)
	}

	var user struct {
		ID, Email, Organization, Role string
		NewUser                       bool `json:"new_user"`
	}
	mustJSON(t, &user, "users", "create", "--org", org.ID, "--email", "owner@example.com",
		"--password", "s3cret-passphrase", "--role", "owner", "--json")
	if !ids.Valid(user.ID, ids.User) || user.Role != "owner" || !user.NewUser || user.Organization != org.ID {
		t.Fatalf("user = %+v", user)
	}
	var hash string
	if err := db.QueryRow(ctx, `SELECT password_hash FROM users WHERE id = $1`, user.ID).Scan(&hash); err != nil {
		t.Fatal(err)
	}
	if ok, err := accounts.VerifyPassword("s3cret-passphrase", hash); !strings.HasPrefix(hash, "$argon2id$") || !ok || err != nil {
		t.Fatalf("password hash %q does not verify (%v)", hash, err)
	}
	if r := run("users", "list", "--org", org.ID); r.code != 0 || !strings.Contains(r.stdout, "owner@example.com") {
		t.Fatalf("users list = %+v", r)
	}

	var sk keyOut
	mustJSON(t, &sk, "keys", "create", "--org", org.ID, "--env", "sandbox", "--json")
	if _, err := apikey.Parse(sk.Key); err != nil || !strings.HasPrefix(sk.Key, "sk_test_") {
		t.Fatalf("key %q: %v", sk.Key, err)
	}
	if sk.Object != "api_key" || sk.Kind != "secret" || sk.Environment != "sandbox" || sk.Prefix != apikey.DisplayPrefix(sk.Key) ||
		sk.Last4 != apikey.Last4(sk.Key) || sk.ExpiresAt != nil || !ids.Valid(sk.ID, ids.Key) {
		t.Fatalf("created key = %+v", sk)
	}
	// A secret key has every scope, as the gateway tells upstreams: not
	// an empty list, which reads as none.
	if strings.Join(sk.Scopes, ",") != "*" {
		t.Fatalf("secret key scopes = %q, want [\"*\"]", sk.Scopes)
	}
	var rk keyOut
	before := time.Now().Unix()
	mustJSON(t, &rk, "keys", "create", "--org", org.ID, "--env", "live", "--restricted", "--scopes", "customers:read,events:write",
		"--expires-in", "30d", "--name", "ci", "--ip-allowlist", "10.0.0.0/8", "--json")
	after := time.Now().Unix()
	if !strings.HasPrefix(rk.Key, "rk_live_") || rk.Kind != "restricted" || strings.Join(rk.Scopes, ",") != "customers:read,events:write" ||
		rk.ExpiresAt == nil || *rk.ExpiresAt < before+30*86400 || *rk.ExpiresAt > after+30*86400 {
		t.Fatalf("restricted key = %+v", rk)
	}

	// Listings show prefix and last4 but never a key.
	for _, args := range [][]string{
		{"keys", "list", "--org", org.ID},
		{"keys", "list", "--org", org.ID, "--json"},
		{"keys", "list", "--org", org.ID, "--env", "live"},
	} {
		r := run(args...)
		if r.code != 0 {
			t.Fatalf("%v: %+v", args, r)
		}
		if strings.Contains(r.stdout, sk.Key) || strings.Contains(r.stdout, rk.Key) {
			t.Fatalf("%v shows a full key:\n%s", args, r.stdout)
		}
		if !strings.Contains(r.stdout, rk.Prefix) || !strings.Contains(r.stdout, rk.Last4) {
			t.Fatalf("%v lacks prefix/last4 of %s:\n%s", args, rk.ID, r.stdout)
		}
		if args[len(args)-1] == "live" && strings.Contains(r.stdout, sk.ID) {
			t.Fatalf("--env live lists a sandbox key:\n%s", r.stdout)
		}
	}

	var rolled keyOut
	before = time.Now().Unix()
	mustJSON(t, &rolled, "keys", "roll", "--id", sk.ID, "--expires-in", "1h", "--json")
	after = time.Now().Unix()
	if rolled.Key == "" || rolled.Key == sk.Key || rolled.ID == sk.ID || rolled.Kind != "secret" || rolled.Environment != "sandbox" {
		t.Fatalf("rolled key = %+v", rolled)
	}
	old := rolled.RolledFrom
	if old == nil || old.ID != sk.ID || old.Key != "" || old.RolledTo == nil || *old.RolledTo != rolled.ID ||
		old.ExpiresAt == nil || *old.ExpiresAt < before+3600 || *old.ExpiresAt > after+3600 {
		t.Fatalf("old key after roll = %+v", old)
	}

	var revoked keyOut
	mustJSON(t, &revoked, "keys", "revoke", "--id", rolled.ID, "--json")
	if revoked.RevokedAt == nil || revoked.Status != "revoked" || revoked.Key != "" {
		t.Fatalf("revoked key = %+v", revoked)
	}
	r := run("keys", "list", "--org", org.ID, "--env", "sandbox")
	if !strings.Contains(r.stdout, "revoked") || strings.Contains(r.stdout, rolled.Key) {
		t.Fatalf("list after revoke:\n%s", r.stdout)
	}

	var upd keyOut
	mustJSON(t, &upd, "keys", "update", "--id", rk.ID, "--expires-in", "never", "--ip-allowlist", "none", "--json")
	if upd.ExpiresAt != nil {
		t.Fatalf("updated key = %+v", upd)
	}

	// Every change is in the audit log, credited to the CLI.
	var n int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM audit_logs WHERE organization_id = $1 AND actor_type = 'cli'
		AND action IN ('api_key.created', 'api_key.rolled', 'api_key.revoked', 'api_key.updated')`, org.ID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 7 { // 2 creates, roll (created + rolled), revoke, update (expiry + allowlist)
		t.Fatalf("%d key audit entries, want 7", n)
	}

	// Failures after parsing: exit 1 and one line on stderr.
	for _, tc := range []struct {
		name string
		args []string
		msg  string
	}{
		{"revoke twice", []string{"keys", "revoke", "--id", rolled.ID}, "already revoked"},
		{"roll a rolled key", []string{"keys", "roll", "--id", sk.ID}, "already rolled"},
		{"unknown key", []string{"keys", "revoke", "--id", "key_0000000000000000000000"}, "No such api_key"},
		{"key of another org", []string{"keys", "revoke", "--id", rk.ID, "--org", "org_other"}, "No such api_key"},
		{"unknown org", []string{"keys", "create", "--org", "org_nope", "--env", "live"}, "No such organization"},
		{"list unknown org", []string{"keys", "list", "--org", "org_nope"}, "No such organization"},
		{"limits list unknown org", []string{"limits", "list", "--org", "org_nope", "--env", "live"}, "No such organization"},
		{"limits list unknown org, json", []string{"limits", "list", "--org", "org_nope", "--env", "live", "--json"}, "No such organization"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(tc.args...)
			if r.code != 1 || !strings.Contains(r.stderr, tc.msg) || strings.Contains(r.stderr, "goroutine") {
				t.Fatalf("exit %d, stderr %q; want 1 and %q", r.code, r.stderr, tc.msg)
			}
		})
	}
	t.Run("usage errors", func(t *testing.T) { usageErrors(t, org.ID) })
}

func usageErrors(t *testing.T, org string) {
	for _, tc := range []struct {
		name string
		args []string
		msg  string
	}{
		{"no command", nil, "usage: controlplane"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"group without subcommand", []string{"keys"}, "missing subcommand"},
		{"unknown subcommand", []string{"keys", "delete"}, `unknown subcommand "delete"`},
		{"unknown subcommand names the others", []string{"master-key", "turn"}, "(one of rotate)"},
		{"unknown flag", []string{"keys", "create", "--org", org, "--env", "live", "--colour", "red"}, "flag provided but not defined: -colour"},
		{"missing --org", []string{"keys", "create", "--env", "live"}, "--org is required"},
		{"missing --env", []string{"keys", "create", "--org", org}, "--env is required"},
		{"bad --env", []string{"keys", "create", "--org", org, "--env", "production"}, "--env must be sandbox or live"},
		{"restricted without scopes", []string{"keys", "create", "--org", org, "--env", "live", "--restricted"}, "at least one scope"},
		{"unknown scope lists valid ones", []string{"keys", "create", "--org", org, "--env", "live", "--restricted", "--scopes", "customers:read,admin"},
			`--scopes: Unknown scope "admin". Valid scopes: customers:read`},
		{"scopes on a secret key", []string{"keys", "create", "--org", org, "--env", "live", "--scopes", "customers:read"}, "--scopes needs --restricted"},
		{"bad --expires-in", []string{"keys", "create", "--org", org, "--env", "live", "--expires-in", "soon"}, "--expires-in"},
		{"bad allowlist", []string{"keys", "create", "--org", org, "--env", "live", "--ip-allowlist", "10.0.0.0/99"}, "--ip-allowlist"},
		{"positional argument", []string{"keys", "list", "--org", org, "extra"}, `unexpected argument "extra"`},
		{"roll without --id", []string{"keys", "roll"}, "--id is required"},
		{"roll with bad --expires-in", []string{"keys", "roll", "--id", "key_x", "--expires-in", "later"}, "--expires-in"},
		{"update with nothing to change", []string{"keys", "update", "--id", "key_x"}, "nothing to change"},
		{"bad role", []string{"users", "create", "--org", org, "--email", "a@example.com", "--password", "long enough", "--role", "god"}, "--role"},
		{"bad email", []string{"users", "create", "--org", org, "--email", "not-an-email", "--password", "long enough", "--role", "viewer"}, "--email"},
		{"short password", []string{"users", "create", "--org", org, "--email", "a@example.com", "--password", "short", "--role", "viewer"}, "--password"},
		{"orgs create without name", []string{"orgs", "create"}, "--name is required"},
		{"bad policy name", []string{"limits", "set", "--org", org, "--env", "live", "--policy", "per:key", "--rate", "10/1s"}, "--policy: "},
		{"bad limit key id", []string{"limits", "set", "--org", org, "--env", "live", "--policy", "per-key", "--rate", "10/1s", "--key", "k1"}, "--key: "},
		{"migrate sideways", []string{"migrate", "sideways"}, "unknown direction"},
		{"body capture without --env", []string{"orgs", "body-capture", "--org", org}, "--env is required"},
		{"body capture set to maybe", []string{"orgs", "body-capture", "--org", org, "--env", "live", "--set", "maybe"}, "--set must be on or off"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(tc.args...)
			if r.code != 2 || !strings.Contains(r.stderr, tc.msg) {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", r.code, r.stderr, tc.msg)
			}
			if r.stdout != "" {
				t.Fatalf("usage error printed to stdout: %q", r.stdout)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"help command", []string{"help"}, "keys create --org ORG"},
		{"--help", []string{"--help"}, "Commands:"},
		{"subcommand -h", []string{"keys", "roll", "-h"}, "--expires-in"},
		// Every usage error says "Run 'controlplane keys -h' for usage.".
		{"group -h", []string{"keys", "-h"}, "keys revoke --id KEY"},
		{"group --help", []string{"limits", "--help"}, "limits delete --org ORG"},
		{"group -h, continuation lines", []string{"master-key", "-h"}, "MASTER_KEY_PREVIOUS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(tc.args...)
			if r.code != 0 || !strings.Contains(r.stdout, tc.want) {
				t.Fatalf("exit %d, stdout %q", r.code, r.stdout)
			}
		})
	}
	// --burst defaults to the rate's count, which its text says; the help
	// must not also claim a default of 0.
	if r := run("limits", "set", "-h"); strings.Contains(r.stdout, "(default 0)") {
		t.Fatalf("limits set -h claims a zero default: %q", r.stdout)
	}
}

func TestDatabaseUnreachable(t *testing.T) {
	t.Setenv("DATABASE_URL", "postgres://gatehouse@127.0.0.1:1/none?connect_timeout=2")
	r := run("orgs", "list")
	if r.code != 1 || !strings.Contains(r.stderr, "connecting to postgres") || strings.Contains(r.stderr, "goroutine") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
}

// Ctrl-C and SIGTERM (the context of RunContext) stop a command waiting on
// a database that accepted the connection and never answers (a frozen
// server, or one whose replies a firewall drops). migrate ignored them: it
// waited for the TCP connection to die, and `make run`, which runs it in
// the foreground, could only be killed with -9.
func TestCommandsStopWhileTheDatabaseHangs(t *testing.T) {
	for _, args := range [][]string{{"orgs", "list"}, {"migrate"}, {"migrate", "down"}} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		t.Setenv("DATABASE_URL", "postgres://gatehouse:gatehouse@"+ln.Addr().String()+"/gatehouse?sslmode=disable")
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan int, 1)
		go func() { done <- cli.RunContext(ctx, args, io.Discard, io.Discard) }()
		conn, err := ln.Accept() // the command now waits for the server's answer
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		select {
		case code := <-done:
			if code == 0 {
				t.Errorf("%v: exit 0 against a database that never answered", args)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%v: still waiting on the database 10 s after it was told to stop", args)
		}
		conn.Close()
	}
}

// A REDIS_URL with a password that does not parse (here an unencoded '/'
// in it) is reported without the password: net/url's error would quote the
// URL, and part of the password as its port.
func TestDatabaseURLErrorHidesThePassword(t *testing.T) {
	// The '/' after a valid port: pgx reads the rest of the password as the
	// database and names it in its connect error.
	t.Setenv("DATABASE_URL", "postgres://gatehouse:1234/hunter2secret@127.0.0.1:1/gatehouse")
	r := run("orgs", "list")
	if r.code != 1 || !strings.Contains(r.stderr, "DATABASE_URL") || strings.Contains(r.stderr, "hunter2") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestRedisURLErrorHidesThePassword(t *testing.T) {
	_, dsn := testenv.Pool(t)
	t.Setenv("DATABASE_URL", dsn)
	for _, u := range []string{
		"redis://:hunter2secret/x@127.0.0.1:6379/0",
		"redis://:1234/hunter2secret@127.0.0.1:6379", // the '/' after a valid port: the rest reads as the database
	} {
		t.Setenv("REDIS_URL", u)
		r := run("limits", "list", "--org", "org_none", "--env", "live")
		if r.code != 1 || !strings.Contains(r.stderr, "REDIS_URL") || strings.Contains(r.stderr, "hunter2") {
			t.Fatalf("%s: exit %d, stderr %q", u, r.code, r.stderr)
		}
	}
}

// The control plane's /v1 trusts identities signed with IDENTITY_SECRET and
// shares its listener with the dashboard: on the published development
// value anyone could sign for any organisation, so serve refuses to start.
func TestServeRefusesPublishedSecrets(t *testing.T) {
	t.Setenv("MASTER_KEY", "c2VydmUtdGVzdC1tYXN0ZXIta2V5LTMyLWJ5dGVzLi4=")
	for _, identity := range []string{"", config.DefaultIdentitySecret} {
		t.Setenv("IDENTITY_SECRET", identity)
		r := run("serve", "--addr", "127.0.0.1:0")
		if r.code != 2 || !strings.Contains(r.stderr, "IDENTITY_SECRET") {
			t.Fatalf("IDENTITY_SECRET=%q: exit %d, stderr %q", identity, r.code, r.stderr)
		}
	}
}

// Leaving a master key (here the published development one): with the new
// key in MASTER_KEY and the old in MASTER_KEY_PREVIOUS, rotate re-seals
// every webhook secret so that the new key alone opens them; a second run
// has nothing left to do.
func TestMasterKeyRotate(t *testing.T) {
	db, dsn := testenv.Pool(t)
	t.Setenv("DATABASE_URL", dsn)
	ctx := context.Background()
	oldKey, newKey := config.DefaultMasterKey, "cm90YXRpb24tdGVzdC1uZXctbWFzdGVyLWtleS0zMmI="
	old, _ := secretbox.New(oldKey)
	for _, q := range []string{
		`INSERT INTO organizations (id, name) VALUES ('org_R', 'R')`,
		`INSERT INTO webhook_endpoints (id, organization_id, livemode, url, enabled_events) VALUES ('we_R', 'org_R', false, 'https://example.com/h', '{*}')`,
	} {
		if _, err := db.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]string{}
	for i := range 3 {
		id := fmt.Sprintf("wesec_%d", i)
		want[id] = fmt.Sprintf("whsec_secret%d", i)
		if _, err := db.Exec(ctx, `INSERT INTO webhook_endpoint_secrets (id, endpoint_id, ciphertext) VALUES ($1, 'we_R', $2)`,
			id, old.Seal([]byte(want[id]), []byte(id))); err != nil {
			t.Fatal(err)
		}
	}

	t.Setenv("MASTER_KEY", newKey)
	t.Setenv("MASTER_KEY_PREVIOUS", "")
	if r := run("master-key", "rotate"); r.code != 2 || !strings.Contains(r.stderr, "MASTER_KEY_PREVIOUS") {
		t.Fatalf("without the previous key: exit %d, stderr %q", r.code, r.stderr)
	}
	t.Setenv("MASTER_KEY_PREVIOUS", oldKey)
	if r := run("master-key", "rotate"); r.code != 0 || !strings.Contains(r.stdout, "re-encrypted 3 of 3") {
		t.Fatalf("rotate: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	var again struct{ Resealed, Secrets int }
	mustJSON(t, &again, "master-key", "rotate", "--json")
	if again.Resealed != 0 || again.Secrets != 3 {
		t.Fatalf("second run = %+v, want nothing left to re-seal", again)
	}
	// A --json output that cannot be written is the command's failure, as
	// for every other command.
	var errOut bytes.Buffer
	if code := cli.Run([]string{"master-key", "rotate", "--json"}, failingWriter{}, &errOut); code != cli.ExitFailure ||
		!strings.HasPrefix(errOut.String(), "controlplane master-key rotate: ") || !strings.Contains(errOut.String(), "disk full") {
		t.Fatalf("unwritable --json output: exit %d, stderr %q", code, errOut.String())
	}
	fresh, _ := secretbox.New(newKey)
	for id, secret := range want {
		var ct []byte
		if err := db.QueryRow(ctx, `SELECT ciphertext FROM webhook_endpoint_secrets WHERE id = $1`, id).Scan(&ct); err != nil {
			t.Fatal(err)
		}
		if pt, err := fresh.Open(ct, []byte(id)); err != nil || string(pt) != secret {
			t.Errorf("%s under the new key alone: %q, %v", id, pt, err)
		}
		if _, err := old.Open(ct, []byte(id)); err == nil {
			t.Errorf("%s still opens with the old key", id)
		}
	}
}

// limitsOrg points the CLI at a fresh database and the shared Redis, and
// creates an organisation whose overrides leave Redis when the test ends
// (the CLI writes under the default key prefix).
func limitsOrg(t *testing.T) (org struct{ ID string }, rdb *redis.Client) {
	_, dsn := testenv.Pool(t)
	t.Setenv("DATABASE_URL", dsn)
	t.Setenv("REDIS_URL", testenv.RedisURL(t))
	mustJSON(t, &org, "orgs", "create", "--name", "Acme", "--json")
	rdb, _ = testenv.Redis(t)
	t.Cleanup(func() {
		rdb.SRem(context.Background(), keyspace.Index(keyspace.DefaultPrefix), org.ID)
		rdb.Del(context.Background(), keyspace.Overrides(keyspace.DefaultPrefix, org.ID))
	})
	return org, rdb
}

// Every command that writes data prints one JSON object with --json
// (DESIGN §3), limits delete included.
func TestLimitsDeleteJSON(t *testing.T) {
	org, _ := limitsOrg(t)
	var set struct{ Object, Policy string }
	mustJSON(t, &set, "limits", "set", "--org", org.ID, "--env", "live", "--policy", "per-key", "--rate", "500/1s", "--json")
	var gone struct {
		Object, Organization, Policy string
		Livemode, Deleted            bool
	}
	mustJSON(t, &gone, "limits", "delete", "--org", org.ID, "--env", "live", "--policy", "per-key", "--json")
	if gone.Object != "limit_override" || gone.Organization != org.ID || gone.Policy != "per-key" || !gone.Livemode || !gone.Deleted {
		t.Fatalf("limits delete --json = %+v", gone)
	}
}

// limits set warns of a policy name no running gateway has (a typo such as
// per_key for per-key is stored and never applies), and not of one a
// gateway publishes.
func TestLimitsSetWarnsOfANameNoGatewayHas(t *testing.T) {
	org, rdb := limitsOrg(t)
	ctx := context.Background()
	// A gateway's publication; others running on this Redis may add theirs.
	known := "per-key-" + testenv.Suffix()
	names := keyspace.PublishedNames(keyspace.DefaultPrefix)
	if err := rdb.HSet(ctx, names, known, time.Now().Unix()).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.HDel(ctx, names, known) })
	typo := "per_key-" + testenv.Suffix()
	r := run("limits", "set", "--org", org.ID, "--env", "live", "--policy", typo, "--rate", "5/1s")
	if r.code != 0 || !strings.Contains(r.stderr, `warning: no running gateway has a policy or quota named "`+typo+`"`) ||
		!strings.Contains(r.stderr, known) {
		t.Fatalf("limits set with a name no gateway has: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := run("limits", "set", "--org", org.ID, "--env", "live", "--policy", known, "--rate", "5/1s"); r.code != 0 || r.stderr != "" {
		t.Fatalf("limits set with a published name: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// An override saved before the control plane checked bounds is listed as
// not applied, with the reason, in text and JSON.
func TestLimitsListNamesOverridesNotApplied(t *testing.T) {
	pool, dsn := testenv.Pool(t)
	t.Setenv("DATABASE_URL", dsn)
	t.Setenv("REDIS_URL", testenv.RedisURL(t))
	var org struct{ ID string }
	mustJSON(t, &org, "orgs", "create", "--name", "Acme", "--json")
	if _, err := pool.Exec(context.Background(), `INSERT INTO limit_overrides
		(organization_id, livemode, policy, quota, window_seconds) VALUES
		($1, true, 'monthly', 9223372036854775807, 1), ($1, true, 'per-org', 100, 1)`, org.ID); err != nil {
		t.Fatal(err)
	}
	r := run("limits", "list", "--org", org.ID, "--env", "live")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 2 || !strings.Contains(lines[0], "monthly") ||
		!strings.Contains(lines[0], "NOT APPLIED (quota: 9223372036854775807 is over the most a limit can count") ||
		strings.Contains(lines[1], "NOT APPLIED") {
		t.Fatalf("limits list = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	var list struct {
		Data []struct {
			Policy  string
			Applied bool
		}
	}
	mustJSON(t, &list, "limits", "list", "--org", org.ID, "--env", "live", "--json")
	if len(list.Data) != 2 || list.Data[0].Policy != "monthly" || list.Data[0].Applied || !list.Data[1].Applied {
		t.Fatalf("limits list --json = %+v", list)
	}
}

// An allowlist that names no network is refused: taken as empty, it would
// open the key to any address ("none" is the way to say so).
func TestBlankIPAllowlistIsRefused(t *testing.T) {
	_, dsn := testenv.Pool(t)
	t.Setenv("DATABASE_URL", dsn)
	var org struct{ ID string }
	mustJSON(t, &org, "orgs", "create", "--name", "Acme", "--json")
	var k struct {
		ID          string
		IPAllowlist []string `json:"ip_allowlist"`
	}
	mustJSON(t, &k, "keys", "create", "--org", org.ID, "--env", "live", "--ip-allowlist", "10.0.0.0/8", "--json")
	for _, blank := range []string{"", " , ", ","} {
		if r := run("keys", "update", "--id", k.ID, "--ip-allowlist", blank, "--json"); r.code == 0 {
			t.Errorf("keys update --ip-allowlist %q: exit 0: %s", blank, r.stdout)
		}
		if r := run("keys", "create", "--org", org.ID, "--env", "live", "--ip-allowlist", blank, "--json"); r.code == 0 {
			t.Errorf("keys create --ip-allowlist %q: exit 0: %s", blank, r.stdout)
		}
	}
	if r := run("keys", "update", "--id", k.ID, "--expires-in", ""); r.code != cli.ExitUsage {
		t.Errorf("keys update --expires-in \"\": exit %d", r.code)
	}
	var list struct {
		Data []struct {
			ID          string
			IPAllowlist []string `json:"ip_allowlist"`
		}
	}
	mustJSON(t, &list, "keys", "list", "--org", org.ID, "--env", "live", "--json")
	if len(list.Data) != 1 || len(list.Data[0].IPAllowlist) != 1 || list.Data[0].IPAllowlist[0] != "10.0.0.0/8" {
		t.Fatalf("keys after the refusals: %+v", list.Data)
	}
}

// A value that is not UTF-8 (a mistyped id) is a usage error naming its
// flag, not Postgres' words.
func TestFlagsMustBeUTF8(t *testing.T) {
	_, dsn := testenv.Pool(t)
	t.Setenv("DATABASE_URL", dsn)
	for _, args := range [][]string{
		{"keys", "list", "--org", "org_\xff"},
		{"keys", "revoke", "--id", "key_\xff"},
		{"users", "list", "--org", "org_\xff"},
	} {
		r := run(args...)
		if r.code != cli.ExitUsage || strings.Contains(r.stderr, "SQLSTATE") || !strings.Contains(r.stderr, "not valid UTF-8") {
			t.Errorf("%v: exit %d: %q", args[:2], r.code, r.stderr)
		}
	}
}

// A name cannot forge a row of the CLI's tables or drive the terminal.
func TestNamesRefuseControlCharacters(t *testing.T) {
	_, dsn := testenv.Pool(t)
	t.Setenv("DATABASE_URL", dsn)
	if r := run("orgs", "create", "--name", "Evil\norg_FAKE  Acme\x1b]0;owned\x07"); r.code == 0 || !strings.Contains(r.stderr, "control characters") {
		t.Errorf("orgs create: exit %d: %q", r.code, r.stderr)
	}
	var org struct{ ID string }
	mustJSON(t, &org, "orgs", "create", "--name", "Acme", "--json")
	if r := run("keys", "create", "--org", org.ID, "--env", "sandbox", "--name", "ci\rkey"); r.code == 0 || !strings.Contains(r.stderr, "control characters") {
		t.Errorf("keys create: exit %d: %q", r.code, r.stderr)
	}
}

// Text output that cannot be written is a failure, as --json output is: a
// script must not take a created organisation's missing id for success.
func TestUnwritableTextOutputFails(t *testing.T) {
	_, dsn := testenv.Pool(t)
	t.Setenv("DATABASE_URL", dsn)
	var errOut bytes.Buffer
	if code := cli.Run([]string{"orgs", "create", "--name", "Lost"}, failingWriter{}, &errOut); code != cli.ExitFailure ||
		!strings.HasPrefix(errOut.String(), "controlplane orgs create: writing the output: disk full") {
		t.Fatalf("exit %d, stderr %q; want 1 and the reason", code, errOut.String())
	}
}

// Demoting the only owner is a refused change (exit 1), not a mistyped
// flag (exit 2).
func TestDemotingTheOnlyOwnerIsAFailure(t *testing.T) {
	_, dsn := testenv.Pool(t)
	t.Setenv("DATABASE_URL", dsn)
	var org struct{ ID string }
	mustJSON(t, &org, "orgs", "create", "--name", "Acme", "--json")
	if r := run("users", "create", "--org", org.ID, "--email", "o@example.com", "--password", "correct horse battery", "--role", "owner"); r.code != 0 {
		t.Fatalf("owner: %d %s", r.code, r.stderr)
	}
	r := run("users", "create", "--org", org.ID, "--email", "o@example.com", "--password", "correct horse battery", "--role", "viewer")
	if r.code != cli.ExitFailure || !strings.Contains(r.stderr, "only owner") {
		t.Fatalf("demoting the only owner: exit %d: %q", r.code, r.stderr)
	}
}

// --password-stdin keeps the password out of the process list.
func TestUsersCreatePasswordFromStdin(t *testing.T) {
	_, dsn := testenv.Pool(t)
	t.Setenv("DATABASE_URL", dsn)
	var org struct{ ID string }
	mustJSON(t, &org, "orgs", "create", "--name", "Acme", "--json")
	withStdin := func(input string, args ...string) result {
		t.Helper()
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.WriteString(input)
		_ = w.Close()
		old := os.Stdin
		os.Stdin = r
		defer func() { os.Stdin = old; _ = r.Close() }()
		return run(args...)
	}
	args := []string{"users", "create", "--org", org.ID, "--email", "s@example.com", "--role", "owner", "--password-stdin"}
	if r := withStdin("correct horse battery\n", args...); r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := accounts.New(pool, time.Now).Authenticate(context.Background(), "s@example.com", "correct horse battery"); err != nil {
		t.Fatalf("the password read from stdin does not sign in: %v", err)
	}
	if r := withStdin("", args...); r.code != cli.ExitUsage {
		t.Errorf("empty stdin: exit %d", r.code)
	}
	if r := withStdin("x\n", append(args, "--password", "y")...); r.code != cli.ExitUsage {
		t.Errorf("both: exit %d", r.code)
	}
	// An operator gives a user who forgot it a new password the same way.
	if r := withStdin("brand new password\n", "users", "set-password", "--email", "s@example.com", "--password-stdin"); r.code != 0 {
		t.Fatalf("set-password: exit %d: %s", r.code, r.stderr)
	}
	if _, err := accounts.New(pool, time.Now).Authenticate(context.Background(), "s@example.com", "brand new password"); err != nil {
		t.Fatalf("the password set from stdin does not sign in: %v", err)
	}
	if r := run("users", "set-password", "--email", "nobody@example.com", "--password", "long enough"); r.code == 0 || !strings.Contains(r.stderr, "No user has the email") {
		t.Errorf("unknown email: exit %d: %s", r.code, r.stderr)
	}
}
