package apierror

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestWriteRendersTheErrorObject(t *testing.T) {
	rec := httptest.NewRecorder()
	rec.Header().Set("Request-Id", "req_123")
	Write(rec, fmt.Errorf("creating customer: %w", ParameterMissing("email")))

	if rec.Code != 400 {
		t.Fatalf("status = %d, want 400", rec.Code)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content-type = %q", ct)
	}
	var got struct{ Error map[string]string }
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"type": "invalid_request_error", "code": "parameter_missing", "param": "email",
		"message": "Missing required param: email.", "request_id": "req_123",
		"doc_url": DefaultDocsBase + "#parameter_missing",
	}
	for k, v := range want {
		if got.Error[k] != v {
			t.Errorf("%s = %q, want %q", k, got.Error[k], v)
		}
	}
}

func TestWriteHidesInternalErrors(t *testing.T) {
	rec := httptest.NewRecorder()
	Write(rec, errors.New("pq: password authentication failed for user admin"))
	if rec.Code != 500 {
		t.Fatalf("status = %d", rec.Code)
	}
	if got := rec.Body.String(); contains(got, "password") {
		t.Fatalf("internal detail leaked: %s", got)
	}
}

func TestRetryAfterHeader(t *testing.T) {
	rec := httptest.NewRecorder()
	e := New(429, TypeRateLimit, "rate_limited", "slow down")
	e.RetryAfter = 3
	Write(rec, e)
	if rec.Header().Get("Retry-After") != "3" {
		t.Fatalf("Retry-After = %q", rec.Header().Get("Retry-After"))
	}
}

func TestCodesAreUniqueAndTyped(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range Codes {
		if seen[c.Code] {
			t.Errorf("duplicate code %s", c.Code)
		}
		seen[c.Code] = true
		if c.Status < 400 || c.Description == "" || c.Type == "" {
			t.Errorf("code %s incomplete: %+v", c.Code, c)
		}
		if !StatusFits(c.Type, c.Status) {
			t.Errorf("code %s: status %d does not fit its type %s", c.Code, c.Status, c.Type)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func TestBadURL(t *testing.T) {
	for target, want := range map[string]int{
		"/v1/customers?limit=3":         0,
		"/v1/customers/":                0,
		"/v1/customers/.":               404,
		"/v1//customers":                404,
		"//":                            404,
		"/v1/webhook-deliveries/./x":    404,
		"/v1/customers/%2F..":           404,
		"/v1/customers?limit=%zz":       400,
		"/v1/customers?limit=1;limit=2": 400,
		"/v1/customers?%":               400,
	} {
		r := httptest.NewRequest("GET", target, nil)
		got := 0
		if err := BadURL(r); err != nil {
			got = err.Status
		}
		if got != want {
			t.Errorf("%s: %d, want %d", target, got, want)
		}
	}
}

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"Acme", "Café Ünïcode", "ACME 👩‍💻 (prod)", "a-b_c.d"} {
		if err := CheckName("name", ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"Evil\norg_FAKE", "tab\there", "title\x1b]0;owned\x07", "del\x7f", "c1\u0085", "rlo\u202eexe.txt", "iso\u2066x", "nul\x00", "bad\xff"} {
		if err := CheckName("name", bad); err == nil || From(err).Param != "name" || From(err).Status != 400 {
			t.Errorf("%q accepted or wrongly refused: %v", bad, err)
		}
	}
}
