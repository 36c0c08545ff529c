package webhooks

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/controlplane/router"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ids"
)

func TestListAndGetDeliveries(t *testing.T) {
	e := newEnv(t)
	ep1 := e.mustCreateDefault(orgA).ID
	ep2 := e.mustCreateDefault(orgA).ID
	base := e.clock.now
	at := func(i int) time.Time { return base.Add(time.Duration(i) * time.Second) }
	d := []string{
		e.seedDelivery(orgA, ep1, "succeeded", at(1)),
		e.seedDelivery(orgA, ep1, "failed", at(2)),
		e.seedDelivery(orgA, ep2, "dead", at(3)),
		e.seedDelivery(orgA, ep2, "pending", at(4)),
	}
	var evOf1 string
	if err := e.pool.QueryRow(t.Context(), `SELECT event_id FROM webhook_deliveries WHERE id = $1`, d[1]).Scan(&evOf1); err != nil {
		t.Fatal(err)
	}
	join := func(ds ...int) string {
		out := make([]string, len(ds))
		for i, j := range ds {
			out[i] = d[j]
		}
		return strings.Join(out, ",")
	}
	for _, tc := range []struct {
		query   string
		want    string
		hasMore bool
	}{
		{"", join(3, 2, 1, 0), false},
		{"?limit=3", join(3, 2, 1), true},
		{"?limit=2&starting_after=" + d[2], join(1, 0), false},
		{"?ending_before=" + d[1], join(3, 2), false},
		{"?endpoint=" + ep1, join(1, 0), false},
		{"?event=" + evOf1, join(1), false},
		{"?status=dead", join(2), false},
		{"?endpoint=" + ep2 + "&status=pending", join(3), false},
		{"?endpoint=" + ep1 + "&status=dead", "", false},
	} {
		t.Run(tc.query, func(t *testing.T) {
			var l router.List[Delivery]
			e.get(orgA, "/v1/webhook-deliveries"+tc.query).decode(t, 200, &l)
			got := make([]string, len(l.Data))
			for i, x := range l.Data {
				got[i] = x.ID
			}
			if strings.Join(got, ",") != tc.want || l.HasMore != tc.hasMore || l.URL != "/v1/webhook-deliveries" {
				t.Fatalf("got %v has_more %v, want %s has_more %v", got, l.HasMore, tc.want, tc.hasMore)
			}
		})
	}
	for _, q := range []string{"?status=done", "?endpoint=cus_1", "?event=we_1", "?limit=500", "?sort=id"} {
		if r := e.get(orgA, "/v1/webhook-deliveries"+q); r.status != 400 {
			t.Errorf("%s: status %d", q, r.status)
		}
	}

	// Every attempt, oldest first, with the snippet capped at 4 KB.
	long := strings.Repeat("é", 3000) // 6000 bytes
	for i, a := range []struct {
		code    any
		snippet string
		errText string
		trigger string
	}{
		{500, "oops", "", "scheduled"},
		{nil, "", "timed out after 10s", "scheduled"},
		{200, long, "", "manual"},
	} {
		e.exec(`INSERT INTO webhook_attempts (id, delivery_id, organization_id, livemode, status_code, latency_ms,
			response_snippet, error, trigger, created_at) VALUES ($1, $2, 'org_A', false, $3, $4, $5, $6, $7, $8)`,
			ids.NewAt(ids.Attempt, at(10+i)), d[1], a.code, 100+i, a.snippet, a.errText, a.trigger, at(10+i))
	}
	var got Delivery
	e.get(orgA, "/v1/webhook-deliveries/"+d[1]).decode(t, 200, &got)
	if got.Object != "webhook_delivery" || got.Endpoint != ep1 || got.Event != evOf1 || got.EventType == nil ||
		*got.EventType != "customer.created" || got.Status != "failed" || got.AttemptCount != 3 ||
		got.LastStatusCode == nil || *got.LastStatusCode != 500 || got.Created != at(2).Unix() || got.Attempts == nil {
		t.Fatalf("delivery = %+v", got)
	}
	as := *got.Attempts
	if len(as) != 3 || as[0].StatusCode == nil || *as[0].StatusCode != 500 || as[0].ResponseSnippet != "oops" ||
		as[0].Error != nil || as[0].Trigger != "scheduled" || as[0].LatencyMS != 100 ||
		as[1].StatusCode != nil || as[1].Error == nil || *as[1].Error != "timed out after 10s" ||
		as[2].Trigger != "manual" || as[2].Object != "webhook_attempt" {
		t.Fatalf("attempts = %+v", as)
	}
	if n := len(as[2].ResponseSnippet); n > MaxSnippetBytes || n < MaxSnippetBytes-1 || !strings.HasPrefix(long, as[2].ResponseSnippet) {
		t.Fatalf("snippet of %d bytes, want the first 4 KB cut at a character boundary", n)
	}
	// Lists do not carry attempts.
	r := e.get(orgA, "/v1/webhook-deliveries?limit=1")
	if strings.Contains(string(r.raw), `"attempts"`) {
		t.Fatalf("list shows attempts: %s", r.raw)
	}
}

func TestRetryDelivery(t *testing.T) {
	e := newEnv(t)
	ep := e.mustCreateDefault(orgA).ID
	for _, status := range []string{"succeeded", "failed", "dead", "pending"} {
		t.Run(status, func(t *testing.T) {
			d := e.seedDelivery(orgA, ep, status, e.clock.now.Add(-time.Hour))
			e.clock.now = e.clock.now.Add(time.Second)
			var got Delivery
			e.post(orgA, "/v1/webhook-deliveries/"+d+"/retry", "").decode(t, 200, &got)
			if got.ID != d || got.Status != "pending" || !got.ManualRetryPending || got.NextAttemptAt == nil ||
				*got.NextAttemptAt != e.clock.now.Unix() || got.Attempts != nil {
				t.Fatalf("retry answered %+v", got)
			}
			s := e.state(d)
			if s.Status != "pending" || !s.ManualPending || s.NextAttemptAt == nil || !s.NextAttemptAt.Equal(e.clock.now) {
				t.Fatalf("stored state %+v: the deliverer would not make a manual attempt now", s)
			}
			if n := e.count(`SELECT count(*) FROM audit_logs WHERE target_id = $1 AND action = 'webhook_delivery.retried'
				AND data->>'previous_status' = $2 AND data->>'endpoint' = $3`, d, status, ep); n != 1 {
				t.Fatal("retry not audited")
			}
		})
	}
	// A disabled endpoint's delivery can still be retried by hand.
	e.post(orgA, "/v1/webhook-endpoints/"+ep, `{"disabled":true}`).decode(t, 200, new(Endpoint))
	d := e.seedDelivery(orgA, ep, "failed", e.clock.now)
	if r := e.post(orgA, "/v1/webhook-deliveries/"+d+"/retry", ""); r.status != 200 {
		t.Fatalf("retry on a disabled endpoint: %d %s", r.status, r.raw)
	}
	e.post(orgA, "/v1/webhook-deliveries/"+d+"/retry", `{"at":1}`).assertError(t, wantError{400, "parameter_unknown", "at"})
	e.post(orgA, "/v1/webhook-deliveries/"+ids.New(ids.Delivery)+"/retry", "").assertError(t, wantError{404, "resource_missing", "id"})
}

func TestRecoverEndpoint(t *testing.T) {
	e := newEnv(t)
	ep := e.mustCreateDefault(orgA).ID
	other := e.mustCreateDefault(orgA).ID
	now := e.clock.now
	since := now.Add(-24 * time.Hour)
	failed := e.seedDelivery(orgA, ep, "failed", since.Add(time.Minute))
	dead := e.seedDelivery(orgA, ep, "dead", now.Add(-time.Hour))
	atSince := e.seedDelivery(orgA, ep, "dead", since)
	ok := e.seedDelivery(orgA, ep, "succeeded", now.Add(-time.Hour))
	before := e.seedDelivery(orgA, ep, "failed", since.Add(-time.Second))
	elsewhere := e.seedDelivery(orgA, other, "dead", now.Add(-time.Hour))
	path := "/v1/webhook-endpoints/" + ep + "/recover"

	var rec Recovery
	e.post(orgA, path, fmt.Sprintf(`{"since":%d}`, since.Unix())).decode(t, 200, &rec)
	if rec.Object != "webhook_endpoint_recovery" || rec.Endpoint != ep || rec.Requeued != 3 || rec.HasMore || rec.Since != since.Unix() {
		t.Fatalf("recover answered %+v", rec)
	}
	for _, d := range []string{failed, dead, atSince} {
		if s := e.state(d); s.Status != "pending" || !s.ManualPending || !s.NextAttemptAt.Equal(now) {
			t.Errorf("delivery %s not requeued: %+v", d, s)
		}
	}
	for d, status := range map[string]string{ok: "succeeded", before: "failed", elsewhere: "dead"} {
		if s := e.state(d); s.Status != status || s.ManualPending {
			t.Errorf("delivery %s touched: %+v", d, s)
		}
	}
	if n := e.count(`SELECT count(*) FROM audit_logs WHERE target_id = $1 AND action = 'webhook_endpoint.recovered'
		AND (data->>'requeued')::int = 3`, ep); n != 1 {
		t.Fatal("recovery not audited")
	}
	// Again: nothing left to recover.
	e.form(orgA, path, fmt.Sprintf("since=%d", since.Unix())).decode(t, 200, &rec)
	if rec.Requeued != 0 {
		t.Fatalf("second recovery requeued %d", rec.Requeued)
	}

	for _, tc := range []struct {
		body string
		want wantError
	}{
		{``, wantError{400, "parameter_missing", "since"}},
		{fmt.Sprintf(`{"since":%d}`, now.Add(time.Hour).Unix()), wantError{400, "parameter_invalid", "since"}},
		{fmt.Sprintf(`{"since":%d}`, now.Add(-RecoverWindow-time.Second).Unix()), wantError{400, "parameter_invalid", "since"}},
		{`{"since":"yesterday"}`, wantError{400, "parameter_invalid", "since"}},
		{`{"since":1,"status":"dead"}`, wantError{400, "parameter_unknown", "status"}},
	} {
		e.post(orgA, path, tc.body).assertError(t, tc.want)
	}
	e.post(orgA, "/v1/webhook-endpoints/"+ep, `{"disabled":true}`).decode(t, 200, new(Endpoint))
	msg := e.post(orgA, path, fmt.Sprintf(`{"since":%d}`, since.Unix())).assertError(t, wantError{400, "parameter_invalid", "id"})
	if !strings.Contains(msg, "disabled") {
		t.Fatalf("message %q does not say why", msg)
	}
}

func TestRecoverIsBounded(t *testing.T) {
	e := newEnv(t)
	ep := e.mustCreateDefault(orgA).ID
	since := e.clock.now.Add(-time.Hour)
	e.exec(`INSERT INTO webhook_deliveries (id, organization_id, livemode, event_id, endpoint_id, status, created_at)
		SELECT 'whd_bulk' || lpad(i::text, 18, '0'), 'org_A', false, 'evt_bulk' || i, $1, 'dead', $2
		FROM generate_series(1, $3::int) AS i`, ep, since.Add(time.Minute), MaxRecover+1)
	path := "/v1/webhook-endpoints/" + ep + "/recover"
	var rec Recovery
	e.post(orgA, path, fmt.Sprintf(`{"since":%d}`, since.Unix())).decode(t, 200, &rec)
	if rec.Requeued != MaxRecover || !rec.HasMore {
		t.Fatalf("first call %+v, want %d requeued and has_more", rec, MaxRecover)
	}
	first := rec.LastDelivery
	if first != fmt.Sprintf("whd_bulk%018d", MaxRecover) {
		t.Fatalf("last_delivery = %q", first)
	}
	// The first ones' new attempts fail before the next call: without the
	// cursor it would take them again, and never reach the last one.
	e.exec(`UPDATE webhook_deliveries SET status = 'dead', manual_pending = false, next_attempt_at = NULL
		WHERE endpoint_id = $1 AND status = 'pending'`, ep)
	e.post(orgA, path, fmt.Sprintf(`{"since":%d,"starting_after":%q}`, since.Unix(), first)).decode(t, 200, &rec)
	last := fmt.Sprintf("whd_bulk%018d", MaxRecover+1)
	if rec.Requeued != 1 || rec.HasMore || rec.LastDelivery != last || e.state(last).Status != "pending" {
		t.Fatalf("second call %+v, want the last one", rec)
	}
	if n := e.count(`SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1 AND status = 'pending'`, ep); n != 1 {
		t.Fatalf("%d deliveries requeued by the second call, want 1", n)
	}
	for _, bad := range []string{`"cus_1"`, `null`, `7`} {
		e.post(orgA, path, fmt.Sprintf(`{"since":%d,"starting_after":%s}`, since.Unix(), bad)).
			assertError(t, wantError{400, "parameter_invalid", "starting_after"})
	}
}

func TestTestEventTargetsOnlyThatEndpoint(t *testing.T) {
	e := newEnv(t)
	// A token in the URL's query is as secret as the signing secret: a key
	// that may read events but not endpoints must not learn it.
	ep := e.mustCreate(orgA, `{"url":"`+publicURL+`?token=s3cr3t","enabled_events":["customer.created"],"api_version":"2026-06-01"}`)
	e.mustCreateDefault(orgA) // subscribed to everything; must get nothing
	var d Delivery
	e.do(orgA, http.MethodPost, "/v1/webhook-endpoints/"+ep.ID+"/test", "", "", "Idempotency-Key", "test-1").decode(t, 200, &d)
	if !ids.Valid(d.ID, ids.Delivery) || d.Endpoint != ep.ID || d.Status != "pending" || !d.ManualRetryPending ||
		d.EventType == nil || *d.EventType != TestEventType || d.NextAttemptAt == nil || *d.NextAttemptAt != e.clock.now.Unix() {
		t.Fatalf("test answered %+v", d)
	}
	if n := e.count(`SELECT count(*) FROM webhook_deliveries`); n != 1 {
		t.Fatalf("%d deliveries, want exactly the test's", n)
	}
	s := e.state(d.ID)
	if s.Status != "pending" || !s.ManualPending || !s.NextAttemptAt.Equal(e.clock.now) {
		t.Fatalf("stored state %+v", s)
	}
	var (
		typ, version, requestID, key string
		data                         json.RawMessage
	)
	if err := e.pool.QueryRow(t.Context(), `SELECT type, api_version, data, request_id, idempotency_key FROM events
		WHERE id = $1 AND organization_id = 'org_A' AND livemode = false`, d.Event).
		Scan(&typ, &version, &data, &requestID, &key); err != nil {
		t.Fatal(err)
	}
	var payload struct {
		Object map[string]any `json:"object"`
	}
	if err := json.Unmarshal(data, &payload); err != nil {
		t.Fatal(err)
	}
	if typ != TestEventType || version != "2026-06-01" || payload.Object["id"] != ep.ID ||
		payload.Object["object"] != "webhook_endpoint" || !strings.HasPrefix(requestID, "req_") || key != "test-1" {
		t.Fatalf("test event: type %s version %s request %s key %s data %s", typ, version, requestID, key, data)
	}
	if _, has := payload.Object["secret"]; has || strings.Contains(string(data), "whsec_") || strings.Contains(string(data), "s3cr3t") {
		t.Fatalf("the test event carries the secret: %s", data)
	}
	if a := e.auditActions(ep.ID); !slices.Contains(a, "webhook_endpoint.tested") {
		t.Fatalf("audit = %v", a)
	}

	// Works on a disabled endpoint: it is how one checks a fix before
	// re-enabling.
	e.post(orgA, "/v1/webhook-endpoints/"+ep.ID, `{"disabled":true}`).decode(t, 200, new(Endpoint))
	if r := e.post(orgA, "/v1/webhook-endpoints/"+ep.ID+"/test", ""); r.status != 200 {
		t.Fatalf("test on a disabled endpoint: %d %s", r.status, r.raw)
	}
	e.post(orgA, "/v1/webhook-endpoints/"+ep.ID+"/test", `{"type":"customer.created"}`).
		assertError(t, wantError{400, "parameter_unknown", "type"})
}

func TestTenantIsolation(t *testing.T) {
	e := newEnv(t)
	ep := e.mustCreateDefault(orgA).ID
	d := e.seedDelivery(orgA, ep, "failed", e.clock.now)
	since := fmt.Sprintf(`{"since":%d}`, e.clock.now.Add(-time.Hour).Unix())

	for _, who := range []struct {
		name string
		id   identity.Identity
	}{{"org B", orgB}, {"org A live", orgALive}} {
		for _, tc := range []struct {
			method, path, body string
		}{
			{"GET", "/v1/webhook-endpoints/" + ep, ""},
			{"POST", "/v1/webhook-endpoints/" + ep, `{"description":"mine now"}`},
			{"POST", "/v1/webhook-endpoints/" + ep, `{"url":"` + publicURL + `"}`},
			{"DELETE", "/v1/webhook-endpoints/" + ep, ""},
			{"POST", "/v1/webhook-endpoints/" + ep + "/rotate-secret", ""},
			{"POST", "/v1/webhook-endpoints/" + ep + "/recover", since},
			{"POST", "/v1/webhook-endpoints/" + ep + "/test", ""},
			{"GET", "/v1/webhook-deliveries/" + d, ""},
			{"POST", "/v1/webhook-deliveries/" + d + "/retry", ""},
		} {
			t.Run(who.name+" "+tc.method+" "+tc.path, func(t *testing.T) {
				ct := ""
				if tc.body != "" {
					ct = "application/json"
				}
				e.do(who.id, tc.method, tc.path, ct, tc.body).assertError(t, wantError{404, "resource_missing", "id"})
			})
		}
		var eps router.List[Endpoint]
		e.get(who.id, "/v1/webhook-endpoints").decode(t, 200, &eps)
		var ds router.List[Delivery]
		e.get(who.id, "/v1/webhook-deliveries?endpoint="+ep).decode(t, 200, &ds)
		if len(eps.Data) != 0 || len(ds.Data) != 0 {
			t.Errorf("%s lists %d endpoints and %d deliveries of org A sandbox", who.name, len(eps.Data), len(ds.Data))
		}
	}
	// Nothing of org A changed.
	if s := e.state(d); s.Status != "failed" || s.ManualPending {
		t.Fatalf("delivery changed: %+v", s)
	}
	if n := e.count(`SELECT count(*) FROM webhook_endpoints WHERE id = $1 AND description = ''`, ep) +
		e.count(`SELECT count(*) FROM webhook_endpoint_secrets WHERE endpoint_id = $1`, ep); n != 2 {
		t.Fatal("org A's endpoint changed")
	}
	if a := e.auditActions(ep); !slices.Equal(a, []string{"webhook_endpoint.created"}) {
		t.Fatalf("audit = %v", a)
	}
}

func TestScopes(t *testing.T) {
	e := newEnv(t)
	ep := e.mustCreateDefault(orgA).ID
	d := e.seedDelivery(orgA, ep, "failed", e.clock.now)
	read := orgA
	read.Scopes = []string{"webhooks:read"}
	other := orgA
	other.Scopes = []string{"events:read", "events:write"}
	for _, tc := range []struct {
		id           identity.Identity
		method, path string
		allowed      bool
	}{
		{read, "GET", "/v1/webhook-endpoints", true},
		{read, "GET", "/v1/webhook-endpoints/" + ep, true},
		{read, "GET", "/v1/webhook-deliveries", true},
		{read, "GET", "/v1/webhook-deliveries/" + d, true},
		{read, "POST", "/v1/webhook-endpoints", false},
		{read, "POST", "/v1/webhook-endpoints/" + ep, false},
		{read, "DELETE", "/v1/webhook-endpoints/" + ep, false},
		{read, "POST", "/v1/webhook-endpoints/" + ep + "/rotate-secret", false},
		{read, "POST", "/v1/webhook-endpoints/" + ep + "/recover", false},
		{read, "POST", "/v1/webhook-endpoints/" + ep + "/test", false},
		{read, "POST", "/v1/webhook-deliveries/" + d + "/retry", false},
		{other, "GET", "/v1/webhook-endpoints", false},
		{other, "GET", "/v1/webhook-deliveries", false},
	} {
		r := e.do(tc.id, tc.method, tc.path, "", "")
		if tc.allowed && r.status != 200 {
			t.Errorf("%v %s %s: %d %s", tc.id.Scopes, tc.method, tc.path, r.status, r.raw)
		}
		if !tc.allowed {
			r.assertError(t, wantError{403, "scope_missing", ""})
		}
	}
}

// The deliverer takes a manual request over when it claims the attempt
// (manual_pending → manual_claimed, migration 0011): until that attempt is
// recorded — and if the deliverer dies first, until another makes it — the
// retry is still pending for the API.
func TestManualRetryStaysPendingWhileClaimed(t *testing.T) {
	e := newEnv(t)
	ep := e.mustCreate(orgA, `{"url":"`+publicURL+`","enabled_events":["customer.created"]}`)
	var d Delivery
	e.post(orgA, "/v1/webhook-endpoints/"+ep.ID+"/test", "").decode(t, 200, &d)
	e.exec(`UPDATE webhook_deliveries SET manual_pending = false, manual_claimed = true,
		locked_until = now() + interval '1 minute', lease_id = 'lease_1' WHERE id = $1`, d.ID)
	var got Delivery
	e.get(orgA, "/v1/webhook-deliveries/"+d.ID).decode(t, 200, &got)
	if !got.ManualRetryPending {
		t.Fatalf("a claimed manual attempt not yet made: manual_retry_pending = false")
	}
}

// A continuation (starting_after) keeps the since of the first call while
// the 7-day window moves on: it reaches back as far as the window still
// allows, instead of being refused once the first call's since is older.
func TestRecoverContinuationOutlastsTheWindow(t *testing.T) {
	e := newEnv(t)
	ep := e.mustCreateDefault(orgA).ID
	since := e.clock.now.Add(-RecoverWindow + time.Minute)
	e.exec(`INSERT INTO webhook_deliveries (id, organization_id, livemode, event_id, endpoint_id, status, created_at)
		SELECT 'whd_bulk' || lpad(i::text, 18, '0'), 'org_A', false, 'evt_bulk' || i, $1, 'dead', $2
		FROM generate_series(1, $3::int) AS i`, ep, e.clock.now.Add(-time.Hour), MaxRecover+1)
	path := "/v1/webhook-endpoints/" + ep + "/recover"
	var rec Recovery
	e.post(orgA, path, fmt.Sprintf(`{"since":%d}`, since.Unix())).decode(t, 200, &rec)
	if !rec.HasMore {
		t.Fatalf("first call %+v", rec)
	}
	e.clock.now = e.clock.now.Add(2 * time.Minute) // the user waited before continuing
	e.post(orgA, path, fmt.Sprintf(`{"since":%d,"starting_after":%q}`, since.Unix(), rec.LastDelivery)).decode(t, 200, &rec)
	if rec.Requeued != 1 || rec.HasMore {
		t.Fatalf("continuation %+v, want the last one", rec)
	}
	// Without the cursor, a since outside the window is still refused.
	e.post(orgA, path, fmt.Sprintf(`{"since":%d}`, since.Unix())).assertError(t, wantError{400, "parameter_invalid", "since"})
}
