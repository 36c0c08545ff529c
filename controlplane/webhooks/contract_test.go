package webhooks

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/gatehouse/gatehouse/controlplane/events"
	"github.com/gatehouse/gatehouse/controlplane/router"
	"github.com/gatehouse/gatehouse/controlplane/server"
	"github.com/gatehouse/gatehouse/deliverer"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/outbox"
	"github.com/gatehouse/gatehouse/internal/testenv"
	"github.com/gatehouse/gatehouse/internal/whsign"
)

// The contract with the deliverer, end to end: an event from POST
// /v1/events is fanned out to the endpoint, and what retry and test write
// is what the deliverer acts on (trigger manual, signed with every
// unexpired secret, disabled endpoints included).

// receiver records the webhooks it gets.
type receiver struct {
	url string
	got chan receivedHook
}

type receivedHook struct {
	header http.Header
	body   []byte
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{got: make(chan receivedHook, 16)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.got <- receivedHook{header: req.Header.Clone(), body: b}
		io.WriteString(w, "thanks")
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL + "/hooks"
	return r
}

func (r *receiver) next(t *testing.T) receivedHook {
	t.Helper()
	select {
	case h := <-r.got:
		return h
	case <-time.After(30 * time.Second):
		t.Fatal("no webhook arrived")
		return receivedHook{}
	}
}

// startDeliverer runs a deliverer on e's database; it consumes the
// returned events topic.
func startDeliverer(t *testing.T, e *env) (brokers []string, topic string) {
	t.Helper()
	brokers = testenv.Kafka(t)
	topic = testenv.KafkaTopic(t, brokers, "webhooks", 1)
	w, err := deliverer.NewWorker(deliverer.WorkerConfig{
		Brokers: brokers, Topic: topic, DeadLetterTopic: testenv.KafkaTopic(t, brokers, "webhooks", 1),
		GroupID: "webhooks-contract-" + testenv.Suffix(), DB: e.pool, Box: e.box, Policy: loopback(),
		SpoolDir: t.TempDir(), PollInterval: 20 * time.Millisecond, SecretTTL: time.Millisecond,
		Logger: zaptest.NewLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("deliverer: %v", err)
		}
	})
	return brokers, topic
}

// waitAttempts polls until the delivery has been attempted count times.
func (e *env) waitAttempts(t *testing.T, delivery string, count int) Delivery {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var d Delivery
		e.get(orgA, "/v1/webhook-deliveries/"+delivery).decode(t, 200, &d)
		if d.Attempts != nil && len(*d.Attempts) >= count && !d.ManualRetryPending {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivery %s not attempted %d times: %+v", delivery, count, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDelivererHonoursManualAttempts(t *testing.T) {
	e := newEnvWithPolicy(t, loopback())
	e.clock.now = time.Now() // the deliverer runs on the real clock
	rcv := newReceiver(t)
	ep := e.mustCreate(orgA, `{"url":"`+rcv.url+`","enabled_events":["customer.created"]}`)
	brokers, topic := startDeliverer(t, e)

	// An event created through POST /v1/events fans out to the endpoint
	// (scheduled: it is an ordinary first attempt).
	sender := outbox.NewKafkaSender(brokers)
	prod, err := outbox.New(outbox.Config{Dir: t.TempDir(), Linger: time.Millisecond}, sender)
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithCancel(context.Background())
	pdone := make(chan struct{})
	go func() { _ = prod.Run(pctx); close(pdone) }()
	t.Cleanup(func() { pcancel(); <-pdone; sender.Close() })
	eventsAPI := events.NewAPI(events.Config{DB: e.pool, Producer: prod, Topic: topic, Logger: zaptest.NewLogger(t)})
	evHandler := server.New(server.Config{IdentitySecret: testSecret, API: []router.Routes{eventsAPI}}).Handler()
	req := httptest.NewRequest(http.MethodPost, "/v1/events", strings.NewReader(`{"type":"customer.created","data":{"id":"cus_1"}}`))
	req.Header.Set("Content-Type", "application/json")
	signed := orgA
	signed.RequestID = "req_contract"
	identity.NewSigner(testSecret, nil).Apply(req, signed)
	rec := httptest.NewRecorder()
	evHandler.ServeHTTP(rec, req)
	var created events.Object
	response{status: rec.Code, header: rec.Header(), raw: rec.Body.Bytes()}.decode(t, 200, &created)
	hook := rcv.next(t)
	if err := whsign.Verify(ep.Secret, hook.header, hook.body, time.Minute, time.Now()); err != nil {
		t.Fatalf("event webhook does not verify: %v", err)
	}
	var sent events.Object
	if err := json.Unmarshal(hook.body, &sent); err != nil || sent.ID != created.ID || string(sent.Data) != `{"object":{"id":"cus_1"}}` {
		t.Fatalf("event webhook body %s (%v)", hook.body, err)
	}
	var l router.List[Delivery]
	e.get(orgA, "/v1/webhook-deliveries?event="+created.ID).decode(t, 200, &l)
	if len(l.Data) != 1 {
		t.Fatalf("%d deliveries of the created event", len(l.Data))
	}
	if got := e.waitAttempts(t, l.Data[0].ID, 1); (*got.Attempts)[0].Trigger != "scheduled" {
		t.Fatalf("first attempt of a fanned-out event: %+v", *got.Attempts)
	}

	// A test event reaches the endpoint, signed with its secret.
	var d Delivery
	e.post(orgA, "/v1/webhook-endpoints/"+ep.ID+"/test", "").decode(t, 200, &d)
	hook = rcv.next(t)
	if err := whsign.Verify(ep.Secret, hook.header, hook.body, time.Minute, time.Now()); err != nil {
		t.Fatalf("test webhook does not verify with the endpoint's secret: %v", err)
	}
	var payload struct {
		ID   string `json:"id"`
		Type string `json:"type"`
		Data struct {
			Object Endpoint `json:"object"`
		} `json:"data"`
	}
	if err := json.Unmarshal(hook.body, &payload); err != nil {
		t.Fatal(err)
	}
	if payload.ID != d.Event || payload.Type != TestEventType || payload.Data.Object.ID != ep.ID {
		t.Fatalf("test webhook body %s", hook.body)
	}
	got := e.waitAttempts(t, d.ID, 1)
	if got.Status != "succeeded" || (*got.Attempts)[0].Trigger != "manual" || (*got.Attempts)[0].ResponseSnippet != "thanks" {
		t.Fatalf("after the test: %+v attempts %+v", got, *got.Attempts)
	}

	// During a rotation, a manual retry carries both signatures; it goes
	// out although the endpoint is disabled.
	var rotated Endpoint
	e.post(orgA, "/v1/webhook-endpoints/"+ep.ID+"/rotate-secret", `{"expires_in":3600}`).decode(t, 200, &rotated)
	e.post(orgA, "/v1/webhook-endpoints/"+ep.ID, `{"disabled":true}`).decode(t, 200, new(Endpoint))
	e.post(orgA, "/v1/webhook-deliveries/"+d.ID+"/retry", "").decode(t, 200, &got)
	hook = rcv.next(t)
	for name, secret := range map[string]string{"old": ep.Secret, "new": rotated.Secret} {
		if err := whsign.Verify(secret, hook.header, hook.body, time.Minute, time.Now()); err != nil {
			t.Errorf("retried webhook does not verify with the %s secret: %v", name, err)
		}
	}
	got = e.waitAttempts(t, d.ID, 2)
	if a := (*got.Attempts)[1]; a.Trigger != "manual" || got.Status != "succeeded" {
		t.Fatalf("after the retry: %+v attempt %+v", got, a)
	}
}
