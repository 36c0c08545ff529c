package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/controlplane/router"
	"github.com/gatehouse/gatehouse/controlplane/server"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

var secret = []byte("test-identity-secret")

func signed(r *http.Request, sec []byte) *http.Request {
	identity.NewSigner(sec, nil).Apply(r, identity.Identity{
		OrgID: "org_A", KeyID: "key_A", Scopes: []string{identity.AllScopes},
		RequestID: "req_fromgateway", APIVersion: "2026-11-01",
	})
	return r
}

func TestHandlers(t *testing.T) {
	db, _ := testenv.Pool(t)
	// A pool whose server refuses connections: the database is "down".
	down, err := pgxpool.New(context.Background(), "postgres://gatehouse@127.0.0.1:1/none?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(down.Close)
	up := server.New(server.Config{DB: db, IdentitySecret: secret}).Handler()
	broken := server.New(server.Config{DB: down, IdentitySecret: secret}).Handler()

	for _, tc := range []struct {
		name      string
		handler   http.Handler
		req       *http.Request
		status    int
		errType   string // expected error object type; "" for none
		errCode   string
		requestID string // expected Request-Id; "" for any generated one
		body      string // substring of a non-error body
	}{
		{"healthz", up, httptest.NewRequest("GET", "/healthz", nil), 200, "", "", "", `"ok"`},
		{"healthz while postgres is down", broken, httptest.NewRequest("GET", "/healthz", nil), 200, "", "", "", `"ok"`},
		{"readyz", up, httptest.NewRequest("GET", "/readyz", nil), 200, "", "", "", `"ready"`},
		{"readyz while postgres is down", broken, httptest.NewRequest("GET", "/readyz", nil), 503, "api_error", "dependency_unavailable", "", ""},
		{"v1 without identity", up, httptest.NewRequest("GET", "/v1/events", nil), 401, "authentication_error", "identity_invalid", "", ""},
		{"v1 with a forged identity", up, signed(httptest.NewRequest("GET", "/v1/events", nil), []byte("wrong")), 401,
			"authentication_error", "identity_invalid", "req_fromgateway", ""},
		{"v1 events with identity: not built yet", up, signed(httptest.NewRequest("GET", "/v1/events", nil), secret), 404,
			"invalid_request_error", "route_missing", "req_fromgateway", ""},
		{"v1 webhook endpoints with identity", up, signed(httptest.NewRequest("POST", "/v1/webhook-endpoints", strings.NewReader("{}")), secret), 404,
			"invalid_request_error", "route_missing", "req_fromgateway", ""},
		{"v1 in another case", up, signed(httptest.NewRequest("GET", "/V1/EVENTS", nil), secret), 404,
			"invalid_request_error", "route_missing", "req_fromgateway", ""},
		{"dashboard placeholder", up, httptest.NewRequest("GET", "/", nil), 200, "", "", "", "coming soon"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			tc.handler.ServeHTTP(rec, tc.req)
			if rec.Code != tc.status {
				t.Fatalf("status = %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			rid := rec.Header().Get("Request-Id")
			if tc.requestID != "" && rid != tc.requestID || rid == "" {
				t.Errorf("Request-Id = %q, want %q", rid, tc.requestID)
			}
			if tc.errType == "" {
				if !strings.Contains(rec.Body.String(), tc.body) {
					t.Errorf("body = %q, want it to contain %q", rec.Body, tc.body)
				}
				return
			}
			var obj struct{ Error map[string]string }
			if err := json.Unmarshal(rec.Body.Bytes(), &obj); err != nil || obj.Error == nil {
				t.Fatalf("not an error object: %q", rec.Body)
			}
			if obj.Error["type"] != tc.errType || obj.Error["code"] != tc.errCode || obj.Error["request_id"] != rid {
				t.Fatalf("error = %v, want %s/%s with request id %s", obj.Error, tc.errType, tc.errCode, rid)
			}
		})
	}
}

// TestServeShutsDownOnContext runs the real server on a loopback port and
// checks it answers, then returns cleanly once its context ends.
// An unsigned request cannot put what it likes into the response's
// Request-Id, its error object or the logs.
func TestImplausibleRequestIDIsNotEchoed(t *testing.T) {
	h := server.New(server.Config{IdentitySecret: secret}).Handler()
	for _, bad := range []string{"evil id \"quoted\" <b>", strings.Repeat("x", 5000)} {
		r := httptest.NewRequest("GET", "/v1/events", nil)
		r.Header.Set("Request-Id", bad)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if got := w.Header().Get("Request-Id"); w.Code != 401 || !strings.HasPrefix(got, "req_") ||
			strings.Contains(w.Body.String(), "evil") || strings.Contains(w.Body.String(), "xxxx") {
			t.Errorf("%d, Request-Id %.40q, body %.200s", w.Code, got, w.Body)
		}
	}
}

func TestServeShutsDownOnContext(t *testing.T) {
	db, _ := testenv.Pool(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.New(server.Config{DB: db, IdentitySecret: secret}).Serve(ctx, ln) }()

	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "ok") {
		t.Fatalf("healthz = %d %s", resp.StatusCode, body)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the context ended")
	}
	if _, err := http.Get("http://" + ln.Addr().String() + "/healthz"); err == nil {
		t.Fatal("still serving after shutdown")
	}
}

// stuck is a /v1 route that waits until its request's context ends, as a
// query stuck in Postgres does.
type stuck struct{ started, cancelled chan struct{} }

func (s stuck) Register(r *router.Router) {
	r.HandleFunc("GET /v1/stuck", func(w http.ResponseWriter, req *http.Request) {
		close(s.started)
		<-req.Context().Done()
		close(s.cancelled)
	})
}

// A request still running when the shutdown's deadline ends is cancelled,
// so its query returns the connection and the process can close its pool
// and exit; it used to run on until Postgres answered.
func TestShutdownCancelsRequestsPastTheDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := stuck{started: make(chan struct{}), cancelled: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- server.New(server.Config{IdentitySecret: secret, API: []router.Routes{s}, ShutdownTimeout: 200 * time.Millisecond}).Serve(ctx, ln)
	}()
	go func() {
		req := signed(httptest.NewRequest("GET", "http://"+ln.Addr().String()+"/v1/stuck", nil), secret)
		req.RequestURI = ""
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_ = resp.Body.Close()
		}
	}()
	<-s.started
	cancel()
	select {
	case <-s.cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the request's context was not cancelled after the shutdown deadline")
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
}
