package idempotency

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/apierror"
)

func TestRecordedHeaderKeepsOnlyTheUpstreamsHeaders(t *testing.T) {
	before := http.Header{
		"Request-Id":       {"req_1"},
		"Ratelimit":        {`"default";r=9`},
		"Ratelimit-Policy": {`"default";q=10;w=1`},
		"Api-Version":      {"2026-11-01"},
		"Cache-Control":    {"private"},
	}
	final := before.Clone()
	for k, v := range map[string][]string{
		"Content-Type":      {"application/json"},
		"Location":          {"/v1/customers/cus_1"},
		"Cache-Control":     {"no-store"}, // changed by the upstream: kept
		"Set-Cookie":        {"session=secret"},
		"Date":              {"Mon, 01 Jan 2026 00:00:00 GMT"},
		"Content-Length":    {"42"},
		"Connection":        {"close"},
		"Transfer-Encoding": {"chunked"},
		"Retry-After":       {"30"},
		"Trailer:Grpc":      {"x"},
		"Ratelimit-Extra":   {"x"},
	} {
		final[k] = v
	}
	got := recordedHeader(final, before)
	want := http.Header{
		"Content-Type":  {"application/json"},
		"Location":      {"/v1/customers/cus_1"},
		"Cache-Control": {"no-store"},
		"Retry-After":   {"30"},
		"Api-Version":   {"2026-11-01"}, // the version the body is in, for a retry asking for another
	}
	if len(got) != len(want) {
		t.Fatalf("recorded %v, want %v", got, want)
	}
	for k, v := range want {
		if got.Get(k) != v[0] {
			t.Errorf("%s = %q, want %q", k, got.Get(k), v[0])
		}
	}
}

func TestReadBodyHonoursTheLimitInFront(t *testing.T) {
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(strings.Repeat("a", 50)))
	r.ContentLength = -1
	r.Body = http.MaxBytesReader(httptest.NewRecorder(), r.Body, 10) // request_body max_size 10
	_, err := readBody(r, 100)
	var e *apierror.Error
	if !errors.As(err, &e) || e.Status != http.StatusRequestEntityTooLarge || e.Code != "body_too_large" {
		t.Fatalf("err = %v", err)
	}
}
