package requestlogs

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap/zaptest"

	"github.com/gatehouse/gatehouse/controlplane/ingest"
	"github.com/gatehouse/gatehouse/controlplane/router"
	"github.com/gatehouse/gatehouse/controlplane/server"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

var testSecret = []byte("requestlogs-test-identity-secret")

// Key ids as the key store mints them (22 base62 characters).
const (
	keyA  = "key_AAAAAAAAAAAAAAAAAAAAAA"
	keyA2 = "key_AAAAAAAAAAAAAAAAAAAAA2"
)

var (
	orgA     = identity.Identity{OrgID: "org_A", KeyID: keyA, Scopes: []string{"*"}}
	orgALive = identity.Identity{OrgID: "org_A", Livemode: true, KeyID: "key_AL", Scopes: []string{"*"}}
	orgB     = identity.Identity{OrgID: "org_B", KeyID: "key_B", Scopes: []string{"*"}}
)

type env struct {
	t       *testing.T
	db      *pgxpool.Pool
	handler http.Handler
}

func newEnv(t *testing.T) *env {
	return newEnvTimeout(t, 0)
}

// newEnvTimeout serves the API with the given request timeout (zero: the
// server's default).
func newEnvTimeout(t *testing.T, timeout time.Duration) *env {
	pool, _ := testenv.Pool(t)
	h := server.New(server.Config{IdentitySecret: testSecret, RequestTimeout: timeout,
		API: []router.Routes{New(pool, zaptest.NewLogger(t))}}).Handler()
	return &env{t: t, db: pool, handler: h}
}

// logRow is what a test stores; zero fields take plain defaults.
type logRow struct {
	id, org, key, method, path, route  string
	errType, errCode, errMsg, errParam string
	live                               bool
	status                             int
	at                                 time.Time
}

func (e *env) insert(rows ...logRow) {
	e.t.Helper()
	ctx := context.Background()
	parts := ingest.NewPartitions(e.db, 30*24*time.Hour, 0, nil)
	for _, r := range rows {
		if _, err := parts.Ensure(ctx, r.at); err != nil {
			e.t.Fatal(err)
		}
		_, err := e.db.Exec(ctx, `INSERT INTO request_logs (request_id, created_at, organization_id, livemode, api_key_id,
			method, route, path, status, duration_us, upstream_us, client_ip, user_agent, api_version, error_type, error_code,
			error_message, error_param, request_headers, response_headers)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1234, 1000, '203.0.113.1', 'curl/8', '2026-11-01', $10, $11,
			$12, $13, '{"Content-Type":"application/json"}', '{"Request-Id":"x"}')`,
			r.id, r.at, r.org, r.live, r.key, r.method, r.route, r.path, r.status, r.errType, r.errCode, r.errMsg, r.errParam)
		if err != nil {
			e.t.Fatal(err)
		}
	}
}

type response struct {
	Status int
	Body   string
	List   struct {
		Object  string            `json:"object"`
		URL     string            `json:"url"`
		HasMore bool              `json:"has_more"`
		Data    []json.RawMessage `json:"data"`
	}
	Error map[string]string
}

func (r response) ids(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, d := range r.List.Data {
		var o struct{ ID string }
		if err := json.Unmarshal(d, &o); err != nil {
			t.Fatal(err)
		}
		out = append(out, o.ID)
	}
	return out
}

func (e *env) get(id identity.Identity, target string) response {
	e.t.Helper()
	req := httptest.NewRequest("GET", target, nil)
	id.RequestID = ids.New(ids.Request)
	identity.NewSigner(testSecret, nil).Apply(req, id)
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	body, _ := io.ReadAll(rec.Body)
	r := response{Status: rec.Code, Body: string(body)}
	if rec.Code == 200 {
		_ = json.Unmarshal(body, &r.List)
	} else {
		var eo struct{ Error map[string]string }
		_ = json.Unmarshal(body, &eo)
		r.Error = eo.Error
	}
	return r
}

func TestList(t *testing.T) {
	e := newEnv(t)
	base := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	var all []string // newest first
	var rows []logRow
	for i := 0; i < 12; i++ {
		at := base.Add(time.Duration(i) * time.Second)
		r := logRow{id: ids.NewAt(ids.Request, at), org: "org_A", key: keyA, method: "GET", path: fmt.Sprintf("/v1/customers/cus_%d", i),
			route: "/v1/customers/{id}", status: 200, at: at.Add(time.Duration(i) * time.Microsecond)}
		switch i % 4 {
		case 1:
			r.status, r.errType, r.errCode = 404, "invalid_request_error", "resource_missing"
		case 2:
			r.method, r.path, r.route, r.key = "POST", "/v1/events", "/v1/events", keyA2
		case 3:
			r.status, r.errType, r.errCode, r.key = 401, "authentication_error", "api_key_invalid", ""
		}
		rows = append(rows, r)
		all = append([]string{r.id}, all...)
	}
	// Two requests in the same microsecond: the id breaks the tie.
	tie := base.Add(20 * time.Second)
	t1, t2 := ids.NewAt(ids.Request, tie), ids.NewAt(ids.Request, tie)
	rows = append(rows,
		logRow{id: t1, org: "org_A", key: keyA, method: "GET", path: "/v1/x", status: 200, at: tie},
		logRow{id: t2, org: "org_A", key: keyA, method: "GET", path: "/v1/x", status: 200, at: tie})
	tied := []string{t1, t2}
	slices.Sort(tied)
	all = append([]string{tied[1], tied[0]}, all...)
	// Other tenants and environments.
	other := []logRow{
		{id: ids.NewAt(ids.Request, base), org: "org_A", live: true, key: "key_AL", method: "GET", path: "/v1/customers", status: 200, at: base.Add(time.Minute)},
		{id: ids.NewAt(ids.Request, base), org: "org_B", key: "key_B", method: "GET", path: "/v1/customers", status: 200, at: base.Add(time.Minute)},
	}
	e.insert(append(rows, other...)...)

	t.Run("default page", func(t *testing.T) {
		r := e.get(orgA, "/v1/request-logs")
		if r.Status != 200 || r.List.Object != "list" || r.List.URL != "/v1/request-logs" || !r.List.HasMore {
			t.Fatalf("got %d %s", r.Status, r.Body)
		}
		if got := r.ids(t); !slices.Equal(got, all[:10]) {
			t.Fatalf("ids %v, want %v", got, all[:10])
		}
	})

	t.Run("paging forwards and back", func(t *testing.T) {
		var got []string
		cursor := ""
		for {
			target := "/v1/request-logs?limit=5"
			if cursor != "" {
				target += "&starting_after=" + cursor
			}
			r := e.get(orgA, target)
			if r.Status != 200 {
				t.Fatalf("got %d %s", r.Status, r.Body)
			}
			page := r.ids(t)
			got = append(got, page...)
			if !r.List.HasMore {
				break
			}
			cursor = page[len(page)-1]
		}
		if !slices.Equal(got, all) {
			t.Fatalf("paged %v,\nwant %v", got, all)
		}
		r := e.get(orgA, "/v1/request-logs?limit=4&ending_before="+all[9])
		if want := all[5:9]; !slices.Equal(r.ids(t), want) || !r.List.HasMore {
			t.Fatalf("ending_before: %v (more %v), want %v", r.ids(t), r.List.HasMore, want)
		}
		r = e.get(orgA, "/v1/request-logs?limit=4&ending_before="+all[2])
		if want := all[0:2]; !slices.Equal(r.ids(t), want) || r.List.HasMore {
			t.Fatalf("ending_before near the top: %v (more %v), want %v", r.ids(t), r.List.HasMore, want)
		}
	})

	sec := func(i int) string { return fmt.Sprint(base.Add(time.Duration(i) * time.Second).Unix()) }
	idsOf := func(is ...int) []string {
		var out []string
		for _, i := range is {
			out = append(out, rows[i].id)
		}
		return out
	}
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"status=404", idsOf(9, 5, 1)},
		{"status=4xx", idsOf(11, 9, 7, 5, 3, 1)},
		{"status=4XX&method=get", idsOf(11, 9, 7, 5, 3, 1)},
		{"method=POST", idsOf(10, 6, 2)},
		{"path=" + url.QueryEscape("/v1/events"), idsOf(10, 6, 2)},
		{"path=" + url.QueryEscape("/v1/customers/cus_1"), idsOf(11, 1)}, // cus_10 is a POST /v1/events
		{"api_key=" + keyA2, idsOf(10, 6, 2)},
		{"request_id=" + rows[4].id, idsOf(4)},
		{"error_code=api_key_invalid", idsOf(11, 7, 3)},
		{"created[gte]=" + sec(3) + "&created[lt]=" + sec(6), idsOf(5, 4, 3)},
		{"created[gt]=" + sec(3) + "&created[lte]=" + sec(6), idsOf(6, 5, 4)},
		{"created=" + sec(2), idsOf(2)},
		{"status=404&created[lt]=" + sec(6), idsOf(5, 1)},
		{"status=500", nil},
	} {
		t.Run("filter "+tc.query, func(t *testing.T) {
			r := e.get(orgA, "/v1/request-logs?limit=100&"+tc.query)
			if r.Status != 200 {
				t.Fatalf("got %d %s", r.Status, r.Body)
			}
			if got := r.ids(t); !slices.Equal(got, tc.want) {
				t.Fatalf("ids %v, want %v", got, tc.want)
			}
		})
	}

	t.Run("environments and tenants do not mix", func(t *testing.T) {
		if got := e.get(orgALive, "/v1/request-logs").ids(t); !slices.Equal(got, []string{other[0].id}) {
			t.Fatalf("live sees %v", got)
		}
		if got := e.get(orgB, "/v1/request-logs").ids(t); !slices.Equal(got, []string{other[1].id}) {
			t.Fatalf("org_B sees %v", got)
		}
		// A cursor from another tenant is not a position in this list.
		r := e.get(orgB, "/v1/request-logs?starting_after="+all[0])
		if r.Status != 400 || r.Error["code"] != "parameter_invalid" || r.Error["param"] != "starting_after" {
			t.Fatalf("foreign cursor: %d %s", r.Status, r.Body)
		}
	})

	for _, tc := range []struct{ query, code, param string }{
		{"limit=0", "parameter_invalid", "limit"},
		{"limit=101", "parameter_invalid", "limit"},
		{"status=40", "parameter_invalid", "status"},
		{"status=4x", "parameter_invalid", "status"},
		{"status=600", "parameter_invalid", "status"},
		{"method=G%20T", "parameter_invalid", "method"},
		{"path=v1", "parameter_invalid", "path"},
		{"api_key=sk_test_123", "parameter_invalid", "api_key"},
		{"request_id=nope", "parameter_invalid", "request_id"},
		{"error_code=Bad%20Code", "parameter_invalid", "error_code"},
		{"created[gte]=yesterday", "parameter_invalid", "created[gte]"},
		{"starting_after=cus_123", "parameter_invalid", "starting_after"},
		{"starting_after=" + ids.New(ids.Request), "parameter_invalid", "starting_after"},
		{"starting_after=" + all[1] + "&ending_before=" + all[3], "parameter_invalid", "ending_before"},
		{"status=200&status=404", "parameter_invalid", "status"},
		{"colour=red", "parameter_unknown", "colour"},
	} {
		t.Run("refuses "+tc.query, func(t *testing.T) {
			r := e.get(orgA, "/v1/request-logs?"+tc.query)
			if r.Status != 400 || r.Error["code"] != tc.code || r.Error["param"] != tc.param || r.Error["type"] != "invalid_request_error" {
				t.Fatalf("got %d %s; want 400 %s %s", r.Status, r.Body, tc.code, tc.param)
			}
		})
	}
}

func TestGet(t *testing.T) {
	e := newEnv(t)
	at := time.Now().UTC().Add(-2 * time.Minute).Truncate(time.Microsecond)
	mine := logRow{id: ids.NewAt(ids.Request, at), org: "org_A", key: keyA, method: "POST", path: "/v1/customers?x=1",
		route: "/v1/customers", status: 402, errType: "card_error", errCode: "card_declined",
		errMsg: "Your card was declined.", at: at}
	ok := logRow{id: ids.NewAt(ids.Request, at), org: "org_A", method: "GET", path: "/v1/x", status: 200, at: at}
	live := logRow{id: ids.NewAt(ids.Request, at), org: "org_A", live: true, key: "key_AL", method: "GET", path: "/v1/x", status: 200, at: at}
	theirs := logRow{id: ids.NewAt(ids.Request, at), org: "org_B", key: "key_B", method: "GET", path: "/v1/x", status: 200, at: at}
	e.insert(mine, ok, live, theirs)

	t.Run("the object", func(t *testing.T) {
		r := e.get(orgA, "/v1/request-logs/"+mine.id)
		if r.Status != 200 {
			t.Fatalf("got %d %s", r.Status, r.Body)
		}
		var got map[string]any
		if err := json.Unmarshal([]byte(r.Body), &got); err != nil {
			t.Fatal(err)
		}
		want := map[string]any{
			"id": mine.id, "object": "request_log", "created": float64(at.Unix()), "livemode": false, "method": "POST",
			"path": "/v1/customers?x=1", "route": "/v1/customers", "status": float64(402), "duration_ms": 1.234,
			"upstream_duration_ms": float64(1), "api_key": keyA, "api_version": "2026-11-01", "idempotency_key": nil,
			"idempotent_replayed": false, "rate_limit": nil, "error": map[string]any{"type": "card_error", "code": "card_declined",
				"message": "Your card was declined.", "param": nil},
			"request_headers": map[string]any{"Content-Type": "application/json"}, "response_headers": map[string]any{"Request-Id": "x"},
			"request_body": nil, "response_body": nil, "client_ip": "203.0.113.1", "user_agent": "curl/8",
			"bytes_in": float64(0), "bytes_out": float64(0),
		}
		for k, v := range want {
			if fmt.Sprint(got[k]) != fmt.Sprint(v) {
				t.Errorf("%s = %v, want %v", k, got[k], v)
			}
		}
		if len(got) != len(want) {
			t.Errorf("object has %d fields, want %d: %s", len(got), len(want), r.Body)
		}
	})
	t.Run("a success has error null and no key", func(t *testing.T) {
		r := e.get(orgA, "/v1/request-logs/"+ok.id)
		if r.Status != 200 || !strings.Contains(r.Body, `"error":null`) || !strings.Contains(r.Body, `"api_key":null`) {
			t.Fatalf("got %d %s", r.Status, r.Body)
		}
	})
	for name, c := range map[string]struct {
		who identity.Identity
		id  string
	}{
		"another tenant's":      {orgA, theirs.id},
		"the other environment": {orgA, live.id},
		"seen from the tenant":  {orgB, mine.id},
		"unknown":               {orgA, ids.New(ids.Request)},
		"malformed":             {orgA, "req_%27;drop"},
	} {
		t.Run(name+" is a 404", func(t *testing.T) {
			r := e.get(c.who, "/v1/request-logs/"+c.id)
			if r.Status != 404 || r.Error["code"] != "resource_missing" || r.Error["type"] != "invalid_request_error" {
				t.Fatalf("got %d %s", r.Status, r.Body)
			}
		})
	}
	t.Run("query parameters are refused", func(t *testing.T) {
		r := e.get(orgA, "/v1/request-logs/"+mine.id+"?expand=x")
		if r.Status != 400 || r.Error["code"] != "parameter_unknown" {
			t.Fatalf("got %d %s", r.Status, r.Body)
		}
	})
}

func TestScope(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name   string
		scopes []string
		status int
	}{
		{"secret key", []string{"*"}, 200},
		{"restricted with logs:read", []string{"customers:read", "logs:read"}, 200},
		{"restricted without", []string{"customers:read", "usage:read"}, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := orgA
			id.Scopes = tc.scopes
			for _, target := range []string{"/v1/request-logs", "/v1/request-logs/" + ids.New(ids.Request)} {
				r := e.get(id, target)
				if tc.status == 403 && (r.Status != 403 || r.Error["code"] != "scope_missing" || r.Error["type"] != "permission_error") {
					t.Fatalf("%s: got %d %s", target, r.Status, r.Body)
				}
				if tc.status == 200 && r.Status == 403 {
					t.Fatalf("%s: got %d %s", target, r.Status, r.Body)
				}
			}
		})
	}
	t.Run("unsigned requests are refused", func(t *testing.T) {
		rec := httptest.NewRecorder()
		e.handler.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/request-logs", nil))
		if rec.Code != 401 {
			t.Fatalf("got %d", rec.Code)
		}
	})
}

// A search that cannot finish in the request's time ends with an error
// object that says how to narrow it, and frees its connection: here the
// table is locked, so the query waits until the deadline cancels it.
func TestSearchOutOfTimeIsA503ThatSaysToNarrowIt(t *testing.T) {
	e := newEnvTimeout(t, 300*time.Millisecond)
	ctx := context.Background()
	lock, err := e.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(ctx)
	if _, err := lock.Exec(ctx, `LOCK TABLE request_logs IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	r := e.get(orgA, "/v1/request-logs?status=500")
	if r.Status != http.StatusServiceUnavailable || r.Error["code"] != "request_timeout" || !strings.Contains(r.Error["message"], "Narrow it") {
		t.Fatalf("status %d, body %s; want 503 request_timeout", r.Status, r.Body)
	}
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	// The cancelled query left nothing behind: the next search answers.
	if r := e.get(orgA, "/v1/request-logs?status=500"); r.Status != http.StatusOK {
		t.Fatalf("after the lock: status %d, body %s", r.Status, r.Body)
	}
}

func TestIDTime(t *testing.T) {
	at := time.Date(2026, 11, 27, 10, 0, 0, 123e6, time.UTC)
	got, ok := IDTime(ids.NewAt(ids.Request, at))
	if !ok || !got.Equal(at) {
		t.Fatalf("IDTime = %v %v, want %v", got, ok, at)
	}
	for _, bad := range []string{"", "req_", "cus_" + ids.New(ids.Request)[4:], "req_!!!!!!!!!!!!!!!!!!!!!!"} {
		if _, ok := IDTime(bad); ok {
			t.Errorf("IDTime(%q) ok", bad)
		}
	}
}
