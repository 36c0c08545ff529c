package identity

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

var secret = []byte("test-secret")

// signed is a request as the gateway forwards it.
func signed(now time.Time) *http.Request {
	r := httptest.NewRequest("GET", "/v1/customers/cus_1?expand=x", nil)
	r.Header.Set(HeaderOrg, "org_spoofed") // a client's attempt; Apply must replace it
	NewSigner(secret, func() time.Time { return now }).Apply(r, Identity{
		OrgID: "org_1", Livemode: true, KeyID: "key_1", Scopes: []string{"customers:read"},
		RequestID: "req_1", APIVersion: "2026-11-01",
	})
	return r
}

// with changes a signed request as a replay or a tamperer would.
func with(r *http.Request, change func(r *http.Request)) *http.Request {
	change(r)
	return r
}

func TestVerifyRoundTrip(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	id, err := NewVerifier(secret, 0, func() time.Time { return now }).Verify(signed(now))
	if err != nil {
		t.Fatal(err)
	}
	if id.OrgID != "org_1" || !id.Livemode || id.KeyID != "key_1" || !id.HasScope("customers:read") ||
		id.HasScope("customers:write") || id.RequestID != "req_1" || id.APIVersion != "2026-11-01" {
		t.Fatalf("identity = %+v", id)
	}
}

func TestVerifyRefuses(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	v := NewVerifier(secret, time.Minute, func() time.Time { return now })
	for _, tc := range []struct {
		name string
		req  func() *http.Request
		want error
	}{
		{"unsigned", func() *http.Request {
			r := httptest.NewRequest("GET", "/v1/customers", nil)
			r.Header.Set(HeaderOrg, "org_1")
			return r
		}, ErrMissing},
		{"garbage", func() *http.Request {
			return with(signed(now), func(r *http.Request) { r.Header.Set(HeaderSignature, "nope") })
		}, ErrMalformed},
		{"first scheme", func() *http.Request {
			return with(signed(now), func(r *http.Request) {
				r.Header.Set(HeaderSignature, strings.Replace(r.Header.Get(HeaderSignature), "v2=", "v1=", 1))
			})
		}, ErrMalformed},
		{"stale", func() *http.Request { return signed(now.Add(-2 * time.Minute)) }, ErrStale},
		{"future", func() *http.Request { return signed(now.Add(2 * time.Minute)) }, ErrStale},
		{"org swapped", func() *http.Request {
			return with(signed(now), func(r *http.Request) { r.Header.Set(HeaderOrg, "org_2") })
		}, ErrMismatch},
		{"livemode flipped", func() *http.Request {
			return with(signed(now), func(r *http.Request) { r.Header.Set(HeaderLivemode, "false") })
		}, ErrMismatch},
		{"scopes widened", func() *http.Request {
			return with(signed(now), func(r *http.Request) { r.Header.Set(HeaderScopes, "*") })
		}, ErrMismatch},
		{"replayed with another method", func() *http.Request {
			return with(signed(now), func(r *http.Request) { r.Method = "DELETE" })
		}, ErrMismatch},
		{"replayed on another path", func() *http.Request {
			return with(signed(now), func(r *http.Request) { r.URL.Path = "/v1/customers/cus_2" })
		}, ErrMismatch},
		{"replayed with another query", func() *http.Request {
			return with(signed(now), func(r *http.Request) { r.URL.RawQuery = "expand=y" })
		}, ErrMismatch},
		{"other secret", func() *http.Request {
			r := httptest.NewRequest("GET", "/v1/customers", nil)
			NewSigner([]byte("other"), func() time.Time { return now }).Apply(r, Identity{OrgID: "org_1"})
			return r
		}, ErrMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := v.Verify(tc.req()); !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestMiddleware(t *testing.T) {
	now := time.Now()
	v := NewVerifier(secret, 0, nil)
	h := v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := FromContext(r.Context())
		w.Write([]byte(id.OrgID))
	}))

	req := signed(now)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 || rec.Body.String() != "org_1" {
		t.Fatalf("signed request: %d %s", rec.Code, rec.Body)
	}

	req = httptest.NewRequest("GET", "/v1/customers", nil)
	req.Header.Set(HeaderOrg, "org_1")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 401 {
		t.Fatalf("unsigned request: status %d", rec.Code)
	}
}

func BenchmarkApply(b *testing.B) {
	s := NewSigner(secret, nil)
	id := Identity{OrgID: "org_1", Livemode: true, KeyID: "key_1", Scopes: []string{"*"}, RequestID: "req_1", APIVersion: "2026-11-01"}
	r := httptest.NewRequest("GET", "/v1/customers/cus_1", nil)
	b.ReportAllocs()
	for b.Loop() {
		s.Apply(r, id)
	}
}
