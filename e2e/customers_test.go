package e2e

import (
	"strings"
	"testing"
)

// TestCustomerThroughGateway is the foundation's promise: a customer created
// through :8080 is answered by the sample API and can be fetched back, and a
// bad request gets the platform's error object.
func TestCustomerThroughGateway(t *testing.T) {
	tn := seed(t)

	created := call(t, "POST", "/v1/customers", tn.SandboxKey, "application/json",
		`{"email":"ada@example.com","name":"Ada Lovelace","metadata":{"plan":"pro"}}`)
	if created.Status != 200 {
		t.Fatalf("create: %d %s", created.Status, created.Raw)
	}
	id, _ := created.Body["id"].(string)
	if !strings.HasPrefix(id, "cus_") || created.Body["livemode"] != false || created.Body["object"] != "customer" {
		t.Fatalf("create returned %s", created.Raw)
	}
	if rid := created.Header.Get("Request-Id"); !strings.HasPrefix(rid, "req_") {
		t.Fatalf("Request-Id = %q", rid)
	}

	got := call(t, "GET", "/v1/customers/"+id, tn.SandboxKey, "", "")
	if got.Status != 200 || got.Body["email"] != "ada@example.com" || got.Body["name"] != "Ada Lovelace" {
		t.Fatalf("fetch: %d %s", got.Status, got.Raw)
	}

	form := call(t, "POST", "/v1/customers", tn.SandboxKey, "application/x-www-form-urlencoded",
		"email=grace%40example.com&metadata[team]=navy")
	if form.Status != 200 || form.Body["email"] != "grace@example.com" {
		t.Fatalf("form create: %d %s", form.Status, form.Raw)
	}

	// The live key sees neither: environments never mix.
	if live := call(t, "GET", "/v1/customers/"+id, tn.LiveKey, "", ""); live.Status != 404 {
		t.Fatalf("live key fetched a sandbox customer: %d %s", live.Status, live.Raw)
	}
}

func TestBadRequestGetsTheErrorObject(t *testing.T) {
	tn := seed(t)
	for _, tc := range []struct {
		name, body     string
		status         int
		typ, code, prm string
	}{
		{"bad email", `{"email":"not-an-email"}`, 400, "invalid_request_error", "parameter_invalid", "email"},
		{"unknown field", `{"emial":"a@b.co"}`, 400, "invalid_request_error", "parameter_unknown", "emial"},
		{"malformed json", `{"email":`, 400, "invalid_request_error", "body_invalid", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := call(t, "POST", "/v1/customers", tn.SandboxKey, "application/json", tc.body)
			e := r.errObj()
			if r.Status != tc.status || e == nil || e["type"] != tc.typ || e["code"] != tc.code {
				t.Fatalf("got %d %s", r.Status, r.Raw)
			}
			if tc.prm != "" && e["param"] != tc.prm {
				t.Fatalf("param = %v, want %s", e["param"], tc.prm)
			}
			if e["request_id"] != r.Header.Get("Request-Id") || !strings.HasPrefix(e["request_id"].(string), "req_") {
				t.Fatalf("request_id %v does not match header %q", e["request_id"], r.Header.Get("Request-Id"))
			}
			if doc, _ := e["doc_url"].(string); !strings.HasSuffix(doc, "#"+tc.code) {
				t.Fatalf("doc_url = %q", doc)
			}
		})
	}

	if r := call(t, "GET", "/v1/customers", "", "", ""); r.Status != 401 || r.errObj()["type"] != "authentication_error" {
		t.Fatalf("no key: %d %s", r.Status, r.Raw)
	}
	if r := call(t, "GET", "/v1/nothing-here", tn.SandboxKey, "", ""); r.Status != 404 || r.errObj()["code"] != "route_missing" {
		t.Fatalf("unknown route: %d %s", r.Status, r.Raw)
	}
}
