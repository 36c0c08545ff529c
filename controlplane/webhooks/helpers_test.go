package webhooks

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap/zaptest"

	"github.com/gatehouse/gatehouse/controlplane/router"
	"github.com/gatehouse/gatehouse/controlplane/server"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/secretbox"
	"github.com/gatehouse/gatehouse/internal/ssrf"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

var testSecret = []byte("webhooks-test-identity-secret")

// Callers. orgA sandbox is the default tenant; the others must never see
// its objects.
var (
	orgA     = identity.Identity{OrgID: "org_A", KeyID: "key_A", Scopes: []string{"*"}, APIVersion: "2026-11-01"}
	orgALive = identity.Identity{OrgID: "org_A", Livemode: true, KeyID: "key_AL", Scopes: []string{"*"}, APIVersion: "2026-11-01"}
	orgB     = identity.Identity{OrgID: "org_B", KeyID: "key_B", Scopes: []string{"*"}, APIVersion: "2026-11-01"}
)

// publicURL is a destination every policy accepts: a global address
// literal, so no DNS is involved.
const publicURL = "https://93.184.215.14/hooks/gatehouse"

type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

// env is the webhook API on a fresh database.
type env struct {
	t       *testing.T
	pool    *pgxpool.Pool
	box     *secretbox.Box
	clock   *clock
	handler http.Handler
}

func newEnv(t *testing.T) *env { return newEnvWithPolicy(t, ssrf.Policy{}) }

func newEnvWithPolicy(t *testing.T, policy ssrf.Policy) *env {
	t.Helper()
	pool, _ := testenv.Pool(t)
	box, err := secretbox.New(config.DefaultMasterKey)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, pool: pool, box: box, clock: &clock{now: time.Now().Truncate(time.Second)}}
	for _, org := range []string{"org_A", "org_B"} {
		e.exec(`INSERT INTO organizations (id, name) VALUES ($1, $1)`, org)
	}
	api := NewAPI(Config{DB: pool, Box: box, URLPolicy: policy, Logger: zaptest.NewLogger(t), Now: e.clock.Now})
	e.handler = server.New(server.Config{IdentitySecret: testSecret, API: []router.Routes{api}, Logger: zaptest.NewLogger(t)}).Handler()
	return e
}

func loopback() ssrf.Policy {
	return ssrf.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.pool.Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

func (e *env) count(sql string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

type response struct {
	status int
	header http.Header
	raw    []byte
}

// do signs a request as id and serves it; header holds extra name/value pairs.
func (e *env) do(id identity.Identity, method, target, contentType, body string, header ...string) response {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r := httptest.NewRequest(method, target, rd)
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	id.RequestID = ids.New(ids.Request)
	identity.NewSigner(testSecret, nil).Apply(r, id)
	w := httptest.NewRecorder()
	e.handler.ServeHTTP(w, r)
	return response{status: w.Code, header: w.Header(), raw: w.Body.Bytes()}
}

func (e *env) get(id identity.Identity, target string) response {
	e.t.Helper()
	return e.do(id, http.MethodGet, target, "", "")
}

func (e *env) post(id identity.Identity, target, body string) response {
	e.t.Helper()
	if body == "" {
		return e.do(id, http.MethodPost, target, "", "")
	}
	return e.do(id, http.MethodPost, target, "application/json", body)
}

func (e *env) form(id identity.Identity, target, body string) response {
	e.t.Helper()
	return e.do(id, http.MethodPost, target, "application/x-www-form-urlencoded", body)
}

func (r response) decode(t *testing.T, status int, v any) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d; body: %s", r.status, status, r.raw)
	}
	if err := json.Unmarshal(r.raw, v); err != nil {
		t.Fatalf("decoding %s: %v", r.raw, err)
	}
}

type wantError struct {
	status int
	code   string
	param  string
}

// assertError checks the error object and returns its message.
func (r response) assertError(t *testing.T, want wantError) string {
	t.Helper()
	if r.status != want.status {
		t.Fatalf("status = %d, want %d; body: %s", r.status, want.status, r.raw)
	}
	var body struct {
		Error map[string]string `json:"error"`
	}
	if err := json.Unmarshal(r.raw, &body); err != nil || body.Error == nil {
		t.Fatalf("not an error object: %s", r.raw)
	}
	if body.Error["code"] != want.code || body.Error["param"] != want.param {
		t.Errorf("error code %q param %q, want %q %q; message: %s",
			body.Error["code"], body.Error["param"], want.code, want.param, body.Error["message"])
	}
	if body.Error["message"] == "" || body.Error["request_id"] == "" {
		t.Errorf("error without message or request_id: %s", r.raw)
	}
	return body.Error["message"]
}

// mustCreate creates an endpoint and returns it with its secret.
func (e *env) mustCreate(id identity.Identity, body string) Endpoint {
	e.t.Helper()
	var ep Endpoint
	e.post(id, "/v1/webhook-endpoints", body).decode(e.t, http.StatusOK, &ep)
	return ep
}

func (e *env) mustCreateDefault(id identity.Identity) Endpoint {
	e.t.Helper()
	return e.mustCreate(id, `{"url":"`+publicURL+`","enabled_events":["*"]}`)
}

// auditActions lists the actions recorded for target, sorted by name:
// entries written within one millisecond have no defined order.
func (e *env) auditActions(target string) []string {
	e.t.Helper()
	rows, err := e.pool.Query(context.Background(),
		`SELECT action FROM audit_logs WHERE target_id = $1 ORDER BY action`, target)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

// seedDelivery stores an event and a delivery of it to endpoint, as the
// deliverer's fan-out would, and returns the delivery id.
func (e *env) seedDelivery(id identity.Identity, endpoint, status string, created time.Time) string {
	e.t.Helper()
	evID := ids.NewAt(ids.Event, created)
	e.exec(`INSERT INTO events (id, organization_id, livemode, type, api_version, data, created_at)
		VALUES ($1, $2, $3, 'customer.created', '2026-11-01', '{"object":{}}', $4)`, evID, id.OrgID, id.Livemode, created)
	dID := ids.NewAt(ids.Delivery, created)
	e.exec(`INSERT INTO webhook_deliveries (id, organization_id, livemode, event_id, endpoint_id, status, attempts,
		last_status_code, next_attempt_at, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, 3, 500, NULL, $7, $7)`, dID, id.OrgID, id.Livemode, evID, endpoint, status, created)
	return dID
}

// deliveryState is what the deliverer reads of a delivery.
type deliveryState struct {
	Status        string
	NextAttemptAt *time.Time
	ManualPending bool
}

func (e *env) state(delivery string) deliveryState {
	e.t.Helper()
	var s deliveryState
	if err := e.pool.QueryRow(context.Background(),
		`SELECT status, next_attempt_at, manual_pending FROM webhook_deliveries WHERE id = $1`, delivery).
		Scan(&s.Status, &s.NextAttemptAt, &s.ManualPending); err != nil {
		e.t.Fatal(err)
	}
	return s
}
