package staticerror

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func TestWritesTheErrorObject(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &Handler{Code: "route_missing", Message: "Unrecognized request URL ({http.request.method} {http.request.uri.path})."}
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("DELETE", "/v1/nope", nil)
	repl := caddyhttp.NewTestReplacer(r)
	r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
	w := httptest.NewRecorder()
	w.Header().Set("Request-Id", "req_test")
	if err := h.ServeHTTP(w, r, nil); err != nil {
		t.Fatal(err)
	}
	var body struct{ Error map[string]string }
	_ = json.Unmarshal(w.Body.Bytes(), &body)
	want := map[string]string{"type": "invalid_request_error", "code": "route_missing",
		"message": "Unrecognized request URL (DELETE /v1/nope).", "request_id": "req_test"}
	if w.Code != 404 {
		t.Fatalf("status %d", w.Code)
	}
	for k, v := range want {
		if body.Error[k] != v {
			t.Errorf("%s = %q, want %q", k, body.Error[k], v)
		}
	}
	if got, _ := repl.GetString("http.api_error.code"); got != "route_missing" {
		t.Errorf("placeholder = %q", got)
	}
}

func TestValidateRefusesUnknownCodes(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	for _, h := range []*Handler{{Code: "nope"}, {Code: "route_missing", StatusCode: 302}} {
		_ = h.Provision(ctx)
		if err := h.Validate(); err == nil {
			t.Errorf("%+v validated", h)
		}
	}
}
