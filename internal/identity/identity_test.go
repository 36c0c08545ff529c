package identity

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

var secret = []byte("test-secret")

func signed(now time.Time) http.Header {
	h := http.Header{}
	h.Set(HeaderOrg, "org_spoofed") // a client's attempt; Apply must replace it
	NewSigner(secret, func() time.Time { return now }).Apply(h, Identity{
		OrgID: "org_1", Livemode: true, KeyID: "key_1", Scopes: []string{"customers:read"},
		RequestID: "req_1", APIVersion: "2026-11-01",
	})
	return h
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
		name   string
		header func() http.Header
		want   error
	}{
		{"unsigned", func() http.Header { h := http.Header{}; h.Set(HeaderOrg, "org_1"); return h }, ErrMissing},
		{"garbage", func() http.Header { h := signed(now); h.Set(HeaderSignature, "nope"); return h }, ErrMalformed},
		{"stale", func() http.Header { return signed(now.Add(-2 * time.Minute)) }, ErrStale},
		{"future", func() http.Header { return signed(now.Add(2 * time.Minute)) }, ErrStale},
		{"org swapped", func() http.Header { h := signed(now); h.Set(HeaderOrg, "org_2"); return h }, ErrMismatch},
		{"livemode flipped", func() http.Header { h := signed(now); h.Set(HeaderLivemode, "false"); return h }, ErrMismatch},
		{"scopes widened", func() http.Header { h := signed(now); h.Set(HeaderScopes, "*"); return h }, ErrMismatch},
		{"other secret", func() http.Header {
			h := http.Header{}
			NewSigner([]byte("other"), func() time.Time { return now }).Apply(h, Identity{OrgID: "org_1"})
			return h
		}, ErrMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := v.Verify(tc.header()); !errors.Is(err, tc.want) {
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

	req := httptest.NewRequest("GET", "/v1/customers", nil)
	req.Header = signed(now)
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
	h := http.Header{}
	b.ReportAllocs()
	for b.Loop() {
		s.Apply(h, id)
	}
}
