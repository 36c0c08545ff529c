package webhooks

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/controlplane/router"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/ssrf"
)

func TestCreateEndpointReturnsTheSecretOnceAndStoresItSealed(t *testing.T) {
	e := newEnv(t)
	ep := e.mustCreate(orgA, `{"url":"`+publicURL+`","enabled_events":["customer.created","customer.*","customer.created"],
		"description":"Billing sync","api_version":"2026-06-01","metadata":{"team":"billing"}}`)

	if !ids.Valid(ep.ID, ids.WebhookEndpoint) || ep.Object != "webhook_endpoint" || ep.Livemode ||
		ep.Created != e.clock.now.Unix() || ep.URL != publicURL || ep.Status != "enabled" || ep.DisabledReason != nil ||
		ep.Description == nil || *ep.Description != "Billing sync" || ep.APIVersion == nil || *ep.APIVersion != "2026-06-01" ||
		ep.Metadata["team"] != "billing" {
		t.Fatalf("endpoint = %+v", ep)
	}
	if !slices.Equal(ep.EnabledEvents, []string{"customer.created", "customer.*"}) {
		t.Fatalf("enabled_events = %v, want de-duplicated in order", ep.EnabledEvents)
	}
	raw, ok := strings.CutPrefix(ep.Secret, "whsec_")
	if key, err := base64.StdEncoding.DecodeString(raw); !ok || err != nil || len(key) != 32 {
		t.Fatalf("secret %q is not whsec_ + base64 of 32 bytes", ep.Secret)
	}

	res := e.post(orgA, "/v1/webhook-endpoints", `{"url":"`+publicURL+`","enabled_events":["*"]}`)
	if res.status != 200 || res.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("create answered %d with Cache-Control %q, want no-store", res.status, res.header.Get("Cache-Control"))
	}

	// Never shown again.
	r := e.get(orgA, "/v1/webhook-endpoints/"+ep.ID)
	var got map[string]any
	r.decode(t, 200, &got)
	if _, has := got["secret"]; has || strings.Contains(string(r.raw), raw) {
		t.Fatalf("GET shows the secret: %s", r.raw)
	}

	// Stored only sealed: the secret appears nowhere in the database.
	for _, table := range []string{"webhook_endpoints", "webhook_endpoint_secrets", "audit_logs", "events"} {
		for _, needle := range []string{ep.Secret, raw} {
			if n := e.count(`SELECT count(*) FROM `+table+` t WHERE position($1 in t::text) > 0`, needle); n != 0 {
				t.Fatalf("the secret is stored in clear in %s", table)
			}
		}
	}
	if n := e.count(`SELECT count(*) FROM webhook_endpoint_secrets WHERE position($1::bytea in ciphertext) > 0`,
		[]byte(raw)); n != 0 {
		t.Fatal("the ciphertext contains the secret")
	}
	secrets, err := ActiveSecrets(context.Background(), e.pool, e.box, ep.ID, e.clock.now)
	if err != nil || len(secrets) != 1 || secrets[0] != ep.Secret {
		t.Fatalf("ActiveSecrets = %v, %v; want the created secret", secrets, err)
	}
	// Sealed to its row: the ciphertext moved to another row does not open.
	e.exec(`UPDATE webhook_endpoint_secrets SET id = 'wesec_moved' WHERE endpoint_id = $1`, ep.ID)
	if _, err := ActiveSecrets(context.Background(), e.pool, e.box, ep.ID, e.clock.now); err == nil {
		t.Fatal("a ciphertext opened under another row id")
	}

	if a := e.auditActions(ep.ID); !slices.Equal(a, []string{"webhook_endpoint.created"}) {
		t.Fatalf("audit = %v", a)
	}
	if n := e.count(`SELECT count(*) FROM audit_logs WHERE target_id = $1 AND organization_id = 'org_A'
		AND livemode = false AND actor_type = 'api_key' AND actor_id = 'key_A' AND target_type = 'webhook_endpoint'
		AND data->>'url' = $2`, ep.ID, publicURL); n != 1 {
		t.Fatal("audit entry does not name the actor, environment and url")
	}
}

func TestCreateEndpointFormEncoded(t *testing.T) {
	e := newEnv(t)
	var ep Endpoint
	e.form(orgA, "/v1/webhook-endpoints", "url="+publicURL+
		"&enabled_events[]=customer.created&enabled_events[]=invoice.*&metadata[team]=ops&description=From+a+form").
		decode(t, 200, &ep)
	if !slices.Equal(ep.EnabledEvents, []string{"customer.created", "invoice.*"}) || ep.Metadata["team"] != "ops" ||
		*ep.Description != "From a form" || ep.APIVersion != nil || ep.Secret == "" {
		t.Fatalf("endpoint = %+v", ep)
	}
	e.form(orgA, "/v1/webhook-endpoints", "url="+publicURL+"&enabled_events[0]=a.b&enabled_events[1]=c.d").decode(t, 200, &ep)
	if !slices.Equal(ep.EnabledEvents, []string{"a.b", "c.d"}) {
		t.Fatalf("indexed list = %v", ep.EnabledEvents)
	}
	// A metadata key that is a number is a key, as in JSON.
	e.form(orgA, "/v1/webhook-endpoints/"+ep.ID, "metadata[0]=first").decode(t, 200, &ep)
	if ep.Metadata["0"] != "first" {
		t.Fatalf("metadata[0]=first: %v", ep.Metadata)
	}
}

func TestCreateEndpointRefusals(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name    string
		id      identity.Identity
		body    string
		want    wantError
		message string
	}{
		{"no body", orgA, ``, wantError{400, "parameter_missing", "url"}, ""},
		{"no url", orgA, `{"enabled_events":["*"]}`, wantError{400, "parameter_missing", "url"}, ""},
		{"no events", orgA, `{"url":"` + publicURL + `"}`, wantError{400, "parameter_missing", "enabled_events"}, ""},
		{"empty events", orgA, `{"url":"` + publicURL + `","enabled_events":[]}`, wantError{400, "parameter_invalid", "enabled_events"}, ""},
		{"events not a list", orgA, `{"url":"` + publicURL + `","enabled_events":"*"}`, wantError{400, "parameter_invalid", "enabled_events"}, ""},
		{"bad event type", orgA, `{"url":"` + publicURL + `","enabled_events":["a.b","Customer"]}`, wantError{400, "parameter_invalid", "enabled_events[1]"}, ""},
		{"bad wildcard", orgA, `{"url":"` + publicURL + `","enabled_events":["customer.*.created"]}`, wantError{400, "parameter_invalid", "enabled_events[0]"}, ""},
		{"ftp", orgA, `{"url":"ftp://93.184.215.14/x","enabled_events":["*"]}`, wantError{400, "url_invalid", "url"}, "scheme must be https or http"},
		{"not a url", orgA, `{"url":"hooks.example","enabled_events":["*"]}`, wantError{400, "url_invalid", "url"}, "Invalid url"},
		{"credentials", orgA, `{"url":"https://u:p@93.184.215.14/","enabled_events":["*"]}`, wantError{400, "url_invalid", "url"}, "credentials"},
		{"loopback", orgA, `{"url":"https://127.0.0.1:8443/","enabled_events":["*"]}`, wantError{400, "url_invalid", "url"}, "publicly routable"},
		{"localhost", orgA, `{"url":"http://localhost/","enabled_events":["*"]}`, wantError{400, "url_invalid", "url"}, "publicly routable"},
		{"private", orgA, `{"url":"https://10.1.2.3/","enabled_events":["*"]}`, wantError{400, "url_invalid", "url"}, "publicly routable"},
		{"metadata service", orgA, `{"url":"http://169.254.169.254/latest","enabled_events":["*"]}`, wantError{400, "url_invalid", "url"}, "publicly routable"},
		{"live needs https", orgALive, `{"url":"http://93.184.215.14/","enabled_events":["*"]}`, wantError{400, "url_invalid", "url"}, "live mode webhook endpoints must use https"},
		{"url with NUL", orgA, `{"url":"https://93.184.215.14/\u0000","enabled_events":["*"]}`, wantError{400, "parameter_invalid", "url"}, ""},
		{"unknown api version", orgA, `{"url":"` + publicURL + `","enabled_events":["*"],"api_version":"2020-01-01"}`, wantError{400, "parameter_invalid", "api_version"}, "2026-11-01"},
		{"metadata not strings", orgA, `{"url":"` + publicURL + `","enabled_events":["*"],"metadata":{"n":1}}`, wantError{400, "parameter_invalid", "metadata[n]"}, ""},
		{"description too long", orgA, `{"url":"` + publicURL + `","enabled_events":["*"],"description":"` + strings.Repeat("x", MaxDescriptionLen+1) + `"}`, wantError{400, "parameter_invalid", "description"}, ""},
		{"disabled on create", orgA, `{"url":"` + publicURL + `","enabled_events":["*"],"disabled":true}`, wantError{400, "parameter_unknown", "disabled"}, ""},
		{"unknown parameter", orgA, `{"url":"` + publicURL + `","enabled_events":["*"],"secret":"whsec_x"}`, wantError{400, "parameter_unknown", "secret"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := e.post(tc.id, "/v1/webhook-endpoints", tc.body).assertError(t, tc.want)
			if !strings.Contains(msg, tc.message) {
				t.Errorf("message %q does not contain %q", msg, tc.message)
			}
		})
	}
	if n := e.count(`SELECT count(*) FROM webhook_endpoints`); n != 0 {
		t.Fatalf("%d endpoints stored from refused requests", n)
	}
}

func TestAllowlistedURLs(t *testing.T) {
	e := newEnvWithPolicy(t, loopback())
	ep := e.mustCreate(orgA, `{"url":"http://127.0.0.1:9000/hook","enabled_events":["*"]}`)
	if ep.URL != "http://127.0.0.1:9000/hook" {
		t.Fatalf("url = %s", ep.URL)
	}
	// The allowlist opens the range, not plain http in live mode.
	e.post(orgALive, "/v1/webhook-endpoints", `{"url":"http://127.0.0.1:9000/hook","enabled_events":["*"]}`).
		assertError(t, wantError{400, "url_invalid", "url"})
	e.mustCreate(orgALive, `{"url":"https://127.0.0.1:9000/hook","enabled_events":["*"]}`)
	// Other private ranges stay closed.
	e.post(orgA, "/v1/webhook-endpoints", `{"url":"http://192.168.1.1/","enabled_events":["*"]}`).
		assertError(t, wantError{400, "url_invalid", "url"})

	strict := newEnvWithPolicy(t, ssrf.Policy{RequireHTTPS: true})
	strict.post(orgA, "/v1/webhook-endpoints", `{"url":"http://93.184.215.14/","enabled_events":["*"]}`).
		assertError(t, wantError{400, "url_invalid", "url"})
}

func TestUpdateEndpoint(t *testing.T) {
	e := newEnv(t)
	ep := e.mustCreate(orgA, `{"url":"`+publicURL+`","enabled_events":["*"],"description":"d","metadata":{"a":"1","b":"2"}}`)
	path := "/v1/webhook-endpoints/" + ep.ID

	var got Endpoint
	e.post(orgA, path, `{"url":"https://93.184.215.14/v2","enabled_events":["customer.*"],"metadata":{"b":"","c":"3"},"description":""}`).
		decode(t, 200, &got)
	if got.URL != "https://93.184.215.14/v2" || !slices.Equal(got.EnabledEvents, []string{"customer.*"}) ||
		got.Description != nil || fmt.Sprint(got.Metadata) != "map[a:1 c:3]" || got.Secret != "" {
		t.Fatalf("after update: %+v", got)
	}

	// Disable, then enable: the platform's failure bookkeeping starts afresh.
	e.form(orgA, path, "disabled=true").decode(t, 200, &got)
	if got.Status != "disabled" || got.DisabledReason == nil {
		t.Fatalf("after disabling: %+v", got)
	}
	e.exec(`UPDATE webhook_endpoints SET failing_since = now() - interval '3 days', failing_alert_level = 2,
		disabled_reason = 'The endpoint answered 410 Gone.' WHERE id = $1`, ep.ID)
	e.post(orgA, path, `{"disabled":false}`).decode(t, 200, &got)
	if got.Status != "enabled" || got.DisabledReason != nil {
		t.Fatalf("after enabling: %+v", got)
	}
	if n := e.count(`SELECT count(*) FROM webhook_endpoints WHERE id = $1 AND failing_since IS NULL
		AND failing_alert_level = 0 AND disabled_reason IS NULL`, ep.ID); n != 1 {
		t.Fatal("re-enabling kept the old failure state")
	}

	// Nothing changes: no write, no audit entry.
	e.post(orgA, path, `{"url":"https://93.184.215.14/v2","disabled":false}`).decode(t, 200, &got)
	var cleared Endpoint // a fresh value: decoding into got would merge maps
	e.post(orgA, path, `{"metadata":""}`).decode(t, 200, &cleared)
	if cleared.Metadata == nil || len(cleared.Metadata) != 0 {
		t.Fatalf("metadata not cleared: %v", cleared.Metadata)
	}
	want := []string{"webhook_endpoint.created", "webhook_endpoint.updated", "webhook_endpoint.updated",
		"webhook_endpoint.updated", "webhook_endpoint.updated"}
	if a := e.auditActions(ep.ID); !slices.Equal(a, want) {
		t.Fatalf("audit = %v, want %v", a, want)
	}
	if n := e.count(`SELECT count(*) FROM audit_logs WHERE target_id = $1 AND data->'status'->>'to' = 'disabled'`, ep.ID); n != 1 {
		t.Fatal("the disable is not in the audit log")
	}

	// A percent-encoded NUL in the path is kept as sent, and encoded in the
	// audit entries (decoded, Postgres refused them: a 500).
	odd := e.mustCreate(orgA, `{"url":"https://93.184.215.14/in%00x","enabled_events":["*"]}`)
	e.post(orgA, "/v1/webhook-endpoints/"+odd.ID, `{"url":"https://93.184.215.14/v2%00y"}`).decode(t, 200, &got)
	if got.URL != "https://93.184.215.14/v2%00y" {
		t.Fatalf("url %q", got.URL)
	}

	for _, tc := range []struct {
		name string
		body string
		want wantError
	}{
		{"api_version is fixed", `{"api_version":"2026-06-01"}`, wantError{400, "parameter_invalid", "api_version"}},
		{"private url", `{"url":"https://10.0.0.1/"}`, wantError{400, "url_invalid", "url"}},
		{"empty url", `{"url":""}`, wantError{400, "parameter_missing", "url"}},
		{"disabled not a bool", `{"disabled":"yes"}`, wantError{400, "parameter_invalid", "disabled"}},
		{"no events", `{"enabled_events":[]}`, wantError{400, "parameter_invalid", "enabled_events"}},
		{"too much metadata", `{"metadata":{"k":"v"` + manyKeys(50) + `}}`, wantError{400, "parameter_invalid", "metadata"}},
	} {
		t.Run(tc.name, func(t *testing.T) { e.post(orgA, path, tc.body).assertError(t, tc.want) })
	}
}

// manyKeys is ",\"m0\":\"v\",…" with n keys.
func manyKeys(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, `,"m%d":"v"`, i)
	}
	return b.String()
}

func TestListAndDeleteEndpoints(t *testing.T) {
	e := newEnv(t)
	var made []string
	for i := 0; i < 3; i++ {
		e.clock.now = e.clock.now.Add(time.Second)
		made = append(made, e.mustCreateDefault(orgA).ID)
	}
	var l router.List[Endpoint]
	e.get(orgA, "/v1/webhook-endpoints?limit=2").decode(t, 200, &l)
	if len(l.Data) != 2 || l.Data[0].ID != made[2] || l.Data[1].ID != made[1] || !l.HasMore || l.URL != "/v1/webhook-endpoints" {
		t.Fatalf("first page %+v", l)
	}
	e.get(orgA, "/v1/webhook-endpoints?limit=2&starting_after="+made[1]).decode(t, 200, &l)
	if len(l.Data) != 1 || l.Data[0].ID != made[0] || l.HasMore {
		t.Fatalf("second page %+v", l)
	}
	e.get(orgA, "/v1/webhook-endpoints?ending_before="+made[0]).decode(t, 200, &l)
	if len(l.Data) != 2 || l.Data[0].ID != made[2] || l.HasMore {
		t.Fatalf("page before %+v", l)
	}
	for _, q := range []string{"?limit=0", "?starting_after=evt_1", "?url=x"} {
		if r := e.get(orgA, "/v1/webhook-endpoints"+q); r.status != 400 {
			t.Errorf("%s: status %d", q, r.status)
		}
	}

	d := e.seedDelivery(orgA, made[0], "failed", e.clock.now)
	var del struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Deleted bool   `json:"deleted"`
	}
	e.do(orgA, http.MethodDelete, "/v1/webhook-endpoints/"+made[0], "", "").decode(t, 200, &del)
	if del.ID != made[0] || del.Object != "webhook_endpoint" || !del.Deleted {
		t.Fatalf("delete answered %+v", del)
	}
	e.get(orgA, "/v1/webhook-endpoints/"+made[0]).assertError(t, wantError{404, "resource_missing", "id"})
	e.do(orgA, http.MethodDelete, "/v1/webhook-endpoints/"+made[0], "", "").assertError(t, wantError{404, "resource_missing", "id"})
	if n := e.count(`SELECT count(*) FROM webhook_endpoint_secrets WHERE endpoint_id = $1`, made[0]) +
		e.count(`SELECT count(*) FROM webhook_deliveries WHERE id = $1`, d); n != 0 {
		t.Fatal("secrets or deliveries of the deleted endpoint remain")
	}
	if a := e.auditActions(made[0]); !slices.Equal(a, []string{"webhook_endpoint.created", "webhook_endpoint.deleted"}) {
		t.Fatalf("audit = %v", a)
	}
}

// An organisation has at most MaxEndpoints endpoints per environment; the
// other environment and a freed place are unaffected, and two creates
// racing for the last place cannot both take it.
func TestEndpointLimitPerEnvironment(t *testing.T) {
	e := newEnv(t)
	var made []string
	for range MaxEndpoints - 1 {
		made = append(made, e.mustCreateDefault(orgA).ID)
	}
	// Two creates for the last place, both held at the organisation's lock
	// until it is released, so that one counts after the other committed.
	body := `{"url":"` + publicURL + `","enabled_events":["*"]}`
	ctx := context.Background()
	hold, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hold.Exec(ctx, `SELECT FROM organizations WHERE id = 'org_A' FOR NO KEY UPDATE`); err != nil {
		t.Fatal(err)
	}
	statuses := make(chan int, 2)
	for range 2 {
		go func() { statuses <- e.post(orgA, "/v1/webhook-endpoints", body).status }()
	}
	for e.count(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`) < 2 {
		runtime.Gosched() // until both wait for the lock
	}
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := []int{<-statuses, <-statuses}; !slices.Contains(got, 200) || !slices.Contains(got, 400) {
		t.Fatalf("two creates for the last place answered %v, want one 200 and one 400", got)
	}
	msg := e.post(orgA, "/v1/webhook-endpoints", body).assertError(t, wantError{400, "limit_reached", ""})
	if !strings.Contains(msg, "16 webhook endpoints in sandbox") {
		t.Fatalf("message %q", msg)
	}
	if n := e.count(`SELECT count(*) FROM webhook_endpoints WHERE organization_id = 'org_A' AND NOT livemode`); n != MaxEndpoints {
		t.Fatalf("%d sandbox endpoints stored, want %d", n, MaxEndpoints)
	}
	e.mustCreateDefault(orgALive) // live has its own places
	var del map[string]any
	e.do(orgA, http.MethodDelete, "/v1/webhook-endpoints/"+made[0], "", "").decode(t, 200, &del)
	e.mustCreateDefault(orgA)
}

// Rotating with expires_in=0 in a loop must not pile up signing secrets:
// expired ones sign nothing, yet the deliverer reads and decrypts every
// stored row of an endpoint and hashes them all at each fan-out. A rotation
// removes the secrets that have already expired.
func TestRotateSecretRemovesExpiredSecrets(t *testing.T) {
	e := newEnv(t)
	ep := e.mustCreateDefault(orgA)
	path := "/v1/webhook-endpoints/" + ep.ID + "/rotate-secret"
	for i := 0; i < 10; i++ {
		e.clock.now = e.clock.now.Add(time.Second)
		e.post(orgA, path, `{"expires_in":0}`).decode(t, 200, &Endpoint{})
	}
	// The new secret, and the one this rotation expired.
	if n := e.count(`SELECT count(*) FROM webhook_endpoint_secrets WHERE endpoint_id = $1`, ep.ID); n != 2 {
		t.Fatalf("%d signing secrets stored after 10 rotations, want 2", n)
	}
}

func TestRotateSecret(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ep := e.mustCreateDefault(orgA)
	e.clock.now = e.clock.now.Add(time.Second)
	t0 := e.clock.now
	path := "/v1/webhook-endpoints/" + ep.ID + "/rotate-secret"

	var rotated Endpoint
	res := e.post(orgA, path, `{"expires_in":3600}`)
	res.decode(t, 200, &rotated)
	if rotated.ID != ep.ID || !strings.HasPrefix(rotated.Secret, "whsec_") || rotated.Secret == ep.Secret {
		t.Fatalf("rotate answered %+v", rotated)
	}
	// Nothing may keep the secret: caches, nor the gateway's idempotency
	// records (which keep only that such a request ran).
	if cc := res.header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("rotate answered Cache-Control %q, want no-store", cc)
	}
	for _, tc := range []struct {
		at   time.Time
		want []string
	}{
		{t0, []string{rotated.Secret, ep.Secret}},
		{t0.Add(3599 * time.Second), []string{rotated.Secret, ep.Secret}},
		{t0.Add(3600 * time.Second), []string{rotated.Secret}},
		{t0.Add(48 * time.Hour), []string{rotated.Secret}},
	} {
		got, err := ActiveSecrets(ctx, e.pool, e.box, ep.ID, tc.at)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("at t0+%s: secrets %v (%v), want %d newest first", tc.at.Sub(t0), len(got), err, len(tc.want))
		}
	}

	// The default keeps the old secret a day; a later rotation does not
	// extend an earlier expiry.
	e.clock.now = t0.Add(time.Minute)
	var second Endpoint
	e.form(orgA, path, "").decode(t, 200, &second)
	got, _ := ActiveSecrets(ctx, e.pool, e.box, ep.ID, t0.Add(2*time.Hour))
	if !slices.Equal(got, []string{second.Secret, rotated.Secret}) {
		t.Fatalf("two hours on: %d secrets, want the two newest", len(got))
	}
	got, _ = ActiveSecrets(ctx, e.pool, e.box, ep.ID, t0.Add(time.Minute+24*time.Hour))
	if !slices.Equal(got, []string{second.Secret}) {
		t.Fatalf("a day on: %d secrets, want the newest only", len(got))
	}

	// Too many secrets in use, unless the old ones expire now. Three are
	// in use now (the first two are still within their grace).
	for i := 0; i < MaxActiveSecrets-3; i++ {
		e.clock.now = e.clock.now.Add(time.Second)
		e.post(orgA, path, `{"expires_in":600}`).decode(t, 200, &rotated)
	}
	e.post(orgA, path, `{"expires_in":600}`).assertError(t, wantError{400, "parameter_invalid", "expires_in"})
	e.clock.now = e.clock.now.Add(time.Second)
	e.post(orgA, path, `{"expires_in":0}`).decode(t, 200, &rotated)
	got, _ = ActiveSecrets(ctx, e.pool, e.box, ep.ID, e.clock.now)
	if !slices.Equal(got, []string{rotated.Secret}) {
		t.Fatalf("after expires_in=0: %d secrets, want only the new one", len(got))
	}

	for _, body := range []string{`{"expires_in":-1}`, `{"expires_in":604801}`, `{"expires_in":"soon"}`, `{"expires_at":1}`} {
		if r := e.post(orgA, path, body); r.status != 400 {
			t.Errorf("%s: status %d", body, r.status)
		}
	}
	n := e.count(`SELECT count(*) FROM audit_logs WHERE target_id = $1 AND action = 'webhook_endpoint.secret_rotated'`, ep.ID)
	if want := 2 + (MaxActiveSecrets - 3) + 1; n != want {
		t.Fatalf("%d rotation audit entries, want %d", n, want)
	}
	var data map[string]any
	if err := e.pool.QueryRow(ctx, `SELECT data FROM audit_logs WHERE target_id = $1 AND action = 'webhook_endpoint.secret_rotated'
		ORDER BY id LIMIT 1`, ep.ID).Scan(&data); err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(data); strings.Contains(string(b), "whsec_") {
		t.Fatalf("audit data holds a secret: %s", b)
	}
}
