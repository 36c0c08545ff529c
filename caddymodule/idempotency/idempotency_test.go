package idempotency

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	_ "github.com/gatehouse/gatehouse/caddymodule/requestid"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/apikey"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/redact"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

func TestInvalidKeysAreRefusedBeforeExecution(t *testing.T) {
	_, prefix := testRedis(t)
	up := newUpstream(t)
	gw := startGateway(t, up, prefix, nil)

	cases := []struct {
		name string
		keys []string
	}{
		{"empty", []string{""}},
		{"256 characters", []string{strings.Repeat("k", 256)}},
		{"control character (tab)", []string{"abc\tdef"}},
		{"non-ASCII", []string{"clé-1"}},
		{"two headers", []string{"key-a", "key-b"}},
		{"two identical headers", []string{"key-a", "key-a"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := gw.do(t, req{keys: tc.keys, body: `{}`})
			if r.status != http.StatusBadRequest {
				t.Fatalf("status = %d, want 400; body %s", r.status, r.body)
			}
			e := r.apiError(t)
			if e["type"] != "invalid_request_error" || e["code"] != "idempotency_key_invalid" || e["param"] != "Idempotency-Key" {
				t.Fatalf("error = %v", e)
			}
			if e["request_id"] == "" || e["request_id"] != r.header.Get("Request-Id") {
				t.Fatalf("request_id %q does not match Request-Id %q", e["request_id"], r.header.Get("Request-Id"))
			}
		})
	}
	if n := up.count.Load(); n != 0 {
		t.Fatalf("upstream executed %d times for invalid keys", n)
	}

	// The boundary itself is fine.
	if r := gw.do(t, req{key: strings.Repeat("k", 255), body: `{}`}); r.status != http.StatusCreated {
		t.Fatalf("255-character key: status %d, body %s", r.status, r.body)
	}
}

func TestRetryReplaysTheRecordedResponse(t *testing.T) {
	_, prefix := testRedis(t)
	up := newUpstream(t)
	gw := startGateway(t, up, prefix, nil)
	key := newKey()

	first := gw.do(t, req{key: key, body: `{"email":"a@example.com"}`})
	if first.status != http.StatusCreated {
		t.Fatalf("first: status %d, body %s", first.status, first.body)
	}
	if first.header.Get("Idempotent-Replayed") != "" {
		t.Fatal("the original response claims to be a replay")
	}
	if !strings.Contains(first.body, `"idempotency_key":"`+key+`"`) {
		t.Fatalf("the upstream did not get the Idempotency-Key: %s", first.body)
	}
	second := gw.do(t, req{key: key, body: `{"email":"a@example.com"}`})

	if n := up.count.Load(); n != 1 {
		t.Fatalf("upstream executed %d times, want 1", n)
	}
	if second.status != first.status || second.body != first.body {
		t.Fatalf("replay differs:\nfirst  %d %s\nsecond %d %s", first.status, first.body, second.status, second.body)
	}
	for _, h := range []string{"Content-Type", "Location", "X-Upstream", "Content-Length"} {
		if got, want := second.header.Get(h), first.header.Get(h); got != want || got == "" {
			t.Errorf("replayed %s = %q, original %q", h, got, want)
		}
	}
	if second.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("Idempotent-Replayed = %q", second.header.Get("Idempotent-Replayed"))
	}
	origID, replayID := first.header.Get("Request-Id"), second.header.Get("Request-Id")
	if replayID == "" || replayID == origID {
		t.Errorf("replay Request-Id = %q, original %q: the replay needs its own", replayID, origID)
	}
	if got := second.header.Get("Original-Request-Id"); got != origID {
		t.Errorf("Original-Request-Id = %q, want %q", got, origID)
	}
	if got := second.header.Values("RateLimit"); len(got) != 1 {
		t.Errorf("replay carries RateLimit %q: the stored copy leaked into the replay", got)
	}
	if first.header.Get("Set-Cookie") == "" || second.header.Get("Set-Cookie") != "" {
		t.Errorf("Set-Cookie: original %q, replay %q (cookies are not stored)", first.header.Get("Set-Cookie"), second.header.Get("Set-Cookie"))
	}

	// Placeholders for the request log.
	for id, want := range map[string]map[string]string{
		origID:   {"key": key, "replayed": "false", "original_request_id": ""},
		replayID: {"key": key, "replayed": "true", "original_request_id": origID},
	} {
		v, ok := placeholders.Load(id)
		if !ok {
			t.Fatalf("no placeholders noted for %s", id)
		}
		if got := v.(map[string]string); !equalMaps(got, want) {
			t.Errorf("placeholders of %s = %v, want %v", id, got, want)
		}
	}
}

// TestReplayKeepsHeaderBytes: HTTP lets header values carry bytes beyond
// ASCII (obs-text, e.g. a Latin-1 file name); the replay must carry the
// same bytes, not U+FFFD in their place.
func TestReplayKeepsHeaderBytes(t *testing.T) {
	_, prefix := testRedis(t)
	up := newUpstream(t)
	gw := startGateway(t, up, prefix, nil)
	q := req{key: newKey(), path: "/v1/latin1", body: `{}`}
	first := gw.do(t, q)
	replay := gw.do(t, q)
	const want = "attachment; filename=\"caf\xe9.csv\""
	if got := first.header.Get("Content-Disposition"); got != want {
		t.Fatalf("original Content-Disposition %q, want %q", got, want)
	}
	if replay.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry: %d %s, not a replay", replay.status, replay.body)
	}
	if got := replay.header.Get("Content-Disposition"); got != want {
		t.Fatalf("replayed Content-Disposition %q, original %q", got, want)
	}
}

// A replay's body is in the API version of the original request: the replay
// says so, whichever version the retry asked for (api_key, in front, set the
// retry's own on it).
func TestReplayNamesTheOriginalsAPIVersion(t *testing.T) {
	_, prefix := testRedis(t)
	up := newUpstream(t)
	gw := startGateway(t, up, prefix, nil)
	key := newKey()
	first := gw.do(t, req{key: key, body: `{}`, version: "2026-06-01"})
	replay := gw.do(t, req{key: key, body: `{}`, version: "2026-11-01"})
	if first.header.Get("Api-Version") != "2026-06-01" || replay.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("first %d %v, retry %d %v", first.status, first.header, replay.status, replay.header)
	}
	if got := replay.header.Get("Api-Version"); got != "2026-06-01" {
		t.Fatalf("the replay of a 2026-06-01 response says Api-Version %q", got)
	}
}

// A replay goes to whichever client retries, with whatever Accept-Encoding
// it sends, so the record is kept in no content coding: a backend's gzip
// for the first client must not reach a retry that cannot decode it.
func TestReplayIsNotInTheFirstClientsEncoding(t *testing.T) {
	_, prefix := testRedis(t)
	up := newUpstream(t)
	gw := startGateway(t, up, prefix, nil)
	key := newKey()
	first := gw.do(t, req{key: key, path: "/v1/gzip", body: `{}`, accept: "gzip"})
	replay := gw.do(t, req{key: key, path: "/v1/gzip", body: `{}`, accept: "identity"})
	if replay.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry: %d %s, not a replay", replay.status, replay.body)
	}
	for name, r := range map[string]resp{"first answer": first, "replay": replay} {
		var o struct{ ID string }
		if ce := r.header.Get("Content-Encoding"); ce != "" || json.Unmarshal([]byte(r.body), &o) != nil || o.ID != "cus_1" {
			t.Fatalf("%s: Content-Encoding %q, body %q; want the plain JSON of cus_1", name, ce, r.body)
		}
	}
	if replay.body != first.body {
		t.Fatalf("replay %q, first answer %q", replay.body, first.body)
	}
}

func TestServerErrorsAreRecordedAndReplayed(t *testing.T) {
	_, prefix := testRedis(t)
	up := newUpstream(t)
	gw := startGateway(t, up, prefix, nil)
	key := newKey()

	first := gw.do(t, req{key: key, path: "/v1/fail", body: `{}`})
	second := gw.do(t, req{key: key, path: "/v1/fail", body: `{}`})
	if first.status != 500 || second.status != 500 || first.body != second.body {
		t.Fatalf("first %d %s, second %d %s", first.status, first.body, second.status, second.body)
	}
	if second.header.Get("Idempotent-Replayed") != "true" {
		t.Fatal("the 500 was not replayed")
	}
	if n := up.count.Load(); n != 1 {
		t.Fatalf("upstream executed %d times, want 1", n)
	}
}

func TestKeyReusedForADifferentRequest(t *testing.T) {
	_, prefix := testRedis(t)
	up := newUpstream(t)
	gw := startGateway(t, up, prefix, nil)
	key := newKey()
	if r := gw.do(t, req{key: key, path: "/v1/ok?expand=a", body: `{"amount":100}`}); r.status != http.StatusCreated {
		t.Fatalf("first: %d %s", r.status, r.body)
	}

	cases := []struct {
		name string
		req  req
	}{
		{"different body", req{path: "/v1/ok?expand=a", body: `{"amount":200}`}},
		{"different path", req{path: "/v1/other?expand=a", body: `{"amount":100}`}},
		{"different query", req{path: "/v1/ok?expand=b", body: `{"amount":100}`}},
		{"different method", req{method: http.MethodPatch, path: "/v1/ok?expand=a", body: `{"amount":100}`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q := tc.req
			q.key = key
			r := gw.do(t, q)
			if r.status != http.StatusUnprocessableEntity {
				t.Fatalf("status = %d, want 422; body %s", r.status, r.body)
			}
			e := r.apiError(t)
			if e["type"] != "idempotency_error" || e["code"] != "idempotency_key_reused" || !strings.Contains(e["message"], key) {
				t.Fatalf("error = %v", e)
			}
		})
	}
	if n := up.count.Load(); n != 1 {
		t.Fatalf("upstream executed %d times, want 1", n)
	}
}

func TestRetryWhileInFlightGets409(t *testing.T) {
	_, prefix := testRedis(t)
	up := newUpstream(t)
	gw := startGateway(t, up, prefix, nil)
	key := newKey()

	firstDone := make(chan resp, 1)
	go func() {
		r, err := gw.send(req{key: key, path: "/v1/block", body: `{}`})
		if err != nil {
			t.Error(err)
		}
		firstDone <- r
	}()
	<-up.started

	r := gw.do(t, req{key: key, path: "/v1/block", body: `{}`})
	if r.status != http.StatusConflict {
		t.Fatalf("status = %d, want 409; body %s", r.status, r.body)
	}
	if e := r.apiError(t); e["type"] != "idempotency_error" || e["code"] != "idempotency_key_in_use" {
		t.Fatalf("error = %v", e)
	}
	if got := r.header.Get("Retry-After"); got != "1" {
		t.Fatalf("Retry-After = %q, want 1", got)
	}

	up.releaseAll()
	first := <-firstDone
	if first.status != http.StatusCreated {
		t.Fatalf("first: %d %s", first.status, first.body)
	}
	again := gw.do(t, req{key: key, path: "/v1/block", body: `{}`})
	if again.status != http.StatusCreated || again.body != first.body || again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("after completion: %d %q replayed=%q", again.status, again.body, again.header.Get("Idempotent-Replayed"))
	}
	if n := up.count.Load(); n != 1 {
		t.Fatalf("upstream executed %d times, want 1", n)
	}
}

// TestConcurrentRetriesExecuteOnce is the concurrency proof: 50 clients
// send the same keyed POST at the same instant.
func TestConcurrentRetriesExecuteOnce(t *testing.T) {
	_, prefix := testRedis(t)
	up := newUpstream(t)
	gw := startGateway(t, up, prefix, nil)
	key := newKey()
	const clients = 50

	start := make(chan struct{})
	results := make(chan resp, clients)
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r, err := gw.send(req{key: key, path: "/v1/block", body: `{"amount":100}`})
			if err != nil {
				t.Error(err)
			}
			results <- r
		}()
	}
	close(start)

	// Hold the one execution until every other client has its answer, so
	// the race for the lock is as wide as it can be; then let it finish.
	var got []resp
	for len(got) < clients-1 {
		select {
		case r := <-results:
			got = append(got, r)
		case <-time.After(20 * time.Second):
			t.Fatalf("only %d of %d clients answered while the first was in flight", len(got), clients-1)
		}
	}
	up.releaseAll()
	wg.Wait()
	close(results)
	for r := range results {
		got = append(got, r)
	}

	if n := up.count.Load(); n != 1 {
		t.Fatalf("upstream executed %d times, want exactly 1", n)
	}
	var original *resp
	for i, r := range got {
		if r.status == http.StatusCreated && r.header.Get("Idempotent-Replayed") == "" {
			if original != nil {
				t.Fatalf("two original answers:\n%s\n%s", original.body, r.body)
			}
			original = &got[i]
		}
	}
	if original == nil {
		t.Fatal("no client got the original answer")
	}
	counts := map[string]int{}
	for _, r := range got {
		switch {
		case r.status == http.StatusConflict && r.apiError(t)["code"] == "idempotency_key_in_use":
			counts["409"]++
		case r.status == http.StatusCreated && r.body == original.body:
			if r.header.Get("Idempotent-Replayed") == "true" {
				counts["replayed"]++
			} else {
				counts["original"]++
			}
		default:
			t.Fatalf("unexpected answer %d %s", r.status, r.body)
		}
	}
	t.Logf("answers: %v", counts)
}

// TestDeadGatewayLockExpires is the crash proof. Gateway B takes the lock
// and never finishes (as if it died); gateway A, sharing Redis, answers 409
// until B's lock expires, then executes exactly once. When B finally wakes,
// its completion is refused because it no longer owns the key.
func TestDeadGatewayLockExpires(t *testing.T) {
	rdb, prefix := testRedis(t)
	up := newUpstream(t)
	base := settings{"key_prefix": prefix, "ttl": "10m"}
	withLock := func(ttl string) settings {
		s := settings{"lock_ttl": ttl}
		for k, v := range base {
			s[k] = v
		}
		return s
	}
	dead, wake := newGate()
	gws := startCaddy(t,
		serverSpec{settings: withLock("10s"), next: proxyTo(up.addr())},
		serverSpec{settings: withLock("300ms"), next: dead},
	)
	t.Cleanup(wake) // runs before Caddy stops, should the test fail early
	a, b := gws[0], gws[1]
	key := newKey()
	q := req{key: key, body: `{"amount":100}`}
	lockLost := counterValue(metrics.records.WithLabelValues(recordLockLost))

	deadDone := make(chan resp, 1)
	go func() {
		r, _ := b.send(q)
		deadDone <- r
	}()
	rkey := prefix + "org_a:test:" + key
	eventually(t, 5*time.Second, "gateway B to take the lock", func() bool {
		return rdb.HGet(context.Background(), rkey, "st").Val() == stateLocked
	})

	if r := a.do(t, q); r.status != http.StatusConflict {
		t.Fatalf("while B holds the lock: %d %s", r.status, r.body)
	}
	var executed resp
	eventually(t, 5*time.Second, "B's lock to expire", func() bool {
		executed = a.do(t, q)
		return executed.status != http.StatusConflict
	})
	executed.mustBeExecuted(t, "after expiry")

	wake() // the dead gateway wakes up and tries to record
	<-deadDone
	if got := counterValue(metrics.records.WithLabelValues(recordLockLost)); got != lockLost+1 {
		t.Errorf("lock_lost records = %v, want %v", got, lockLost+1)
	}

	replay := a.do(t, q)
	if replay.body != executed.body || replay.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("the stale owner overwrote the record: %d %s", replay.status, replay.body)
	}
	if n := up.count.Load(); n != 1 {
		t.Fatalf("upstream executed %d times, want 1", n)
	}
}

// A 503 with Retry-After says the backend did not act, whatever its size:
// one too large to hold is passed on, and the retry executes, rather than
// getting 422 for a request that never ran.
func TestTooLargeRefusalIsNotKept(t *testing.T) {
	_, prefix := testRedis(t)
	up := newUpstream(t)
	gw := startGateway(t, up, prefix, settings{"max_response_size": 1000})
	q := req{key: newKey(), path: "/v1/busy?size=5000"}
	if r := gw.do(t, q); r.status != http.StatusServiceUnavailable || len(r.body) != 5000 {
		t.Fatalf("first: %d, %d bytes", r.status, len(r.body))
	}
	if r := gw.do(t, q); r.status != http.StatusServiceUnavailable || up.count.Load() != 2 {
		t.Fatalf("retry after a large 503 with Retry-After: %d %.200s, upstream ran %d times; want it executed again",
			r.status, r.body, up.count.Load())
	}
}

func TestTooLargeResponseIsStreamedButNotStored(t *testing.T) {
	_, prefix := testRedis(t)
	up := newUpstream(t)
	gw := startGateway(t, up, prefix, settings{"max_response_size": 1000})
	key := newKey()

	for _, size := range []string{"999", "1000"} {
		q := req{key: newKey(), path: "/v1/huge?size=" + size}
		if r := gw.do(t, q); r.status != 200 || len(r.body) != atoi(size) {
			t.Fatalf("size %s: %d, %d bytes", size, r.status, len(r.body))
		}
		if r := gw.do(t, q); r.header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("size %s at the limit was not stored: %d %s", size, r.status, r.body)
		}
	}
	before := up.count.Load()

	first := gw.do(t, req{key: key, path: "/v1/huge?size=10000"})
	if first.status != 200 || len(first.body) != 10000 {
		t.Fatalf("first client: status %d, %d bytes; want the whole response", first.status, len(first.body))
	}
	retry := gw.do(t, req{key: key, path: "/v1/huge?size=10000"})
	if retry.status != http.StatusUnprocessableEntity {
		t.Fatalf("retry: %d %s", retry.status, retry.body)
	}
	if e := retry.apiError(t); e["type"] != "idempotency_error" || e["code"] != "idempotency_response_unavailable" {
		t.Fatalf("error = %v", e)
	}
	if got := retry.header.Get("Original-Request-Id"); got != first.header.Get("Request-Id") {
		t.Errorf("Original-Request-Id = %q, want %q", got, first.header.Get("Request-Id"))
	}
	if n := up.count.Load() - before; n != 1 {
		t.Fatalf("upstream executed %d times, want 1", n)
	}
}

func TestRedisDown(t *testing.T) {
	up := newUpstream(t)
	gw := startGateway(t, up, "unused:", settings{"redis": "redis://" + testenv.FreeAddr(t) + "/0"})

	r := gw.do(t, req{key: newKey(), body: `{}`})
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("keyed: %d %s", r.status, r.body)
	}
	if e := r.apiError(t); e["type"] != "api_error" || e["code"] != "idempotency_unavailable" {
		t.Fatalf("error = %v", e)
	}
	if n := up.count.Load(); n != 0 {
		t.Fatalf("a keyed request executed unprotected (%d)", n)
	}
	if r := gw.do(t, req{body: `{}`}); r.status != http.StatusCreated {
		t.Fatalf("unkeyed: %d %s", r.status, r.body)
	}
	if r := gw.do(t, req{method: http.MethodGet, key: newKey()}); r.status != http.StatusCreated {
		t.Fatalf("GET with a key (ignored): %d %s", r.status, r.body)
	}
	if n := up.count.Load(); n != 2 {
		t.Fatalf("upstream executed %d times, want 2", n)
	}
}

func TestKeysAreScopedPerOrganisationAndEnvironment(t *testing.T) {
	_, prefix := testRedis(t)
	up := newUpstream(t)
	gw := startGateway(t, up, prefix, nil)
	key := newKey()

	seen := map[string]bool{}
	for _, c := range []struct{ org, live string }{
		{"org_a", "false"}, {"org_a", "true"}, {"org_b", "false"}, {"org_b", "true"},
	} {
		r := gw.do(t, req{key: key, body: `{}`, org: c.org, live: c.live})
		if r.status != http.StatusCreated || r.header.Get("Idempotent-Replayed") != "" || seen[r.body] {
			t.Fatalf("%s live=%s: %d %s replayed=%q", c.org, c.live, r.status, r.body, r.header.Get("Idempotent-Replayed"))
		}
		seen[r.body] = true
	}
	if r := gw.do(t, req{key: key, body: `{}`, org: "org_b", live: "true"}); r.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("same scope again was not replayed: %d %s", r.status, r.body)
	}
	if n := up.count.Load(); n != 4 {
		t.Fatalf("upstream executed %d times, want 4", n)
	}
}

func TestWithoutOrganisation(t *testing.T) {
	_, prefix := testRedis(t)
	up := newUpstream(t)

	t.Run("refused by default", func(t *testing.T) {
		gw := startGateway(t, up, prefix, nil)
		r := gw.do(t, req{key: newKey(), body: `{}`, org: "-"})
		if r.status != http.StatusInternalServerError {
			t.Fatalf("%d %s", r.status, r.body)
		}
		if n := up.count.Load(); n != 0 {
			t.Fatalf("executed %d times", n)
		}
	})
	t.Run("fallback scope", func(t *testing.T) {
		gw := startGateway(t, up, prefix, settings{"fallback_scope": "public"})
		key := newKey()
		first := gw.do(t, req{key: key, body: `{}`, org: "-"})
		second := gw.do(t, req{key: key, body: `{}`, org: "-"})
		if first.status != http.StatusCreated || second.header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("first %d, second %d replayed=%q", first.status, second.status, second.header.Get("Idempotent-Replayed"))
		}
		// An authenticated caller with the same key is another scope.
		if r := gw.do(t, req{key: key, body: `{}`}); r.header.Get("Idempotent-Replayed") != "" {
			t.Fatal("fallback scope leaked into an organisation's scope")
		}
	})
}

// TestUnreachableUpstreamReleasesTheLock: when the proxy cannot even
// connect, the backend never saw the request, so a retry must execute.
func TestUnreachableUpstreamReleasesTheLock(t *testing.T) {
	_, prefix := testRedis(t)
	addr := testenv.FreeAddr(t) // nothing listens here yet
	gw := startCaddy(t, serverSpec{
		settings: settings{"key_prefix": prefix, "ttl": "10m"},
		next:     proxyTo(addr),
	})[0]
	key := newKey()

	r := gw.do(t, req{key: key, body: `{}`})
	if r.status != http.StatusBadGateway {
		t.Fatalf("upstream down: %d %s", r.status, r.body)
	}
	up := newUpstreamAt(t, addr)
	r = gw.do(t, req{key: key, body: `{}`})
	r.mustBeExecuted(t, "retry after the upstream came back")
	if n := up.count.Load(); n != 1 {
		t.Fatalf("upstream executed %d times, want 1", n)
	}
}

// TestFailedTLSHandshakeReleasesTheLock: an HTTPS upstream whose
// certificate the gateway refuses never received a byte of the request, so
// the key must not keep answering 502 for its ttl: once the certificate is
// trusted, the retry executes.
func TestFailedTLSHandshakeReleasesTheLock(t *testing.T) {
	_, prefix := testRedis(t)
	var count atomic.Int64
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		count.Add(1)
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "https://")
	proxy := func(tls map[string]any) map[string]any {
		return map[string]any{"handler": "reverse_proxy", "upstreams": []any{map[string]any{"dial": addr}},
			"transport": map[string]any{"protocol": "http", "tls": tls}}
	}
	key := newKey()
	gw := startCaddy(t, serverSpec{settings: settings{"key_prefix": prefix, "ttl": "10m"}, next: proxy(map[string]any{})})[0]
	if r := gw.do(t, req{key: key, body: `{}`}); r.status != http.StatusBadGateway || count.Load() != 0 {
		t.Fatalf("untrusted certificate: %d %s, upstream ran %d times", r.status, r.body, count.Load())
	}
	// The operator trusts the certificate (here: skips verification).
	gw = startCaddy(t, serverSpec{settings: settings{"key_prefix": prefix, "ttl": "10m"},
		next: proxy(map[string]any{"insecure_skip_verify": true})})[0]
	gw.do(t, req{key: key, body: `{}`}).mustBeExecuted(t, "retry once the certificate is trusted")
	if n := count.Load(); n != 1 {
		t.Fatalf("upstream executed %d times, want 1", n)
	}
}

// TestAmbiguousFailuresAreNeverReExecuted: once the request may have
// reached the backend without a complete answer, every retry gets the same
// recorded gateway error, even after lock_ttl.
func TestAmbiguousFailuresAreNeverReExecuted(t *testing.T) {
	rdb, prefix := testRedis(t)
	up := newUpstream(t)
	gw := startGateway(t, up, prefix, settings{"lock_ttl": "400ms"})

	cases := []struct {
		name, path, body string
		status           int
		code             string
	}{
		{"upstream too slow", "/v1/block", `{}`, http.StatusGatewayTimeout, "upstream_timeout"},
		{"upstream too slow with the body", "/v1/stall", `{}`, http.StatusGatewayTimeout, "upstream_timeout"},
		{"connection dropped mid-response", "/v1/abort", `{}`, http.StatusBadGateway, "upstream_unavailable"},
		// Go's transport resends a request carrying an Idempotency-Key
		// when a reused connection fails before the response starts,
		// trusting the backend to deduplicate; this backend cannot.
		{"connection dropped before the response", "/v1/crash", `{}`, http.StatusBadGateway, "upstream_unavailable"},
		{"connection dropped before the response, no body", "/v1/crash", "", http.StatusBadGateway, "upstream_unavailable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A request without a key leaves a keep-alive connection to the
			// upstream for the keyed one to reuse.
			if r := gw.do(t, req{body: `{}`}); r.status != http.StatusCreated {
				t.Fatalf("warm-up: %d %s", r.status, r.body)
			}
			before := up.count.Load()
			key := newKey()
			q := req{key: key, path: tc.path, body: tc.body}
			first := gw.do(t, q)
			if first.status != tc.status || first.apiError(t)["code"] != tc.code {
				t.Fatalf("first: %d %s", first.status, first.body)
			}
			if first.header.Get("Location") != "" {
				t.Fatal("the error carries the upstream's partial headers")
			}
			// The record outlives the lock: it is kept for ttl, not lock_ttl.
			if ttl := rdb.PTTL(context.Background(), prefix+"org_a:test:"+key).Val(); ttl < time.Minute {
				t.Fatalf("record expires in %s; it must be kept for ttl", ttl)
			}
			retry := gw.do(t, q)
			if retry.status != tc.status || retry.header.Get("Idempotent-Replayed") != "true" ||
				retry.apiError(t)["message"] != first.apiError(t)["message"] {
				t.Fatalf("retry: %d %s replayed=%q", retry.status, retry.body, retry.header.Get("Idempotent-Replayed"))
			}
			if n := up.count.Load() - before; n != 1 {
				t.Fatalf("upstream executed %d times, want 1", n)
			}
		})
	}
}

// A client's X-Idempotency-Key (some SDKs send it) is not the gateway's
// key, but Go's transport takes a POST carrying it for one the backend
// deduplicates and resent it by itself when a reused connection failed
// before the answer: the backend ran it twice, the gateway not knowing.
func TestXIdempotencyKeyIsNotResentByTheTransport(t *testing.T) {
	_, prefix := testRedis(t)
	up := newUpstream(t)
	gw := startGateway(t, up, prefix, nil)
	for _, body := range []string{"", `{}`} {
		if r := gw.do(t, req{body: `{}`}); r.status != http.StatusCreated { // a connection for the next to reuse
			t.Fatalf("warm-up: %d %s", r.status, r.body)
		}
		before := up.count.Load()
		gw.do(t, req{path: "/v1/crash", body: body, xKey: newKey()})
		if n := up.count.Load() - before; n != 1 {
			t.Errorf("body %q: the upstream ran a POST with X-Idempotency-Key %d times, want 1", body, n)
		}
	}
}

// TestPanicBehindTheHandlerIsAnsweredAsReplayed: a panic behind the
// handler is recorded as a 502, and the first client must get that 502
// too, not a connection dropped under it (it used to be re-panicked after
// writing, and net/http discarded the buffered answer).
func TestPanicBehindTheHandlerIsAnsweredAsReplayed(t *testing.T) {
	_, prefix := testRedis(t)
	gw := startCaddy(t, serverSpec{
		settings: settings{"key_prefix": prefix, "ttl": "10m"},
		next:     map[string]any{"handler": "idempotency_test_panic"},
	})[0]
	q := req{key: newKey(), body: `{}`}
	first, err := gw.send(q)
	if err != nil {
		t.Fatalf("first: %v; want the recorded 502", err)
	}
	if first.status != http.StatusBadGateway || first.apiError(t)["code"] != "upstream_unavailable" {
		t.Fatalf("first: %d %s", first.status, first.body)
	}
	retry := gw.do(t, q)
	if retry.status != first.status || retry.body != first.body || retry.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry: %d %s replayed=%q; first was %d %s", retry.status, retry.body,
			retry.header.Get("Idempotent-Replayed"), first.status, first.body)
	}
}

// TestLockAnsweredTooLateIsReleased: Redis takes the lock but its answer
// comes after the deadline. The client is told the request did not execute
// and to retry with the same key, so the lock must not outlive that answer
// (it used to hold for lock_ttl, every retry getting 409).
func TestLockAnsweredTooLateIsReleased(t *testing.T) {
	_, prefix := testRedis(t)
	via := redisURL(t)
	px := newSlowProxy(t, via.Host, 2*lookupTimeout)
	via.Host = px.addr
	up := newUpstream(t)
	gw := startGateway(t, up, prefix, settings{"redis": via.String(), "lock_ttl": "60s"})
	// Opens the connections and loads the script, so the slow call is the
	// lock call itself.
	if r := gw.do(t, req{key: newKey(), body: `{}`}); r.status != http.StatusCreated {
		t.Fatalf("warm-up: %d %s", r.status, r.body)
	}
	q := req{key: newKey(), body: `{"a":1}`}

	px.slow.Store(true)
	first := gw.do(t, q)
	px.slow.Store(false)
	if first.status != http.StatusServiceUnavailable || first.apiError(t)["code"] != "idempotency_unavailable" {
		t.Fatalf("lock answered late: %d %s", first.status, first.body)
	}
	var retry resp
	eventually(t, 10*time.Second, "a retry with the same key to execute", func() bool {
		retry = gw.do(t, q)
		// 409 until the release lands, 503 should the breaker have opened.
		return retry.status != http.StatusConflict && retry.status != http.StatusServiceUnavailable
	})
	retry.mustBeExecuted(t, "retry")
	if n := up.count.Load(); n != 2 {
		t.Fatalf("upstream executed %d times, want 2 (warm-up and retry)", n)
	}
}

// TestExecutionNeverOutlivesTheLock: the upstream call's deadline counts
// from before the lock call, since Redis may have started the lock's clock
// as soon as the call arrived. A lock whose answer took half or more of the
// time it leaves for the execution runs nothing — with too little time
// left the request might time out before it is even sent, and that would
// be recorded as an unknown outcome for ttl — so the request is refused,
// the lock released, no record counted, and the retry executes, once.
func TestExecutionNeverOutlivesTheLock(t *testing.T) {
	for _, delay := range []time.Duration{300 * time.Millisecond, 150 * time.Millisecond} { // both under lookupTimeout
		t.Run(delay.String(), func(t *testing.T) {
			_, prefix := testRedis(t)
			via := redisURL(t)
			px := newSlowProxy(t, via.Host, delay)
			via.Host = px.addr
			up := newUpstream(t)
			// lock_ttl 400ms leaves an execution 200ms.
			gw := startGateway(t, up, prefix, settings{"redis": via.String(), "lock_ttl": "400ms"})
			if r := gw.do(t, req{key: newKey(), body: `{}`}); r.status != http.StatusCreated {
				t.Fatalf("warm-up: %d %s", r.status, r.body)
			}
			before := up.count.Load()
			records := func() (n float64) {
				for _, r := range recordResults {
					n += counterValue(metrics.records.WithLabelValues(r))
				}
				return n
			}
			recordsBefore := records()
			q := req{key: newKey(), body: `{"a":1}`}

			px.slow.Store(true)
			first := gw.do(t, q)
			px.slow.Store(false)
			if first.status != http.StatusServiceUnavailable || first.apiError(t)["code"] != "idempotency_unavailable" {
				t.Fatalf("lock answered with too little of the execution's time left: %d %s", first.status, first.body)
			}
			if n := up.count.Load() - before; n != 0 {
				t.Fatalf("upstream executed %d times, want 0", n)
			}
			if n := records() - recordsBefore; n != 0 {
				t.Fatalf("%v records counted for a request that never executed", n)
			}
			gw.do(t, q).mustBeExecuted(t, "retry")
			if n := up.count.Load() - before; n != 1 {
				t.Fatalf("upstream executed %d times, want 1", n)
			}
		})
	}
}

// TestReleaseAndLockCallInEitherOrder: a lock call that got no answer may
// run in Redis after its request released the lock. Whichever runs first,
// no lock of that request's token is left, and no one else's lock is
// touched.
func TestReleaseAndLockCallInEitherOrder(t *testing.T) {
	rdb, prefix := testRedis(t)
	s := &store{client: rdb, direct: rdb, prefix: prefix}
	ctx := context.Background()
	const lockTTL = time.Minute
	begin := func(key, token string) (lookup, error) {
		return s.begin(ctx, key, token, "fp", "", "req_1", lockTTL)
	}
	acquire := func(t *testing.T, key, token string) {
		t.Helper()
		if l, err := begin(key, token); err != nil || l.state != stateAcquired {
			t.Fatalf("begin(%s): %v %v, want acquired", token, l.state, err)
		}
	}
	release := func(t *testing.T, key, token string) {
		t.Helper()
		if err := s.release(ctx, key, token, lockTTL); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("lock, then release", func(t *testing.T) {
		key := prefix + newKey()
		acquire(t, key, "tok1")
		release(t, key, "tok1")
		if n := rdb.Exists(ctx, key).Val(); n != 0 {
			t.Fatal("the lock is still there")
		}
		acquire(t, key, "tok2")
	})
	t.Run("release, then the late lock call", func(t *testing.T) {
		key := prefix + newKey()
		release(t, key, "tok1")
		if _, err := begin(key, "tok1"); !errors.Is(err, errReleased) {
			t.Fatalf("late lock call: %v, want errReleased", err)
		}
		if n := rdb.Exists(ctx, key).Val(); n != 0 {
			t.Fatal("the late lock call took the lock after its release")
		}
		if ttl := rdb.PTTL(ctx, s.tombstone("tok1")).Val(); ttl <= 0 || ttl > lockTTL {
			t.Fatalf("tombstone expires in %s, want within lock_ttl", ttl)
		}
		acquire(t, key, "tok2") // the retry, with its own token
	})
	t.Run("another request's lock is left alone", func(t *testing.T) {
		key := prefix + newKey()
		acquire(t, key, "tok2")
		release(t, key, "tok1")
		if tok := rdb.HGet(ctx, key, "tok").Val(); tok != "tok2" {
			t.Fatalf("lock token %q, want tok2's lock kept", tok)
		}
	})
}

// TestUpstreamRefusalsAreNotRecorded: a 429, or a 503 with Retry-After, says
// the backend did not act and when to retry; replaying it for ttl would
// refuse every retry. It is passed on, not recorded, and the retry runs.
// A 503 without Retry-After may come after the work: it is recorded.
func TestUpstreamRefusalsAreNotRecorded(t *testing.T) {
	_, prefix := testRedis(t)
	for _, tc := range []struct {
		name       string
		status     int
		retryAfter string
		recorded   bool
	}{
		{"429 with Retry-After", http.StatusTooManyRequests, "1", false},
		{"429 without Retry-After", http.StatusTooManyRequests, "", false},
		{"503 with Retry-After", http.StatusServiceUnavailable, "2", false},
		{"503 without Retry-After", http.StatusServiceUnavailable, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int64
			backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "application/json")
				if calls.Add(1) == 1 {
					if tc.retryAfter != "" {
						w.Header().Set("Retry-After", tc.retryAfter)
					}
					w.WriteHeader(tc.status)
					_, _ = io.WriteString(w, `{"error":{"type":"api_error","message":"busy"}}`)
					return
				}
				w.WriteHeader(http.StatusCreated)
				_, _ = io.WriteString(w, `{"id":"cus_1"}`)
			}))
			t.Cleanup(backend.Close)
			gw := startCaddy(t, serverSpec{
				settings: settings{"key_prefix": prefix, "ttl": "10m"},
				next:     proxyTo(strings.TrimPrefix(backend.URL, "http://")),
			})[0]
			refused := counterValue(metrics.records.WithLabelValues(recordRefused))
			q := req{key: newKey(), body: `{}`}

			first := gw.do(t, q)
			if first.status != tc.status || first.header.Get("Retry-After") != tc.retryAfter {
				t.Fatalf("first: %d Retry-After %q, want the upstream's %d %q", first.status, first.header.Get("Retry-After"), tc.status, tc.retryAfter)
			}
			retry := gw.do(t, q)
			if tc.recorded {
				if retry.status != tc.status || retry.header.Get("Idempotent-Replayed") != "true" || calls.Load() != 1 {
					t.Fatalf("retry: %d replayed=%q, %d upstream calls; want the recorded %d", retry.status, retry.header.Get("Idempotent-Replayed"), calls.Load(), tc.status)
				}
				return
			}
			if retry.status != http.StatusCreated || retry.header.Get("Idempotent-Replayed") != "" || calls.Load() != 2 {
				t.Fatalf("retry: %d replayed=%q, %d upstream calls; want it executed", retry.status, retry.header.Get("Idempotent-Replayed"), calls.Load())
			}
			if r := gw.do(t, q); r.status != http.StatusCreated || r.header.Get("Idempotent-Replayed") != "true" {
				t.Fatalf("after the retry: %d replayed=%q, want its 201 replayed", r.status, r.header.Get("Idempotent-Replayed"))
			}
			if got := counterValue(metrics.records.WithLabelValues(recordRefused)) - refused; got != 1 {
				t.Errorf("refused records = %v, want 1", got)
			}
		})
	}
}

// TestMisplacedHandlerLogsARedactedPath: the error log of a keyed request
// without an organisation names the path, without a key pasted into it.
func TestMisplacedHandlerLogsARedactedPath(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	h := &Handler{methods: []string{http.MethodPost}, logger: zap.New(core)}
	key, err := apikey.Generate(apikey.Secret, apikey.Live)
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, "/v1/customers/"+key, strings.NewReader(`{}`))
	r.Header.Set(HeaderKey, newKey())
	r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
	err = h.ServeHTTP(httptest.NewRecorder(), r, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		t.Fatal("executed without an organisation")
		return nil
	}))
	if apierror.From(err).Status != http.StatusInternalServerError {
		t.Fatalf("err = %v, want the 500 refusal", err)
	}
	entries := logs.All()
	if len(entries) != 1 {
		t.Fatalf("log entries: %v", entries)
	}
	if got := entries[0].ContextMap()["path"]; got != "/v1/customers/"+redact.Mask {
		t.Fatalf("logged path %q, want the key masked", got)
	}
}

func TestRequestBodies(t *testing.T) {
	_, prefix := testRedis(t)
	up := newUpstream(t)
	gw := startGateway(t, up, prefix, settings{"max_request_size": 100})

	t.Run("chunked body reaches the upstream and is fingerprinted", func(t *testing.T) {
		key := newKey()
		body := `{"name":"chunked"}`
		first := gw.do(t, req{key: key, body: body, chunked: true})
		var echoed struct {
			Body          string `json:"body"`
			ContentLength int64  `json:"content_length"`
		}
		if err := json.Unmarshal([]byte(first.body), &echoed); err != nil || first.status != http.StatusCreated {
			t.Fatalf("first: %d %s", first.status, first.body)
		}
		if echoed.Body != body || echoed.ContentLength != int64(len(body)) {
			t.Fatalf("upstream got %q (length %d), want %q", echoed.Body, echoed.ContentLength, body)
		}
		// The same body with a Content-Length is the same request.
		if r := gw.do(t, req{key: key, body: body}); r.header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("same body, not chunked: %d %s", r.status, r.body)
		}
		if r := gw.do(t, req{key: key, body: `{"name":"other"}`, chunked: true}); r.status != http.StatusUnprocessableEntity {
			t.Fatalf("different chunked body: %d %s", r.status, r.body)
		}
	})

	t.Run("empty chunked body", func(t *testing.T) {
		key := newKey()
		first := gw.do(t, req{key: key, chunked: true})
		if first.status != http.StatusCreated || !strings.Contains(first.body, `"body":""`) {
			t.Fatalf("first: %d %s", first.status, first.body)
		}
		if r := gw.do(t, req{key: key}); r.header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("retry without a body: %d %s", r.status, r.body)
		}
	})

	for _, chunked := range []bool{false, true} {
		t.Run("too large, chunked="+map[bool]string{false: "no", true: "yes"}[chunked], func(t *testing.T) {
			before := up.count.Load()
			r := gw.do(t, req{key: newKey(), body: strings.Repeat("a", 101), chunked: chunked})
			if r.status != http.StatusRequestEntityTooLarge || r.apiError(t)["code"] != "body_too_large" {
				t.Fatalf("%d %s", r.status, r.body)
			}
			if up.count.Load() != before {
				t.Fatal("an oversized body was executed")
			}
		})
	}

	t.Run("without a key the limit does not apply", func(t *testing.T) {
		if r := gw.do(t, req{body: strings.Repeat("a", 101)}); r.status != http.StatusCreated {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
}

func TestOutcomeMetrics(t *testing.T) {
	_, prefix := testRedis(t)
	up := newUpstream(t)
	gw := startGateway(t, up, prefix, nil)
	count := func(o string) float64 { return counterValue(metrics.requests.WithLabelValues(o)) }
	base := map[string]float64{}
	for _, o := range []string{outcomeExecuted, outcomeReplayed, outcomeReused, outcomeInvalid} {
		base[o] = count(o)
	}
	key := newKey()
	gw.do(t, req{key: key, body: `{}`})
	gw.do(t, req{key: key, body: `{}`})
	gw.do(t, req{key: key, body: `{"x":1}`})
	gw.do(t, req{keys: []string{""}})
	gw.do(t, req{body: `{}`}) // unkeyed: no outcome
	for o, want := range map[string]float64{outcomeExecuted: 1, outcomeReplayed: 1, outcomeReused: 1, outcomeInvalid: 1} {
		if got := count(o) - base[o]; got != want {
			t.Errorf("outcome %s counted %v, want %v", o, got, want)
		}
	}
}

// counterValue reads a counter (client_golang's testutil needs a module
// this repository does not carry).
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// behindRequestID is the chain as the gateway runs it, with the request_id
// handler in front, before an upstream that counts its executions.
func behindRequestID(t *testing.T) (*upstream, gateway) {
	t.Helper()
	_, prefix := testRedis(t)
	up := newUpstream(t)
	return up, startCaddy(t, serverSpec{
		settings: settings{"key_prefix": prefix, "ttl": "10m"},
		front: []map[string]any{
			{"handler": "request_id"},
			{"handler": "idempotency_test_identity", "placeholders_only": true},
		},
		next: proxyTo(up.addr()),
	})[0]
}

// TestBehindTheRealRequestIDHandler runs the chain as the gateway does, with
// the request_id handler in front: it names every request, renders this
// handler's refusals, and the replay still carries its own id.
func TestBehindTheRealRequestIDHandler(t *testing.T) {
	up, gw := behindRequestID(t)
	key := newKey()

	first := gw.do(t, req{key: key, body: `{}`})
	replay := gw.do(t, req{key: key, body: `{}`})
	if first.status != http.StatusCreated || replay.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("first %d, replay %d %q", first.status, replay.status, replay.header.Get("Idempotent-Replayed"))
	}
	origID, replayID := first.header.Get("Request-Id"), replay.header.Get("Request-Id")
	if !ids.Valid(origID, ids.Request) || !ids.Valid(replayID, ids.Request) || origID == replayID {
		t.Fatalf("Request-Id original %q, replay %q", origID, replayID)
	}
	if got := replay.header.Get("Original-Request-Id"); got != origID {
		t.Fatalf("Original-Request-Id = %q, want %q", got, origID)
	}

	reused := gw.do(t, req{key: key, body: `{"other":true}`})
	e := reused.apiError(t)
	if reused.status != http.StatusUnprocessableEntity || e["code"] != "idempotency_key_reused" || e["request_id"] != reused.header.Get("Request-Id") {
		t.Fatalf("reuse: %d %v", reused.status, e)
	}
	if r := gw.do(t, req{keys: []string{"a", "b"}}); r.status != http.StatusBadRequest || r.apiError(t)["param"] != "Idempotency-Key" {
		t.Fatalf("two keys: %d %s", r.status, r.body)
	}
	if n := up.count.Load(); n != 1 {
		t.Fatalf("upstream executed %d times, want 1", n)
	}
}

// TestCaseVariantOfAMethodNeverReachesTheHandler: "post" is not POST, so a
// key on it would be ignored while the backend may take it for a POST. The
// request_id handler in front refuses it before anything runs.
func TestCaseVariantOfAMethodNeverReachesTheHandler(t *testing.T) {
	up, gw := behindRequestID(t)
	key := newKey()
	for _, method := range []string{"post", "Post", "post"} {
		r := gw.do(t, req{method: method, key: key, body: `{}`})
		if r.status != http.StatusBadRequest || r.apiError(t)["code"] != "request_invalid" {
			t.Fatalf("%s: %d %s", method, r.status, r.body)
		}
	}
	if n := up.count.Load(); n != 0 {
		t.Fatalf("upstream executed %d times, want 0", n)
	}
	if r := gw.do(t, req{key: key, body: `{}`}); r.status != http.StatusCreated {
		t.Fatalf("POST with the key afterwards: %d %s", r.status, r.body)
	}
}

// A response marked Cache-Control: no-store (a webhook signing secret shown
// once) is passed on but not kept in Redis: the key counts as used, a retry
// is not executed again and gets 422 saying why.
func TestNoStoreResponsesAreNotKept(t *testing.T) {
	rdb, prefix := testRedis(t)
	var calls atomic.Int64
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "private, no-store")
		_, _ = io.WriteString(w, `{"id":"we_1","secret":"whsec_c2VjcmV0"}`)
	}))
	t.Cleanup(backend.Close)
	gw := startCaddy(t, serverSpec{
		settings: settings{"key_prefix": prefix, "ttl": "10m"},
		next:     proxyTo(strings.TrimPrefix(backend.URL, "http://")),
	})[0]
	q := req{key: newKey(), body: `{}`}

	if first := gw.do(t, q); first.status != http.StatusOK || !strings.Contains(first.body, "whsec_") {
		t.Fatalf("first: %d %s, want the upstream's answer", first.status, first.body)
	}
	retry := gw.do(t, q)
	if retry.status != http.StatusUnprocessableEntity || !strings.Contains(retry.body, "idempotency_response_unavailable") ||
		!strings.Contains(retry.body, "no-store") || calls.Load() != 1 {
		t.Fatalf("retry: %d %s after %d upstream calls; want 422 and no second execution", retry.status, retry.body, calls.Load())
	}
	keys, err := rdb.Keys(context.Background(), prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if v, _ := rdb.HGetAll(context.Background(), k).Result(); strings.Contains(fmt.Sprint(v), "whsec_") {
			t.Fatalf("Redis keeps the secret under %s: %v", k, v)
		}
	}
}

// Error objects are no-store too (internal/apierror marks every one) but
// carry no secret: a backend's 400 or 500 is recorded and replayed like any
// other response, not turned into "not kept".
func TestNoStoreErrorsAreStillReplayed(t *testing.T) {
	_, prefix := testRedis(t)
	for _, status := range []int{http.StatusBadRequest, http.StatusInternalServerError} {
		var calls atomic.Int64
		backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			calls.Add(1)
			apierror.Write(w, apierror.New(status, apierror.TypeInvalidRequest, "parameter_missing", "Missing email."))
		}))
		t.Cleanup(backend.Close)
		gw := startCaddy(t, serverSpec{
			settings: settings{"key_prefix": prefix, "ttl": "10m"},
			next:     proxyTo(strings.TrimPrefix(backend.URL, "http://")),
		})[0]
		q := req{key: newKey(), body: `{}`}
		first := gw.do(t, q)
		retry := gw.do(t, q)
		if first.status != status || retry.status != status || retry.header.Get("Idempotent-Replayed") != "true" || calls.Load() != 1 {
			t.Fatalf("%d: first %d, retry %d replayed=%q after %d upstream calls; want the error replayed",
				status, first.status, retry.status, retry.header.Get("Idempotent-Replayed"), calls.Load())
		}
	}
}

// reverse_proxy rebuilds the request's header with canonical names whenever
// it has header operations: any header_up, and the Host it sets itself for
// every HTTPS upstream. The transport must still not resend a keyed request
// the backend may have acted on. (A keyed request without a body is still
// resent there: see guardTransportRetries.)
func TestNoTransportResendBehindHeaderOps(t *testing.T) {
	_, prefix := testRedis(t)
	up := newUpstream(t)
	next := proxyTo(up.addr())
	next["headers"] = map[string]any{"request": map[string]any{"set": map[string][]string{"X-Forwarded-Env": {"test"}}}}
	gw := startCaddy(t, serverSpec{settings: settings{"key_prefix": prefix, "ttl": "10m"}, next: next})[0]
	cases := []struct{ name, body string }{
		{"with a body", `{}`},
		{"with a large body", `{"note":"` + strings.Repeat("x", 100_000) + `"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if r := gw.do(t, req{body: `{}`}); r.status != http.StatusCreated {
				t.Fatalf("warm-up: %d %s", r.status, r.body)
			}
			before := up.count.Load()
			r := gw.do(t, req{key: newKey(), path: "/v1/crash", body: tc.body})
			if r.status != http.StatusBadGateway {
				t.Fatalf("%d %s", r.status, r.body)
			}
			if n := up.count.Load() - before; n != 1 {
				t.Fatalf("the backend received the keyed request %d times, want 1", n)
			}
		})
	}
}

// TestStalledClientOfAStreamedResponseCannotOutlastTheLock: a first client
// that stops reading a response too large to hold kept the handler blocked
// in its write to it (the upstream call's deadline cancelled only the
// upstream's side), so the outcome was never recorded, the lock expired,
// and a retry with the same key executed the request again. Writes now
// share that deadline: the retry finds the outcome.
func TestStalledClientOfAStreamedResponseCannotOutlastTheLock(t *testing.T) {
	_, prefix := testRedis(t)
	up := newUpstream(t)
	gw := startGateway(t, up, prefix, settings{"max_response_size": 1000, "lock_ttl": "1s"})
	key := newKey()
	const size = 64 << 20
	path := fmt.Sprintf("/v1/huge?size=%d", size)

	// The stalled client: sends the request, never reads the answer.
	conn, err := net.Dial("tcp", strings.TrimPrefix(gw.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096)
	}
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nX-Test-Org: org_a\r\nIdempotency-Key: %s\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", path, key)

	eventually(t, 5*time.Second, "the first request to reach the upstream", func() bool { return up.count.Load() == 1 })

	// A retry with the same key and the same request, from a healthy client.
	var r resp
	eventually(t, 10*time.Second, "a retry that is not 409", func() bool {
		r = gw.do(t, req{key: key, path: path, body: "{}"})
		return r.status != http.StatusConflict
	})
	t.Logf("retry: status %d, %d bytes, replayed=%q", r.status, len(r.body), r.header.Get("Idempotent-Replayed"))
	if n := up.count.Load(); n != 1 {
		t.Fatalf("upstream executed %d times for one Idempotency-Key, want 1", n)
	}
	if r.status != http.StatusUnprocessableEntity {
		t.Errorf("the retry got %d, want the 422 of a response too large to have been kept", r.status)
	}
}
