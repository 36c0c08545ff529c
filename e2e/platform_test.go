package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestKeyLifecycleReachesTheGateway: a key revoked or rolled with the CLI
// stops working at the gateway within a second, with the error a developer
// can act on.
func TestKeyLifecycleReachesTheGateway(t *testing.T) {
	tn := seed(t)
	ctx := context.Background()
	var k struct{ ID, Key string }
	if err := stack.CLIJSON(ctx, &k, "keys", "create", "--org", tn.OrgID, "--env", "sandbox"); err != nil {
		t.Fatal(err)
	}
	if r := call(t, "GET", "/v1/customers", k.Key, "", ""); r.Status != 200 {
		t.Fatalf("fresh key: %d %s", r.Status, r.Raw)
	}
	var rolled struct{ ID, Key string }
	if err := stack.CLIJSON(ctx, &rolled, "keys", "roll", "--id", k.ID, "--expires-in", "now"); err != nil {
		t.Fatal(err)
	}
	r := eventually(t, time.Second, func() apiResponse { return call(t, "GET", "/v1/customers", k.Key, "", "") },
		func(r apiResponse) bool { return r.Status == 401 })
	if r.errObj()["code"] != "api_key_expired" {
		t.Fatalf("rolled key: %s", r.Raw)
	}
	if r := call(t, "GET", "/v1/customers", rolled.Key, "", ""); r.Status != 200 {
		t.Fatalf("replacement key: %d %s", r.Status, r.Raw)
	}
	if _, err := stack.CLI(ctx, "keys", "revoke", "--id", rolled.ID); err != nil {
		t.Fatal(err)
	}
	r = eventually(t, time.Second, func() apiResponse { return call(t, "GET", "/v1/customers", rolled.Key, "", "") },
		func(r apiResponse) bool { return r.Status == 401 })
	if r.errObj()["code"] != "api_key_invalid" {
		t.Fatalf("revoked key: %s", r.Raw)
	}
}

// TestRestrictedKeyScopes: a restricted key may only do what its scopes say.
func TestRestrictedKeyScopes(t *testing.T) {
	tn := seed(t)
	var k struct{ Key string }
	if err := stack.CLIJSON(context.Background(), &k, "keys", "create", "--org", tn.OrgID, "--env", "sandbox",
		"--restricted", "--scopes", "customers:read"); err != nil {
		t.Fatal(err)
	}
	if r := call(t, "GET", "/v1/customers", k.Key, "", ""); r.Status != 200 {
		t.Fatalf("read with customers:read: %d %s", r.Status, r.Raw)
	}
	r := call(t, "POST", "/v1/customers", k.Key, "application/json", `{"email":"a@b.co"}`)
	if r.Status != 403 || r.errObj()["code"] != "scope_missing" || !strings.Contains(r.errObj()["message"].(string), "customers:write") {
		t.Fatalf("write without customers:write: %d %s", r.Status, r.Raw)
	}
}

// TestLimitOverrideFromTheControlPlane: a plan set with `controlplane limits
// set` applies at the gateway on the next request, with the standard headers.
func TestLimitOverrideFromTheControlPlane(t *testing.T) {
	tn := seed(t)
	ctx := context.Background()
	if _, err := stack.CLI(ctx, "limits", "set", "--org", tn.OrgID, "--env", "sandbox", "--policy", "per-org",
		"--rate", "3/60s"); err != nil {
		t.Fatal(err)
	}
	var last apiResponse
	for i := 0; i < 4; i++ {
		last = call(t, "GET", "/v1/customers", tn.SandboxKey, "", "")
		if i < 3 && last.Status != 200 {
			t.Fatalf("request %d within the limit: %d %s", i+1, last.Status, last.Raw)
		}
	}
	e := last.errObj()
	if last.Status != 429 || e["type"] != "rate_limit_error" || e["code"] != "rate_limited" {
		t.Fatalf("4th request: %d %s", last.Status, last.Raw)
	}
	if last.Header.Get("Retry-After") == "" || !strings.Contains(last.Header.Get("RateLimit"), `"per-org";r=0`) {
		t.Fatalf("429 headers: Retry-After=%q RateLimit=%q", last.Header.Get("Retry-After"), last.Header.Get("RateLimit"))
	}
	// The live environment has its own limits.
	if r := call(t, "GET", "/v1/customers", tn.LiveKey, "", ""); r.Status != 200 {
		t.Fatalf("live key under a sandbox override: %d", r.Status)
	}
	if _, err := stack.CLI(ctx, "limits", "delete", "--org", tn.OrgID, "--env", "sandbox", "--policy", "per-org"); err != nil {
		t.Fatal(err)
	}
	if r := call(t, "GET", "/v1/customers", tn.SandboxKey, "", ""); r.Status != 200 {
		t.Fatalf("after deleting the override: %d %s", r.Status, r.Raw)
	}
}

// TestIdempotentCreateThroughTheGateway: a retried POST creates one customer.
func TestIdempotentCreateThroughTheGateway(t *testing.T) {
	tn := seed(t)
	body := `{"email":"once@example.com"}`
	first := call(t, "POST", "/v1/customers", tn.SandboxKey, "application/json", body, "Idempotency-Key", "create-once")
	again := call(t, "POST", "/v1/customers", tn.SandboxKey, "application/json", body, "Idempotency-Key", "create-once")
	if first.Status != 200 || again.Status != 200 || first.Body["id"] != again.Body["id"] {
		t.Fatalf("first %d %s; retry %d %s", first.Status, first.Raw, again.Status, again.Raw)
	}
	if again.Header.Get("Idempotent-Replayed") != "true" || again.Header.Get("Original-Request-Id") != first.Header.Get("Request-Id") {
		t.Fatalf("replay headers: %v", again.Header)
	}
	// The replay's request log names the execution it replays (the
	// dashboard's trace of a replay follows it).
	rid := again.Header.Get("Request-Id")
	log := eventually(t, 30*time.Second, func() apiResponse { return call(t, "GET", "/v1/request-logs/"+rid, tn.SandboxKey, "", "") },
		func(r apiResponse) bool { return r.Status == 200 })
	if h, _ := log.Body["response_headers"].(map[string]any); log.Body["idempotent_replayed"] != true || h["Original-Request-Id"] != first.Header.Get("Request-Id") {
		t.Fatalf("the replay's log: %s", log.Raw)
	}
	list := call(t, "GET", "/v1/customers?email=once@example.com", tn.SandboxKey, "", "")
	if n := len(list.Body["data"].([]any)); n != 1 {
		t.Fatalf("%d customers after a retried create, want 1", n)
	}
	other := call(t, "POST", "/v1/customers", tn.SandboxKey, "application/json", `{"email":"other@example.com"}`, "Idempotency-Key", "create-once")
	if other.Status != 422 || other.errObj()["code"] != "idempotency_key_reused" {
		t.Fatalf("reused key: %d %s", other.Status, other.Raw)
	}
}

// TestRequestLogsAreSearchable: a request made through the gateway can be
// found by its id through the platform API, redacted, within seconds.
func TestRequestLogsAreSearchable(t *testing.T) {
	tn := seed(t)
	created := call(t, "POST", "/v1/customers?api_key="+tn.LiveKey, tn.SandboxKey, "application/json", `{"email":"log@example.com"}`)
	rid := created.Header.Get("Request-Id")
	r := eventually(t, 30*time.Second, func() apiResponse { return call(t, "GET", "/v1/request-logs/"+rid, tn.SandboxKey, "", "") },
		func(r apiResponse) bool { return r.Status == 200 })
	if r.Body["id"] != rid || r.Body["method"] != "POST" || int(r.Body["status"].(float64)) != created.Status {
		t.Fatalf("log entry: %s", r.Raw)
	}
	if strings.Contains(r.Raw, tn.SandboxKey) || strings.Contains(r.Raw, tn.LiveKey) {
		t.Fatalf("a key leaked into the request log: %s", r.Raw)
	}
	// The other environment's key cannot see it.
	if r := call(t, "GET", "/v1/request-logs/"+rid, tn.LiveKey, "", ""); r.Status != 404 {
		t.Fatalf("live key read a sandbox log: %d", r.Status)
	}
	usage := eventually(t, 30*time.Second, func() apiResponse { return call(t, "GET", "/v1/usage", tn.SandboxKey, "", "") },
		func(r apiResponse) bool { return r.Status == 200 && strings.Contains(r.Raw, `"requests"`) })
	var u map[string]any
	_ = json.Unmarshal([]byte(usage.Raw), &u)
	if u["object"] != "list" {
		t.Fatalf("usage: %s", usage.Raw)
	}
}

// TestFailedRequestLogsSayWhy: without body capture, the log of a failed
// request still has the error object the client got, from the upstream or
// from the gateway itself.
func TestFailedRequestLogsSayWhy(t *testing.T) {
	tn := seed(t)
	for name, r := range map[string]apiResponse{
		"upstream": call(t, "GET", "/v1/customers/cus_doesnotexist", tn.SandboxKey, "", ""),
		"gateway":  call(t, "POST", "/v1/customers", tn.SandboxKey, "application/json", `{}`, "Idempotency-Key", strings.Repeat("k", 300)),
	} {
		told := r.errObj()
		if r.Status < 400 || told["message"] == nil {
			t.Fatalf("%s: expected an error object, got %d %s", name, r.Status, r.Raw)
		}
		rid := r.Header.Get("Request-Id")
		logged := eventually(t, 30*time.Second, func() apiResponse { return call(t, "GET", "/v1/request-logs/"+rid, tn.SandboxKey, "", "") },
			func(r apiResponse) bool { return r.Status == 200 })
		e, _ := logged.Body["error"].(map[string]any)
		if e == nil || e["code"] != told["code"] || e["message"] != told["message"] || e["param"] != told["param"] ||
			logged.Body["response_body"] != nil {
			t.Errorf("%s: the client was told %v; the log says %s", name, told, logged.Raw)
		}
	}
}

// TestBodyCaptureFollowsTheSetting: request logs keep no bodies until the
// organisation turns capture on for the environment; then the next request
// through the gateway has its bodies logged, secrets masked, and turning it
// off stops that at once. The other environment is unaffected.
func TestBodyCaptureFollowsTheSetting(t *testing.T) {
	tn := seed(t)
	ctx := context.Background()
	logOf := func(key string, body string) apiResponse {
		t.Helper()
		created := call(t, "POST", "/v1/customers", key, "application/json", body)
		if created.Status != 200 {
			t.Fatalf("create: %d %s", created.Status, created.Raw)
		}
		rid := created.Header.Get("Request-Id")
		return eventually(t, 30*time.Second, func() apiResponse { return call(t, "GET", "/v1/request-logs/"+rid, key, "", "") },
			func(r apiResponse) bool { return r.Status == 200 })
	}
	const body = `{"email":"capture@example.com","metadata":{"password":"hunter2-hunter2"}}`
	if r := logOf(tn.SandboxKey, body); r.Body["request_body"] != nil || r.Body["response_body"] != nil {
		t.Fatalf("bodies logged before capture was turned on: %s", r.Raw)
	}

	var set struct {
		Object  string
		Enabled bool
	}
	if err := stack.CLIJSON(ctx, &set, "orgs", "body-capture", "--org", tn.OrgID, "--env", "sandbox", "--set", "on"); err != nil {
		t.Fatal(err)
	}
	if set.Object != "body_capture" || !set.Enabled {
		t.Fatalf("orgs body-capture --set on: %+v", set)
	}
	// The gateway hears of it through the keys' notification: the very
	// next request may still race it, so poll until one is captured.
	r := eventually(t, 5*time.Second, func() apiResponse { return logOf(tn.SandboxKey, body) },
		func(r apiResponse) bool { return r.Body["request_body"] != nil })
	reqBody, _ := r.Body["request_body"].(string)
	respBody, _ := r.Body["response_body"].(string)
	if !strings.Contains(reqBody, "capture@example.com") || strings.Contains(reqBody, "hunter2") ||
		!strings.Contains(respBody, `"object":"customer"`) && !strings.Contains(respBody, `"object": "customer"`) {
		t.Fatalf("captured bodies: request %q, response %q", reqBody, respBody)
	}
	if r := logOf(tn.LiveKey, body); r.Body["request_body"] != nil {
		t.Fatalf("live logs kept a body while only sandbox capture is on: %s", r.Raw)
	}

	if _, err := stack.CLI(ctx, "orgs", "body-capture", "--org", tn.OrgID, "--env", "sandbox", "--set", "off"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() apiResponse { return logOf(tn.SandboxKey, body) },
		func(r apiResponse) bool { return r.Body["request_body"] == nil })
}

// eventually polls fn until ok holds or the deadline passes, and returns
// the last response.
func eventually(t *testing.T, within time.Duration, fn func() apiResponse, ok func(apiResponse) bool) apiResponse {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r := fn()
		if ok(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s; last response %d %s", within, r.Status, r.Raw)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGatewayListensOnlyWhereConfigured: the stack keeps every process on
// loopback (GATEWAY_BIND=127.0.0.1, the others' *_ADDR=127.0.0.1:port), and
// the gateway answers whatever name a client uses for that address, such as
// the http://localhost:8080 that make run prints. A host in the site
// address used to do neither: the gateway listened on every interface and
// answered any other Host with an empty 200.
func TestGatewayListensOnlyWhereConfigured(t *testing.T) {
	_, port, _ := net.SplitHostPort(stack.Gateway.Addr)
	req, _ := http.NewRequest("GET", stack.Gateway.URL()+"/v1/customers", nil)
	req.Host = "localhost:" + port
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || !strings.Contains(string(raw), `"api_key_missing"`) || resp.Header.Get("Request-Id") == "" {
		t.Errorf("GET http://localhost:%s/v1/customers without a key: %d %q, Request-Id %q; want 401 api_key_missing",
			port, resp.StatusCode, raw, resp.Header.Get("Request-Id"))
	}

	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	others := 0
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast() {
			continue
		}
		others++
		for name, p := range map[string]*Proc{"gateway": stack.Gateway, "control plane": stack.Control,
			"sample API": stack.Sample, "deliverer": stack.Deliverer} {
			_, port, _ := net.SplitHostPort(p.Addr)
			target := net.JoinHostPort(ipn.IP.String(), port)
			if c, err := net.DialTimeout("tcp", target, 2*time.Second); err == nil {
				c.Close()
				t.Errorf("the %s, configured on %s, accepts connections on %s", name, p.Addr, target)
			}
		}
	}
	if others == 0 {
		t.Skip("this machine has no address but loopback to check")
	}
}
