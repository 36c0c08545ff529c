package sampleapi

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

var testSecret = []byte("sampleapi-test-identity-secret")

// Callers used across the tests. orgA sandbox is the default tenant; the
// others must never see its customers.
var (
	orgA     = identity.Identity{OrgID: "org_A", Livemode: false, KeyID: "key_A", Scopes: []string{"*"}, APIVersion: "2026-11-01"}
	orgALive = identity.Identity{OrgID: "org_A", Livemode: true, KeyID: "key_AL", Scopes: []string{"*"}, APIVersion: "2026-11-01"}
	orgB     = identity.Identity{OrgID: "org_B", Livemode: false, KeyID: "key_B", Scopes: []string{"*"}, APIVersion: "2026-11-01"}
)

// env is the service on a fresh database.
type env struct {
	t       *testing.T
	handler http.Handler
}

func newEnv(t *testing.T) *env {
	t.Helper()
	pool, _ := testenv.Pool(t)
	s := NewServer(Config{IdentitySecret: testSecret}, pool, zaptest.NewLogger(t))
	return &env{t: t, handler: s.Handler()}
}

// request is one call; id nil means unsigned.
type request struct {
	id          *identity.Identity
	method      string
	target      string
	contentType string
	body        string
}

type response struct {
	status int
	header http.Header
	raw    []byte
	// requestID is the id the request was signed with ("" when unsigned).
	requestID string
}

// do signs req as req.id (with a fresh request id) and serves it.
func (e *env) do(req request) response {
	e.t.Helper()
	var body io.Reader
	if req.body != "" {
		body = strings.NewReader(req.body)
	}
	r := httptest.NewRequest(req.method, req.target, body)
	if req.contentType != "" {
		r.Header.Set("Content-Type", req.contentType)
	}
	var rid string
	if req.id != nil {
		id := *req.id
		id.RequestID = ids.New(ids.Request)
		rid = id.RequestID
		identity.NewSigner(testSecret, nil).Apply(r, id)
	}
	return e.serve(r, rid)
}

func (e *env) serve(r *http.Request, rid string) response {
	e.t.Helper()
	w := httptest.NewRecorder()
	e.handler.ServeHTTP(w, r)
	res := response{status: w.Code, header: w.Header(), raw: w.Body.Bytes(), requestID: rid}
	if got := res.header.Get("Request-Id"); got == "" || (rid != "" && got != rid) {
		e.t.Errorf("%s %s: Request-Id = %q, want %q", r.Method, r.URL, got, rid)
	}
	return res
}

// JSON helpers for the common cases.
func (e *env) get(id identity.Identity, target string) response {
	e.t.Helper()
	return e.do(request{id: &id, method: http.MethodGet, target: target})
}

func (e *env) postJSON(id identity.Identity, target, body string) response {
	e.t.Helper()
	return e.do(request{id: &id, method: http.MethodPost, target: target, contentType: "application/json", body: body})
}

func (e *env) postForm(id identity.Identity, target, body string) response {
	e.t.Helper()
	return e.do(request{id: &id, method: http.MethodPost, target: target, contentType: "application/x-www-form-urlencoded", body: body})
}

func (e *env) delete(id identity.Identity, target string) response {
	e.t.Helper()
	return e.do(request{id: &id, method: http.MethodDelete, target: target})
}

// mustCreate creates a customer and returns it.
func (e *env) mustCreate(id identity.Identity, body string) customerJSON {
	e.t.Helper()
	res := e.postJSON(id, "/v1/customers", body)
	var c customerJSON
	res.decode(e.t, http.StatusOK, &c)
	return c
}

// customerJSON is the customer object as a client decodes it.
type customerJSON struct {
	ID          string            `json:"id"`
	Object      string            `json:"object"`
	Created     int64             `json:"created"`
	Livemode    bool              `json:"livemode"`
	Email       *string           `json:"email"`
	Name        *string           `json:"name"`
	Description *string           `json:"description"`
	Phone       *string           `json:"phone"`
	Metadata    map[string]string `json:"metadata"`
}

type listJSON struct {
	Object  string         `json:"object"`
	URL     string         `json:"url"`
	HasMore bool           `json:"has_more"`
	Data    []customerJSON `json:"data"`
}

// decode checks the status and decodes the body into v.
func (r response) decode(t *testing.T, status int, v any) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d; body: %s", r.status, status, r.raw)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q", ct)
	}
	if err := json.Unmarshal(r.raw, v); err != nil {
		t.Fatalf("decoding %s: %v", r.raw, err)
	}
}

// fields decodes the body as a generic object, to check exact key sets.
func (r response) fields(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.raw, &m); err != nil {
		t.Fatalf("decoding %s: %v", r.raw, err)
	}
	return m
}

// wantError asserts the response is the platform's error object with the
// given status, type, code and param, and carries the request id.
type wantError struct {
	status int
	typ    string
	code   string
	param  string
}

func (r response) assertError(t *testing.T, want wantError) map[string]string {
	t.Helper()
	if r.status != want.status {
		t.Fatalf("status = %d, want %d; body: %s", r.status, want.status, r.raw)
	}
	var body struct {
		Error map[string]string `json:"error"`
	}
	if err := json.Unmarshal(r.raw, &body); err != nil || body.Error == nil {
		t.Fatalf("not an error object: %s (%v)", r.raw, err)
	}
	got := body.Error
	if got["type"] != want.typ || got["code"] != want.code || got["param"] != want.param {
		t.Errorf("error = type %q code %q param %q, want %q %q %q; message: %s",
			got["type"], got["code"], got["param"], want.typ, want.code, want.param, got["message"])
	}
	if got["message"] == "" {
		t.Error("error message is empty")
	}
	if rid := r.header.Get("Request-Id"); got["request_id"] == "" || got["request_id"] != rid {
		t.Errorf("request_id = %q, want the Request-Id header %q", got["request_id"], rid)
	}
	return got
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

// staleSigner signs as if it were ten minutes ago.
func staleSigner() *identity.Signer {
	return identity.NewSigner(testSecret, func() time.Time { return time.Now().Add(-10 * time.Minute) })
}
