package apikey

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	keyformat "github.com/gatehouse/gatehouse/internal/apikey"
	"github.com/gatehouse/gatehouse/internal/ids"
)

const testSecret = "test-identity-secret"

// fakeClock is the handlers' clock in these tests: real time plus an offset
// the test moves, so expiry is tested without sleeping; or, frozen, a time
// that only Advance moves, for what counts per second.
type fakeClock struct {
	offset atomic.Int64
	frozen atomic.Pointer[time.Time]
}

func (c *fakeClock) Now() time.Time {
	if f := c.frozen.Load(); f != nil {
		return *f
	}
	return time.Now().Add(time.Duration(c.offset.Load()))
}

func (c *fakeClock) Advance(d time.Duration) {
	if f := c.frozen.Load(); f != nil {
		t := f.Add(d)
		c.frozen.Store(&t)
	}
	c.offset.Add(int64(d))
}

// Freeze stops the clock where it is until the test ends.
func (c *fakeClock) Freeze(t testing.TB) {
	now := c.Now()
	c.frozen.Store(&now)
	t.Cleanup(func() { c.frozen.Store(nil) })
}

func useFakeClock(t *testing.T) *fakeClock {
	c := new(fakeClock)
	old := clock
	clock = c.Now
	t.Cleanup(func() { clock = old })
	return c
}

// upstream records what the gateway forwarded, and echoes Request-Id and
// Api-Version the way identity.Verifier.Middleware does.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	last http.Header
	hits int
}

func newUpstream(t *testing.T) *upstream {
	u := new(upstream)
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		u.mu.Lock()
		u.last = r.Header.Clone()
		u.hits++
		u.mu.Unlock()
		w.Header().Set("Request-Id", r.Header.Get("Request-Id"))
		w.Header().Set("Api-Version", r.Header.Get("Api-Version"))
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"object":"customer"}`))
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) lastHeader() http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.last
}

func (u *upstream) hitCount() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.hits
}

func (u *upstream) addr() string { return strings.TrimPrefix(u.URL, "http://") }

// waitListening waits until every key store has its LISTEN connection:
// establishing it flushes the cache, so tests warm caches after.
func waitListening(t testing.TB) {
	t.Helper()
	eventually(t, 10*time.Second, "key stores listening", func() bool {
		all := true
		stores.Range(func(_, v any) bool {
			all = all && v.(*store).listening.Load()
			return all
		})
		return all
	})
}

// runCaddy adapts a Caddyfile and runs it in-process until the test ends.
// Caddy runs one config per process, so these tests never run in parallel.
func runCaddy(t testing.TB, caddyfile string) {
	t.Helper()
	cfg, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		t.Fatalf("adapting test Caddyfile: %v\n%s", err, caddyfile)
	}
	for _, w := range warnings {
		t.Logf("adapt warning: %s", w.String())
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("loading caddy: %v", err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	waitListening(t)
}

const globalOptions = `{
	admin off
	persist_config off
	auto_https off
	log {
		level ERROR
	}
	servers {
		trusted_proxies static 127.0.0.0/8
	}
}
`

// site is a gateway site block in front of up, with the key store at dsn.
func site(port int, dsn string, up *upstream, deadPort int, extra string) string {
	if extra != "" {
		extra = "\n\t\t" + extra
	}
	return fmt.Sprintf(`
http://127.0.0.1:%d {
	request_id
	request_body {
		max_size 1KB
	}
	api_key /v1/* {
		database_url "%s"
		identity_secret %s
		scope customers:read GET,HEAD /v1/customers*
		scope customers:write POST,PUT,PATCH,DELETE /v1/customers*
		last_used_flush_interval 100ms%s
	}
	handle /v1/customers* {
		reverse_proxy %s
	}
	handle /v1/dead* {
		reverse_proxy 127.0.0.1:%d {
			transport http {
				dial_timeout 1s
			}
		}
	}
	handle {
		api_error 404 route_missing
	}
}
`, port, dsn, testSecret, extra, up.addr(), deadPort)
}

// withParam adds a query parameter to a DSN, e.g. a distinct
// application_name so two gateways in one process get separate stores.
func withParam(dsn, kv string) string {
	if strings.Contains(dsn, "?") {
		return dsn + "&" + kv
	}
	return dsn + "?" + kv
}

// --- data -------------------------------------------------------------

type fixture struct {
	pool *pgxpool.Pool
	dsn  string
}

func (f fixture) org(t testing.TB, version string) string {
	t.Helper()
	id := ids.New(ids.Org)
	var v any
	if version != "" {
		v = version
	}
	if _, err := f.pool.Exec(context.Background(),
		`INSERT INTO organizations (id, name, api_version) VALUES ($1, $2, $3)`, id, "Test "+id, v); err != nil {
		t.Fatal(err)
	}
	return id
}

type keyOpts struct {
	kind      keyformat.Kind
	env       keyformat.Environment
	scopes    []string
	allowlist []string
	expiresAt *time.Time
	revoked   bool
	rolledTo  string
}

func (f fixture) key(t testing.TB, orgID string, o keyOpts) (key, id string) {
	t.Helper()
	if o.kind == "" {
		o.kind = keyformat.Secret
	}
	if o.env == "" {
		o.env = keyformat.Sandbox
	}
	key, err := keyformat.Generate(o.kind, o.env)
	if err != nil {
		t.Fatal(err)
	}
	id = ids.New(ids.Key)
	h := keyformat.Hash(key)
	var revokedAt *time.Time
	if o.revoked {
		now := time.Now()
		revokedAt = &now
	}
	var rolledTo any
	if o.rolledTo != "" {
		rolledTo = o.rolledTo
	}
	if o.scopes == nil {
		o.scopes = []string{}
	}
	if o.allowlist == nil {
		o.allowlist = []string{}
	}
	_, err = f.pool.Exec(context.Background(), `
		INSERT INTO api_keys (id, organization_id, environment, kind, prefix, key_hash, last4, scopes, ip_allowlist,
		                      expires_at, revoked_at, rolled_to, created_by)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::cidr[], $10, $11, $12, 'test')`,
		id, orgID, string(o.env), string(o.kind), keyformat.DisplayPrefix(key), h[:], keyformat.Last4(key),
		o.scopes, o.allowlist, o.expiresAt, revokedAt, rolledTo)
	if err != nil {
		t.Fatal(err)
	}
	return key, id
}

// revoke revokes key and notifies, in one transaction, as the control
// plane does.
func (f fixture) revoke(t testing.TB, key string) {
	t.Helper()
	h := keyformat.Hash(key)
	ctx := context.Background()
	tx, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `UPDATE api_keys SET revoked_at = now() WHERE key_hash = $1`, h[:]); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, Channel, hex.EncodeToString(h[:])); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

// --- HTTP -------------------------------------------------------------

type response struct {
	Status int
	Header http.Header
	Body   string
	Error  map[string]string
}

func do(t testing.TB, req *http.Request) response {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := response{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}
	var body struct{ Error map[string]string }
	if json.Unmarshal(b, &body) == nil {
		r.Error = body.Error
	}
	return r
}

func get(t testing.TB, base, path, key string, headers ...string) response {
	t.Helper()
	req, err := http.NewRequest("GET", base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	return do(t, req)
}

// eventually polls cond every 10 ms until it holds or within passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if cond() {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}

// tcpProxy stands between the gateway and Postgres so a test can take
// "Postgres" down and bring it back without touching the real server.
type tcpProxy struct {
	target string
	addr   string
	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{}
}

func newTCPProxy(t testing.TB, target string) *tcpProxy {
	p := &tcpProxy{target: target, addr: "127.0.0.1:0", conns: map[net.Conn]struct{}{}}
	p.start(t)
	t.Cleanup(p.stop)
	return p
}

func (p *tcpProxy) start(t testing.TB) {
	t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.pipe(c)
		}
	}()
}

func (p *tcpProxy) pipe(c net.Conn) {
	s, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[s] = struct{}{}, struct{}{}
	p.mu.Unlock()
	go func() { _, _ = io.Copy(s, c); s.Close(); c.Close() }()
	_, _ = io.Copy(c, s)
	s.Close()
	c.Close()
}

// stop refuses new connections and cuts the open ones.
func (p *tcpProxy) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}
