package dashboard

import (
	"context"
	"html"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/controlplane/ingest"
	"github.com/gatehouse/gatehouse/controlplane/keys"
	"github.com/gatehouse/gatehouse/internal/apikey"
	"github.com/gatehouse/gatehouse/internal/ids"
)

// A support engineer reading request logs sees which integration sent
// each request, by the key's name, and is told bodies are not stored only
// when none is.
func TestLogsNameTheKeyAndTellWhenBodiesAreMissing(t *testing.T) {
	e := newEnv(t)
	b := e.signup("logs-ux@example.com", "Logs UX")
	org := e.orgOf(b)
	ctx := context.Background()
	k, err := e.keys.Create(ctx, audit.Actor{Type: audit.ActorCLI, ID: "test"}, org, apikey.Sandbox,
		keys.CreateParams{Kind: apikey.Secret, Name: "Reporting job"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, err := ingest.NewPartitions(e.pool, 24*time.Hour, 1, nil).Ensure(ctx, now); err != nil {
		t.Fatal(err)
	}
	bare, withBody := ids.NewAt(ids.Request, now), ids.NewAt(ids.Request, now.Add(time.Millisecond))
	const message = "The service took too long to answer <in time>."
	for _, r := range []struct {
		id   string
		body *string
	}{{bare, nil}, {withBody, ptr(`{"error":{"code":"upstream_timeout"}}`)}} {
		if _, err := e.pool.Exec(ctx, `INSERT INTO request_logs (request_id, created_at, organization_id, livemode, api_key_id,
			method, path, status, duration_us, response_body, error_type, error_code, error_message, error_param)
			VALUES ($1, $2, $3, false, $4, 'POST', '/v1/customers', 504, 30012300, $5, 'api_error', 'upstream_timeout', $6, 'email')`,
			r.id, now, org, k.ID, r.body, message); err != nil {
			t.Fatal(err)
		}
	}
	list := html.UnescapeString(b.get("/logs").body)
	if strings.Count(list, "Reporting job") != 2 || !strings.Contains(list, "30.0 s") {
		t.Errorf("the list does not name the key of each request, or its 30 s duration in seconds:\n%s", list)
	}
	if !strings.Contains(list, `title="`+message+`">upstream_timeout<`) {
		t.Errorf("the list does not give each error's message on its code:\n%s", list)
	}
	const notStored = "Bodies are not stored"
	p := b.get("/logs/" + bare)
	if !strings.Contains(p.body, "Reporting job") || !strings.Contains(p.body, notStored) {
		t.Errorf("a log without bodies: key name or the note that bodies are not stored missing")
	}
	// The error object's message and param show without body capture.
	if page := html.UnescapeString(p.body); !regexp.MustCompile(`Error</dt><dd>.*upstream_timeout.*param <code>email</code>.*` +
		regexp.QuoteMeta(message)).MatchString(page) {
		t.Errorf("a failed request's page does not show its error message and param:\n%s", page)
	}
	if p := b.get("/logs/" + withBody); !strings.Contains(p.body, "Response body") || strings.Contains(p.body, notStored) {
		t.Errorf("a log with a stored response body says bodies are not stored")
	}
}

// Delivery pages say what happens next: when the next attempt is, that a
// dead delivery gets none and what to do, and why the last attempt failed
// when no response came.
func TestDeliveriesSayWhatHappensNext(t *testing.T) {
	e := newEnv(t)
	b := e.signup("deliveries-ux@example.com", "Deliveries UX")
	org := e.orgOf(b)
	we := b.createEndpoint("http://127.0.0.1:9/hook")
	ctx := t.Context()
	ev1, ev2 := ids.New(ids.Event), ids.New(ids.Event)
	if _, err := e.pool.Exec(ctx, `INSERT INTO events (id, organization_id, livemode, type, api_version, data, created_at)
		VALUES ($1, $3, false, 'customer.created', '2026-11-01', '{"object":{"object":"customer","id":"cus_1"}}', now()),
		($2, $3, false, 'customer.created', '2026-11-01', '{"object":{"object":"customer","id":"cus_2"}}', now())`,
		ev1, ev2, org); err != nil {
		t.Fatal(err)
	}
	dead, failed := ids.New(ids.Delivery), ids.New(ids.Delivery)
	next := time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)
	if _, err := e.pool.Exec(ctx, `INSERT INTO webhook_deliveries (id, organization_id, livemode, event_id, endpoint_id, status, attempts, next_attempt_at)
		VALUES ($1, $2, false, $3, $4, 'dead', 8, NULL), ($5, $2, false, $6, $4, 'failed', 1, $7)`,
		dead, org, ev1, we, failed, ev2, next); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `INSERT INTO webhook_attempts (id, delivery_id, organization_id, livemode, status_code, latency_ms, error, trigger)
		VALUES ($1, $2, $3, false, NULL, 10000, 'dial tcp 127.0.0.1:9: connect: connection refused', 'scheduled')`,
		ids.New(ids.Attempt), dead, org); err != nil {
		t.Fatal(err)
	}
	page := html.UnescapeString(b.get("/deliveries/" + dead).body)
	if !strings.Contains(page, "automatic retries are exhausted") || !regexp.MustCompile(`Last response</dt><dd>.*no response.*connection refused`).MatchString(page) {
		t.Errorf("the dead delivery's page does not say retries are over, or why its last attempt failed:\n%s", page)
	}
	list := html.UnescapeString(b.get("/deliveries").body)
	if !strings.Contains(list, "retries exhausted") || !strings.Contains(list, "2031-01-02 03:04:05") || !strings.Contains(list, "Next attempt") {
		t.Errorf("the deliveries list does not show when each delivery is tried next:\n%s", list)
	}
	if !strings.Contains(list, `scope="col">Endpoint<`) {
		t.Error("the deliveries list lost its endpoint column")
	}
	if ep := b.get("/webhooks/" + we).body; strings.Contains(ep, `scope="col">Endpoint<`) || !strings.Contains(ep, failed) {
		t.Error("the endpoint's recent deliveries repeat the endpoint on every row, or miss one")
	}
}

func TestMillis(t *testing.T) {
	for in, want := range map[float64]string{0.4: "0.4 ms", 999.94: "999.9 ms", 1000: "1.0 s", 30012.3: "30.0 s"} {
		if got := millis(in); got != want {
			t.Errorf("millis(%v) = %q, want %q", in, got, want)
		}
	}
}
