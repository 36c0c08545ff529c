package router_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/controlplane/router"
)

// widgets is a capability as later packages will write one.
type widgets struct{}

func (widgets) Register(r *router.Router) {
	r.HandleFunc("GET /v1/widgets/{id}", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(r.PathValue("id")))
	})
	r.HandleFunc("POST /v1/widgets", func(w http.ResponseWriter, r *http.Request) {
		var tooLarge *http.MaxBytesError
		if _, err := io.ReadAll(r.Body); errors.As(err, &tooLarge) {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
		w.WriteHeader(http.StatusCreated)
	})
}

func TestRouter(t *testing.T) {
	h := router.New(widgets{})
	for _, tc := range []struct {
		name   string
		method string
		path   string
		body   string
		status int
		code   string // error code; "" for a handled request
		allow  string
		text   string
	}{
		{"registered route", "GET", "/v1/widgets/wid_1", "", 200, "", "", "wid_1"},
		{"unknown path", "GET", "/v1/gadgets", "", 404, "route_missing", "", ""},
		{"prefix of a route", "GET", "/v1/widgets", "", 405, "method_not_allowed", "POST", ""},
		{"wrong method", "DELETE", "/v1/widgets/wid_1", "", 405, "method_not_allowed", "GET, HEAD", ""},
		{"body within limit", "POST", "/v1/widgets", strings.Repeat("x", router.MaxBodyBytes), 201, "", "", ""},
		{"body over limit", "POST", "/v1/widgets", strings.Repeat("x", router.MaxBodyBytes+1), 413, "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body)))
			if rec.Code != tc.status {
				t.Fatalf("status = %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if tc.allow != "" && rec.Header().Get("Allow") != tc.allow {
				t.Errorf("Allow = %q, want %q", rec.Header().Get("Allow"), tc.allow)
			}
			if tc.code == "" {
				if rec.Body.String() != tc.text {
					t.Errorf("body = %q", rec.Body)
				}
				return
			}
			var body struct{ Error map[string]string }
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("not an error object: %q", rec.Body)
			}
			if body.Error["code"] != tc.code || body.Error["type"] != "invalid_request_error" || body.Error["message"] == "" {
				t.Fatalf("error = %v", body.Error)
			}
		})
	}
}
