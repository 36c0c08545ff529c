package limits

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/gatehouse/gatehouse/caddymodule/ratelimit/keyspace"
	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

var operator = audit.Actor{Type: audit.ActorCLI, ID: "alice"}

type fixture struct {
	svc    *Service
	pool   *pgxpool.Pool
	rdb    *redis.Client
	prefix string
}

func setup(t *testing.T) fixture {
	t.Helper()
	pool, _ := testenv.Pool(t)
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	for _, org := range []string{"org_a", "org_b"} {
		if _, err := pool.Exec(ctx, `INSERT INTO organizations (id, name) VALUES ($1, $1)`, org); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []struct{ id, org, env string }{
		{"key_live_a", "org_a", "live"}, {"key_test_a", "org_a", "sandbox"}, {"key_live_b", "org_b", "live"},
	} {
		if _, err := pool.Exec(ctx, `
			INSERT INTO api_keys (id, organization_id, environment, kind, prefix, key_hash, last4, created_by)
			VALUES ($1, $2, $3, 'secret', 'sk_x', $4, 'abcd', 'test')`, k.id, k.org, k.env, []byte(k.id)); err != nil {
			t.Fatal(err)
		}
	}
	return fixture{svc: New(pool, rdb, prefix), pool: pool, rdb: rdb, prefix: prefix}
}

// hash is the organisation's overrides as the gateway reads them.
func (f fixture) hash(t *testing.T, org string) map[string]string {
	t.Helper()
	m, err := f.rdb.HGetAll(context.Background(), keyspace.Overrides(f.prefix, org)).Result()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func ptr(n int64) *int64 { return &n }

func TestSetMirrorsIntoRedis(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	tests := []struct {
		name      string
		in        Override
		wantField string
		wantValue string
	}{
		{"organisation plan", Override{OrganizationID: "org_a", Livemode: true, Policy: "per-org", Quota: 5000, WindowSeconds: 1},
			"live:per-org", "5000 1 0"},
		{"per-key exception with burst", Override{OrganizationID: "org_a", Livemode: true, APIKeyID: "key_live_a", Policy: "per-key", Quota: 500, WindowSeconds: 1, Burst: ptr(1000)},
			"live:per-key:key_live_a", "500 1 1000"},
		{"sandbox quota", Override{OrganizationID: "org_a", Livemode: false, Policy: "monthly", Quota: 10000, WindowSeconds: 2592000},
			"sandbox:monthly", "10000 2592000 0"},
		{"replacing keeps one row", Override{OrganizationID: "org_a", Livemode: true, Policy: "per-org", Quota: 8000, WindowSeconds: 1, Burst: ptr(0)},
			"live:per-org", "8000 1 0"},
	}
	for _, tt := range tests {
		got, err := f.svc.Set(ctx, operator, tt.in)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got.UpdatedAt.IsZero() || got.Quota != tt.in.Quota {
			t.Errorf("%s: returned %+v", tt.name, got)
		}
		if v := f.hash(t, "org_a")[tt.wantField]; v != tt.wantValue {
			t.Errorf("%s: redis %s = %q, want %q", tt.name, tt.wantField, v, tt.wantValue)
		}
		if _, err := keyspace.Decode(tt.wantValue); err != nil {
			t.Errorf("%s: the gateway cannot decode %q: %v", tt.name, tt.wantValue, err)
		}
	}

	live, err := f.svc.List(ctx, "org_a", true)
	if err != nil {
		t.Fatal(err)
	}
	if len(live) != 2 || live[0].Policy != "per-org" || live[0].Quota != 8000 || live[0].Burst != nil || live[1].APIKeyID != "key_live_a" {
		t.Errorf("live overrides = %+v", live)
	}
	if sandbox, _ := f.svc.List(ctx, "org_a", false); len(sandbox) != 1 {
		t.Errorf("sandbox overrides = %+v", sandbox)
	}
	var audited int
	if err := f.pool.QueryRow(ctx, `SELECT count(*) FROM audit_logs WHERE organization_id = 'org_a' AND action = 'limit_override.set'`).Scan(&audited); err != nil || audited != 4 {
		t.Errorf("audit entries = %d (%v), want 4", audited, err)
	}
	b, _ := json.Marshal(live[1])
	var printed map[string]any
	_ = json.Unmarshal(b, &printed)
	if printed["object"] != "limit_override" || printed["api_key"] != "key_live_a" || printed["burst"] != float64(1000) {
		t.Errorf("JSON = %s", b)
	}
}

func TestSetRefuses(t *testing.T) {
	f := setup(t)
	valid := Override{OrganizationID: "org_a", Livemode: true, Policy: "per-key", Quota: 10, WindowSeconds: 1}
	tests := []struct {
		name     string
		change   func(*Override)
		param    string
		sentinel error
	}{
		{"policy with a colon", func(o *Override) { o.Policy = "per:key" }, "policy", nil},
		{"zero quota", func(o *Override) { o.Quota = 0 }, "quota", nil},
		{"negative window", func(o *Override) { o.WindowSeconds = -1 }, "window_seconds", nil},
		{"negative burst", func(o *Override) { o.Burst = ptr(-1) }, "burst", nil},
		{"a quota the gateway cannot count", func(o *Override) { o.Quota = 1<<63 - 1 }, "quota", nil},
		{"a window over 366 days", func(o *Override) { o.WindowSeconds = 366*24*3600 + 1 }, "window_seconds", nil},
		{"a burst that takes years to refill", func(o *Override) { o.Burst = ptr(20 * 366 * 24 * 3600) }, "burst", nil},
		{"not a key id", func(o *Override) { o.APIKeyID = "sk_live_123" }, "api_key", nil},
		{"unknown organisation", func(o *Override) { o.OrganizationID = "org_zz" }, "id", ErrOrgNotFound},
		{"another tenant's key", func(o *Override) { o.APIKeyID = "key_live_b" }, "id", ErrKeyNotFound},
		{"a sandbox key for a live override", func(o *Override) { o.APIKeyID = "key_test_a" }, "id", ErrKeyNotFound},
	}
	for _, tt := range tests {
		o := valid
		tt.change(&o)
		_, err := f.svc.Set(context.Background(), operator, o)
		if err == nil {
			t.Errorf("%s: accepted", tt.name)
			continue
		}
		if e := apierror.From(err); e.Status == 500 || e.Param != tt.param {
			t.Errorf("%s: error %+v, want a public error about %s", tt.name, e, tt.param)
		}
		if tt.sentinel != nil && !errors.Is(err, tt.sentinel) {
			t.Errorf("%s: %v is not %v", tt.name, err, tt.sentinel)
		}
	}
	if n := len(f.hash(t, "org_a")); n != 0 {
		t.Errorf("refused overrides reached redis: %d fields", n)
	}
}

func TestDelete(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	for _, o := range []Override{
		{OrganizationID: "org_a", Livemode: true, Policy: "per-org", Quota: 5000, WindowSeconds: 1},
		{OrganizationID: "org_a", Livemode: true, APIKeyID: "key_live_a", Policy: "per-org", Quota: 10, WindowSeconds: 1},
	} {
		if _, err := f.svc.Set(ctx, operator, o); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.svc.Delete(ctx, operator, "org_a", true, "key_live_a", "per-org"); err != nil {
		t.Fatal(err)
	}
	if h := f.hash(t, "org_a"); len(h) != 1 || h["live:per-org"] != "5000 1 0" {
		t.Errorf("after deleting the key's override: %v", h)
	}
	err := f.svc.Delete(ctx, operator, "org_a", true, "key_live_a", "per-org")
	if !errors.Is(err, ErrNotFound) || apierror.From(err).Status != 404 {
		t.Errorf("deleting again: %v, want a 404 ErrNotFound", err)
	}
	// Another tenant cannot delete org_a's override.
	if err := f.svc.Delete(ctx, operator, "org_b", true, "", "per-org"); !errors.Is(err, ErrNotFound) {
		t.Errorf("org_b deleting: %v", err)
	}
}

// heldRedis holds the first mirroring write (a Pipelined call) until
// release is closed, telling held when it has one.
type heldRedis struct {
	redis.Cmdable
	first   atomic.Bool
	held    chan struct{}
	release chan struct{}
}

func (h *heldRedis) Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error) {
	if h.first.CompareAndSwap(false, true) {
		close(h.held)
		<-h.release
	}
	return h.Cmdable.Pipelined(ctx, fn)
}

// releaseWhenDoneOrWaiting releases h's held write once the operation
// reporting to done has either finished meanwhile or is waiting for a lock
// in Postgres.
func (f fixture) releaseWhenDoneOrWaiting(t *testing.T, h *heldRedis, done chan error) {
	t.Helper()
	for waiting := false; !waiting; {
		select {
		case err := <-done:
			done <- err
			waiting = true
		default:
			if err := f.pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
				WHERE datname = current_database() AND wait_event_type = 'Lock')`).Scan(&waiting); err != nil {
				t.Fatal(err)
			}
			if !waiting {
				time.Sleep(time.Millisecond)
			}
		}
	}
	close(h.release)
}

// Two operators setting one override at once: Redis must end with the value
// Postgres ends with, the one the gateway enforces until the next Sync.
func TestConcurrentSetsLeaveRedisAsPostgres(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	h := &heldRedis{Cmdable: f.rdb, held: make(chan struct{}), release: make(chan struct{})}
	svc := New(f.pool, h, f.prefix)
	first := Override{OrganizationID: "org_a", Livemode: true, Policy: "per-org", Quota: 100, WindowSeconds: 1}
	second := first
	second.Quota = 200

	firstDone, secondDone := make(chan error, 1), make(chan error, 1)
	go func() { _, err := svc.Set(ctx, operator, first); firstDone <- err }()
	<-h.held // the first Set is writing Redis
	go func() { _, err := svc.Set(ctx, operator, second); secondDone <- err }()
	f.releaseWhenDoneOrWaiting(t, h, secondDone)
	for _, done := range []chan error{firstDone, secondDone} {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	var quota int64
	if err := f.pool.QueryRow(ctx, `SELECT quota FROM limit_overrides WHERE organization_id = 'org_a'`).Scan(&quota); err != nil {
		t.Fatal(err)
	}
	if got, want := f.hash(t, "org_a")["live:per-org"], fmt.Sprintf("%d 1 0", quota); got != want {
		t.Errorf("Redis holds %q while Postgres holds %q: the gateway enforces a limit the control plane no longer shows", got, want)
	}
}

// A Set while Sync runs is neither undone nor removed as stale by it.
func TestSetDuringSyncStaysMirrored(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	o := Override{OrganizationID: "org_a", Livemode: true, Policy: "per-org", Quota: 100, WindowSeconds: 1}
	if _, err := f.svc.Set(ctx, operator, o); err != nil {
		t.Fatal(err)
	}
	h := &heldRedis{Cmdable: f.rdb, held: make(chan struct{}), release: make(chan struct{})}
	svc := New(f.pool, h, f.prefix)
	syncDone, setDone := make(chan error, 1), make(chan error, 1)
	go func() { _, err := svc.Sync(ctx); syncDone <- err }()
	<-h.held // Sync has read Postgres (quota 100) and is at Redis
	o.Quota = 300
	go func() { _, err := svc.Set(ctx, operator, o); setDone <- err }()
	f.releaseWhenDoneOrWaiting(t, h, setDone)
	for _, done := range []chan error{syncDone, setDone} {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if got := f.hash(t, "org_a")["live:per-org"]; got != "300 1 0" {
		t.Errorf("after a Set during Sync, Redis holds %q, want %q: the gateway ignores the new override until the next Sync", got, "300 1 0")
	}
}

// A transaction holding limit_overrides (a psql session, a migration) makes
// Sync give up for this round, not wait: waiting, it would queue every Set
// behind its lock request.
func TestSyncGivesUpBehindALongTransaction(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	old := syncLockTimeout
	syncLockTimeout = "50ms"
	t.Cleanup(func() { syncLockTimeout = old })
	tx, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `LOCK TABLE limit_overrides IN ROW EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := f.svc.Sync(sctx); err == nil || sctx.Err() != nil {
		t.Fatalf("Sync behind a long transaction: %v (context: %v), want it to give up on its lock", err, sctx.Err())
	}
}

func TestSyncRepairsRedis(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	for _, o := range []Override{
		{OrganizationID: "org_a", Livemode: true, Policy: "per-org", Quota: 5000, WindowSeconds: 1},
		{OrganizationID: "org_a", Livemode: false, APIKeyID: "key_test_a", Policy: "per-key", Quota: 5, WindowSeconds: 1},
		{OrganizationID: "org_b", Livemode: true, Policy: "monthly", Quota: 10, WindowSeconds: 1},
	} {
		if _, err := f.svc.Set(ctx, operator, o); err != nil {
			t.Fatal(err)
		}
	}
	// Redis drifts: org_a's hash is lost, org_b has a field Postgres never
	// had and a wrong value, and an organisation without overrides lingers.
	hashA, hashB := keyspace.Overrides(f.prefix, "org_a"), keyspace.Overrides(f.prefix, "org_b")
	ghost := keyspace.Overrides(f.prefix, "org_ghost")
	f.rdb.Del(ctx, hashA)
	f.rdb.HSet(ctx, hashB, "live:per-ip", "1 1 0", "live:monthly", "999999 1 0")
	f.rdb.HSet(ctx, ghost, "live:per-org", "1 1 0")
	f.rdb.SAdd(ctx, keyspace.Index(f.prefix), "org_ghost")

	res, err := f.svc.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(res, SyncResult{Organizations: 2, Overrides: 3, Removed: 2}) {
		t.Errorf("result = %+v", res)
	}
	want := map[string]map[string]string{
		"org_a":     {"live:per-org": "5000 1 0", "sandbox:per-key:key_test_a": "5 1 0"},
		"org_b":     {"live:monthly": "10 1 0"},
		"org_ghost": {},
	}
	for org, w := range want {
		got := f.hash(t, org)
		if len(got) != len(w) {
			t.Errorf("%s: %v, want %v", org, got, w)
		}
		for k, v := range w {
			if got[k] != v {
				t.Errorf("%s %s = %q, want %q", org, k, got[k], v)
			}
		}
	}
	if members := f.rdb.SMembers(ctx, keyspace.Index(f.prefix)).Val(); len(members) != 2 {
		t.Errorf("index = %v, want org_a and org_b", members)
	}
}

// Rows saved before the control plane checked bounds (keyspace.CheckBounds)
// are not mirrored, and a value mirrored back then is removed: the gateway
// ignores it, and Redis should say what applies.
func TestSyncLeavesOutOverridesOutOfBounds(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	if _, err := f.svc.Set(ctx, operator, Override{OrganizationID: "org_a", Livemode: true, Policy: "per-org",
		Quota: 100, WindowSeconds: 1}); err != nil {
		t.Fatal(err)
	}
	for _, row := range []struct {
		org, key, policy     string
		quota, window, burst int64
	}{
		{"org_a", "", "monthly", 1<<63 - 1, 1, 0},
		{"org_a", "key_live_a", "per-key", 10, keyspace.MaxWindow + 1, 0},
		{"org_b", "", "per-org", 1, 1, keyspace.MaxCount},
	} {
		var burst *int64
		if row.burst > 0 {
			burst = &row.burst
		}
		if _, err := f.pool.Exec(ctx, `INSERT INTO limit_overrides
			(organization_id, livemode, api_key_id, policy, quota, window_seconds, burst)
			VALUES ($1, true, $2, $3, $4, $5, $6)`, row.org, row.key, row.policy, row.quota, row.window, burst); err != nil {
			t.Fatal(err)
		}
	}
	// What an older control plane mirrored.
	f.rdb.HSet(ctx, keyspace.Overrides(f.prefix, "org_b"), "live:per-org", fmt.Sprintf("1 1 %d", int64(keyspace.MaxCount)))
	f.rdb.SAdd(ctx, keyspace.Index(f.prefix), "org_b")

	res, err := f.svc.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := SyncResult{Organizations: 1, Overrides: 1, Removed: 1, Ignored: []string{
		"org_a live:monthly", "org_a live:per-key:key_live_a", "org_b live:per-org"}}
	if !reflect.DeepEqual(res, want) {
		t.Errorf("result = %+v, want %+v", res, want)
	}
	if got := f.hash(t, "org_a"); !reflect.DeepEqual(got, map[string]string{"live:per-org": "100 1 0"}) {
		t.Errorf("org_a's hash = %v", got)
	}
	if got := f.hash(t, "org_b"); len(got) != 0 {
		t.Errorf("org_b's hash = %v, want none", got)
	}
}

// MirrorKey writes what Postgres holds for one key (keys.Roll copies the
// rows), bar a value out of bounds.
func TestMirrorKey(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	for _, row := range []struct {
		policy        string
		quota, window int64
	}{{"per-key", 7, 1}, {"monthly", keyspace.MaxCount + 1, 1}} {
		if _, err := f.pool.Exec(ctx, `INSERT INTO limit_overrides
			(organization_id, livemode, api_key_id, policy, quota, window_seconds)
			VALUES ('org_a', true, 'key_live_a', $1, $2, $3)`, row.policy, row.quota, row.window); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.svc.MirrorKey(ctx, "org_a", "key_live_a"); err != nil {
		t.Fatal(err)
	}
	if got := f.hash(t, "org_a"); !reflect.DeepEqual(got, map[string]string{"live:per-key:key_live_a": "7 1 0"}) {
		t.Errorf("org_a's hash = %v", got)
	}
}

func TestSetWhileRedisIsDown(t *testing.T) {
	f := setup(t)
	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { _ = down.Close() })
	svc := New(f.pool, down, f.prefix)
	o := Override{OrganizationID: "org_a", Livemode: true, Policy: "per-org", Quota: 5000, WindowSeconds: 1}
	saved, err := svc.Set(context.Background(), operator, o)
	if !errors.Is(err, ErrNotMirrored) || saved.Quota != 5000 {
		t.Fatalf("Set = %+v, %v; want the saved override and ErrNotMirrored", saved, err)
	}
	// Postgres has it, and the next Sync through a working Redis applies it.
	if _, err := f.svc.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v := f.hash(t, "org_a")["live:per-org"]; v != "5000 1 0" {
		t.Errorf("after sync: %q", v)
	}
}

func TestSyncerRunsUntilCancelled(t *testing.T) {
	f := setup(t)
	if _, err := f.svc.Set(context.Background(), operator,
		Override{OrganizationID: "org_a", Livemode: true, Policy: "per-org", Quota: 7, WindowSeconds: 1}); err != nil {
		t.Fatal(err)
	}
	f.rdb.Del(context.Background(), keyspace.Overrides(f.prefix, "org_a"))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- (&Syncer{Service: f.svc, Interval: 10 * time.Millisecond}).Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for f.hash(t, "org_a")["live:per-org"] != "7 1 0" {
		if time.Now().After(deadline) {
			t.Fatal("the syncer did not restore the override")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}
