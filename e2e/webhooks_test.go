package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// hookReceiver is a local webhook endpoint that records what it is sent.
type hookReceiver struct {
	*httptest.Server
	mu   sync.Mutex
	got  []receivedWebhook
	fail int // answer 500 to this many requests first
}

type receivedWebhook struct {
	Header http.Header
	Body   []byte
}

func newHookReceiver(t *testing.T) *hookReceiver {
	rc := &hookReceiver{}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		defer rc.mu.Unlock()
		rc.got = append(rc.got, receivedWebhook{r.Header.Clone(), b})
		if rc.fail > 0 {
			rc.fail--
			http.Error(w, "not yet", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *hookReceiver) received() []receivedWebhook {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]receivedWebhook(nil), rc.got...)
}

// standardWebhooksSignature is the reference algorithm of the Standard
// Webhooks specification, written here independently of internal/whsign.
func standardWebhooksSignature(secret, id, ts string, body []byte) string {
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + ts + "."))
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// TestCustomerCreatedWebhook is the webhook promise end to end: a customer
// created through the gateway reaches the developer's endpoint as a signed
// customer.created event, and the attempt is listed by the API.
func TestCustomerCreatedWebhook(t *testing.T) {
	tn := seed(t)
	rc := newHookReceiver(t)
	ep := call(t, "POST", "/v1/webhook-endpoints", tn.SandboxKey, "application/json",
		`{"url":"`+rc.URL+`/hooks","enabled_events":["customer.*"]}`)
	secret, _ := ep.Body["secret"].(string)
	if ep.Status != 200 || !strings.HasPrefix(secret, "whsec_") {
		t.Fatalf("creating the endpoint: %d %s", ep.Status, ep.Raw)
	}
	if again := call(t, "GET", "/v1/webhook-endpoints/"+ep.Body["id"].(string), tn.SandboxKey, "", ""); strings.Contains(again.Raw, secret) {
		t.Fatal("the secret is shown again after creation")
	}

	created := call(t, "POST", "/v1/customers", tn.SandboxKey, "application/json", `{"email":"hook@example.com"}`,
		"Idempotency-Key", "hook-1")
	if created.Status != 200 {
		t.Fatalf("create: %d %s", created.Status, created.Raw)
	}
	// A replay of the same request emits nothing more.
	call(t, "POST", "/v1/customers", tn.SandboxKey, "application/json", `{"email":"hook@example.com"}`, "Idempotency-Key", "hook-1")

	var hook receivedWebhook
	deadline := time.Now().Add(30 * time.Second)
	for {
		if got := rc.received(); len(got) > 0 {
			hook = got[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no webhook within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	id, ts := hook.Header.Get("webhook-id"), hook.Header.Get("webhook-timestamp")
	want := standardWebhooksSignature(secret, id, ts, hook.Body)
	if !strings.Contains(" "+hook.Header.Get("webhook-signature")+" ", " "+want+" ") {
		t.Fatalf("signature %q does not verify (want %q among them)", hook.Header.Get("webhook-signature"), want)
	}
	var evt struct {
		ID, Object, Type string
		Livemode         bool
		Data             struct{ Object map[string]any }
		Request          struct {
			ID             string `json:"id"`
			IdempotencyKey string `json:"idempotency_key"`
		}
	}
	if err := json.Unmarshal(hook.Body, &evt); err != nil {
		t.Fatal(err)
	}
	if evt.Object != "event" || evt.Type != "customer.created" || evt.Livemode || evt.Data.Object["id"] != created.Body["id"] ||
		evt.Request.ID != created.Header.Get("Request-Id") || evt.Request.IdempotencyKey != "hook-1" {
		t.Fatalf("event: %s", hook.Body)
	}

	list := eventually(t, 10*time.Second, func() apiResponse {
		return call(t, "GET", "/v1/webhook-deliveries?event="+evt.ID, tn.SandboxKey, "", "")
	}, func(r apiResponse) bool {
		d, _ := r.Body["data"].([]any)
		return r.Status == 200 && len(d) == 1 && d[0].(map[string]any)["status"] == "succeeded"
	})
	delivery := list.Body["data"].([]any)[0].(map[string]any)
	if delivery["id"] != id {
		t.Fatalf("webhook-id %s is not the delivery id %v", id, delivery["id"])
	}
	detail := call(t, "GET", "/v1/webhook-deliveries/"+id, tn.SandboxKey, "", "")
	attempts, _ := detail.Body["attempts"].([]any)
	if len(attempts) != 1 || attempts[0].(map[string]any)["status_code"] != float64(204) {
		t.Fatalf("delivery detail: %s", detail.Raw)
	}
	if n := len(rc.received()); n != 1 {
		t.Fatalf("hookReceiver got %d webhooks for one create (the idempotent replay must emit nothing)", n)
	}

	// Support retries a delivery by hand: a second, manual attempt.
	retry := call(t, "POST", "/v1/webhook-deliveries/"+id+"/retry", tn.SandboxKey, "", "")
	if retry.Status != 200 {
		t.Fatalf("retry: %d %s", retry.Status, retry.Raw)
	}
	eventually(t, 30*time.Second, func() apiResponse { return call(t, "GET", "/v1/webhook-deliveries/"+id, tn.SandboxKey, "", "") },
		func(r apiResponse) bool {
			a, _ := r.Body["attempts"].([]any)
			return len(a) == 2 && a[1].(map[string]any)["trigger"] == "manual"
		})
	if got := rc.received(); len(got) != 2 || got[1].Header.Get("webhook-id") != id {
		t.Fatalf("manual retry: hookReceiver got %d webhooks", len(got))
	}
}

// TestWebhookEndpointRefusesInternalAddresses: the SSRF guard at creation.
func TestWebhookEndpointRefusesInternalAddresses(t *testing.T) {
	tn := seed(t)
	for _, u := range []string{"http://169.254.169.254/latest/meta-data", "http://10.0.0.1/", "ftp://example.com/"} {
		r := call(t, "POST", "/v1/webhook-endpoints", tn.SandboxKey, "application/json", `{"url":"`+u+`","enabled_events":["*"]}`)
		if r.Status != 400 || r.errObj()["code"] != "url_invalid" {
			t.Errorf("%s: %d %s", u, r.Status, r.Raw)
		}
	}
	if r := call(t, "POST", "/v1/webhook-endpoints", tn.LiveKey, "application/json", `{"url":"http://example.com/","enabled_events":["*"]}`); r.Status != 400 {
		t.Errorf("live mode accepted a plain-http endpoint: %d %s", r.Status, r.Raw)
	}
}
