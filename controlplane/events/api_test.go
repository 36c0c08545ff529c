package events

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/wire"
)

func TestCreateEventIsStoredProducedAndReadable(t *testing.T) {
	e := newEnv(t)
	r := e.do(orgA, http.MethodPost, "/v1/events", "application/json",
		`{"type":"customer.created","data":{"id":"cus_1","name":"Ann <ann@example.com>","tags":["a"]}}`)
	var ev eventJSON
	r.decode(t, http.StatusOK, &ev)

	if !ids.Valid(ev.ID, ids.Event) || ev.Object != "event" || ev.Type != "customer.created" ||
		ev.Livemode || ev.APIVersion != "2026-11-01" || ev.Created != e.clock.now.Unix() {
		t.Fatalf("event = %+v", ev)
	}
	if string(ev.Data) != `{"object":{"id":"cus_1","name":"Ann \u003cann@example.com\u003e","tags":["a"]}}` {
		t.Fatalf("data = %s", ev.Data)
	}
	if ev.Request.ID == nil || *ev.Request.ID != r.header.Get("Request-Id") || ev.Request.IdempotencyKey != nil {
		t.Fatalf("request = %+v, Request-Id %s", ev.Request, r.header.Get("Request-Id"))
	}
	if ev.Deliveries != nil {
		t.Errorf("create response carries a delivery summary")
	}

	// Readable at once, without waiting for the ingester.
	var got eventJSON
	e.get(orgA, "/v1/events/"+ev.ID).decode(t, http.StatusOK, &got)
	if got.ID != ev.ID || string(got.Data) != string(ev.Data) || got.Created != ev.Created ||
		got.Request.ID == nil || *got.Request.ID != *ev.Request.ID {
		t.Fatalf("retrieved %+v, created %+v", got, ev)
	}
	if got.Deliveries == nil || *got.Deliveries != (DeliverySummary{}) {
		t.Fatalf("deliveries = %+v, want all zero", got.Deliveries)
	}

	// And on Kafka, keyed by organisation, for the ingester and the deliverer.
	m := readMessages(t, e.brokers, e.topic, 1)[0]
	var w wire.Event
	if err := json.Unmarshal(m.Value, &w); err != nil {
		t.Fatal(err)
	}
	if string(m.Key) != "org_A" || w.V != 1 || w.ID != ev.ID || w.OrganizationID != "org_A" || w.Type != ev.Type ||
		w.Created != ev.Created || string(w.Data) != `{"object":{"id":"cus_1","name":"Ann <ann@example.com>","tags":["a"]}}` ||
		w.RequestID != *ev.Request.ID {
		t.Fatalf("kafka message key %s value %s", m.Key, m.Value)
	}
}

func TestCreateEventFormEncodedWithIdempotencyKey(t *testing.T) {
	e := newEnv(t)
	r := e.do(orgALive, http.MethodPost, "/v1/events", "application/x-www-form-urlencoded",
		"type=invoice.paid&data[id]=in_1&data[lines][0]=a&data[lines][1]=b&data[customer][name]=Ann",
		"Idempotency-Key", "k-123")
	var ev eventJSON
	r.decode(t, http.StatusOK, &ev)
	if !ev.Livemode || string(ev.Data) != `{"object":{"customer":{"name":"Ann"},"id":"in_1","lines":["a","b"]}}` {
		t.Fatalf("event = %+v data %s", ev, ev.Data)
	}
	if ev.Request.IdempotencyKey == nil || *ev.Request.IdempotencyKey != "k-123" {
		t.Fatalf("idempotency_key = %v", ev.Request.IdempotencyKey)
	} // Keys that are numbers at the top of data are keys, as in JSON.
	e.do(orgALive, http.MethodPost, "/v1/events", "application/x-www-form-urlencoded", "type=a.b&data[0]=x").
		decode(t, http.StatusOK, &ev)
	if string(ev.Data) != `{"object":{"0":"x"}}` {
		t.Fatalf("data[0]=x: %s", ev.Data)
	}
}

func TestCreateEventRefusesBadInput(t *testing.T) {
	e := newEnv(t)
	big := `{"type":"a.b","data":{"x":"` + strings.Repeat("x", MaxDataBytes) + `"}}`
	for _, tc := range []struct {
		name        string
		contentType string
		target      string
		body        string
		want        wantError
	}{
		{"no body", "", "/v1/events", "", wantError{400, "parameter_missing", "type"}},
		{"type missing", "application/json", "/v1/events", `{"data":{}}`, wantError{400, "parameter_missing", "type"}},
		{"type one word", "application/json", "/v1/events", `{"type":"created","data":{}}`, wantError{400, "parameter_invalid", "type"}},
		{"type upper case", "application/json", "/v1/events", `{"type":"Customer.created","data":{}}`, wantError{400, "parameter_invalid", "type"}},
		{"the endpoint test's type", "application/json", "/v1/events", `{"type":"webhook_endpoint.test","data":{}}`, wantError{400, "parameter_invalid", "type"}},
		{"type too long", "application/json", "/v1/events", `{"type":"a.` + strings.Repeat("b", 99) + `","data":{}}`, wantError{400, "parameter_invalid", "type"}},
		{"type not a string", "application/json", "/v1/events", `{"type":1,"data":{}}`, wantError{400, "parameter_invalid", "type"}},
		{"data missing", "application/json", "/v1/events", `{"type":"a.b"}`, wantError{400, "parameter_missing", "data"}},
		{"data null", "application/json", "/v1/events", `{"type":"a.b","data":null}`, wantError{400, "parameter_missing", "data"}},
		{"data a list", "application/json", "/v1/events", `{"type":"a.b","data":[1]}`, wantError{400, "parameter_invalid", "data"}},
		{"data a string", "form", "/v1/events", `type=a.b&data=x`, wantError{400, "parameter_invalid", "data"}},
		{"data too large", "application/json", "/v1/events", big, wantError{400, "parameter_invalid", "data"}},
		{"data with NUL", "application/json", "/v1/events", `{"type":"a.b","data":{"x":"\u0000"}}`, wantError{400, "parameter_invalid", "data"}},
		{"data with a lone surrogate", "application/json", "/v1/events", `{"type":"a.b","data":{"x":"\udead"}}`, wantError{400, "parameter_invalid", "data"}},
		{"data with a huge number", "application/json", "/v1/events", `{"type":"a.b","data":{"x":1e999999}}`, wantError{400, "parameter_invalid", "data"}},
		{"unknown parameter", "application/json", "/v1/events", `{"type":"a.b","data":{},"livemode":true}`, wantError{400, "parameter_unknown", "livemode"}},
		{"query parameter", "application/json", "/v1/events?type=a.b", `{"type":"a.b","data":{}}`, wantError{400, "parameter_unknown", "type"}},
		{"invalid JSON", "application/json", "/v1/events", `{"type":`, wantError{400, "body_invalid", ""}},
		{"JSON not an object", "application/json", "/v1/events", `["a.b"]`, wantError{400, "body_invalid", ""}},
		{"other content type", "text/plain", "/v1/events", `type=a.b`, wantError{400, "body_invalid", ""}},
		{"form conflict", "form", "/v1/events", `type=a.b&data=x&data[y]=z`, wantError{400, "parameter_invalid", "data"}},
		{"form repeated", "form", "/v1/events", `type=a.b&type=c.d&data[x]=1`, wantError{400, "parameter_invalid", "type"}},
		// Nested past what the ingester's and the deliverer's decoders read
		// once wrapped into an event (a 500, or a 200 for an event never
		// delivered).
		{"data nested too deep", "application/json", "/v1/events",
			`{"type":"a.b","data":` + strings.Repeat(`{"a":`, MaxDataDepth+1) + "1" + strings.Repeat("}", MaxDataDepth+1) + `}`,
			wantError{400, "parameter_invalid", "data"}},
		{"form data nested too deep", "form", "/v1/events", "type=a.b&data" + strings.Repeat("[a]", 10000) + "=x",
			wantError{400, "parameter_invalid", "data"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ct := tc.contentType
			if ct == "form" {
				ct = "application/x-www-form-urlencoded"
			}
			e.do(orgA, http.MethodPost, tc.target, ct, tc.body).assertError(t, tc.want)
		})
	}
	if n := e.count(`SELECT count(*) FROM events`); n != 0 {
		t.Fatalf("%d events stored from refused requests", n)
	}
	// The test type's refusal names the route that sends test events.
	r := e.do(orgA, http.MethodPost, "/v1/events", "application/json", `{"type":"webhook_endpoint.test","data":{}}`)
	if !strings.Contains(string(r.raw), "POST /v1/webhook-endpoints/{id}/test") {
		t.Errorf("the refusal of the test type names no real route: %s", r.raw)
	}
	// As deep as it may be, the event is one its readers decode.
	deep := strings.Repeat(`{"a":`, MaxDataDepth) + "1" + strings.Repeat("}", MaxDataDepth)
	e.do(orgA, http.MethodPost, "/v1/events", "application/json", `{"type":"a.b","data":`+deep+`}`)
	var w wire.Event
	if err := json.Unmarshal(readMessages(t, e.brokers, e.topic, 1)[0].Value, &w); err != nil {
		t.Fatalf("an accepted event's Kafka message does not decode: %v", err)
	}
}

func TestScopes(t *testing.T) {
	e := newEnv(t)
	readOnly := orgA
	readOnly.Scopes = []string{"events:read"}
	writeOnly := orgA
	writeOnly.Scopes = []string{"events:write"}
	e.postJSON(readOnly, "/v1/events", `{"type":"a.b","data":{}}`).assertError(t, wantError{403, "scope_missing", ""})
	e.get(writeOnly, "/v1/events").assertError(t, wantError{403, "scope_missing", ""})
	e.get(writeOnly, "/v1/events/"+ids.New(ids.Event)).assertError(t, wantError{403, "scope_missing", ""})
	if r := e.postJSON(writeOnly, "/v1/events", `{"type":"a.b","data":{}}`); r.status != 200 {
		t.Fatalf("events:write cannot create: %s", r.raw)
	}
	if r := e.get(readOnly, "/v1/events"); r.status != 200 {
		t.Fatalf("events:read cannot list: %s", r.raw)
	}
}

// seed creates events of the given types, one second apart, oldest first,
// and returns their ids.
func (e *env) seed(id identity.Identity, types ...string) []eventJSON {
	e.t.Helper()
	var out []eventJSON
	for _, typ := range types {
		e.clock.now = e.clock.now.Add(time.Second)
		var ev eventJSON
		e.postJSON(id, "/v1/events", fmt.Sprintf(`{"type":%q,"data":{"n":%d}}`, typ, len(out))).decode(e.t, 200, &ev)
		out = append(out, ev)
	}
	return out
}

func eventIDs(evs []eventJSON) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.ID
	}
	return out
}

// TestListCreatedFiltersAreWholeSeconds: events keep microseconds but show
// "created" in seconds, so an event created at n.5 s is "created": n and
// must match exactly the filters n satisfies.
func TestListCreatedFiltersAreWholeSeconds(t *testing.T) {
	e := newEnv(t)
	e.clock.now = e.clock.now.Add(500 * time.Millisecond) // seed adds 1 s: n.5
	ev := e.seed(orgA, "customer.created")[0]
	n := ev.Created
	if n != e.clock.now.Unix() {
		t.Fatalf("created %d, want %d", n, e.clock.now.Unix())
	}
	for _, tc := range []struct {
		query string
		match bool
	}{
		{fmt.Sprintf("created=%d", n), true},
		{fmt.Sprintf("created[gte]=%d", n), true},
		{fmt.Sprintf("created[lte]=%d", n), true}, // was missed: created_at <= n.0
		{fmt.Sprintf("created[gt]=%d", n), false}, // was matched: created_at > n.0
		{fmt.Sprintf("created[lt]=%d", n), false},
		{fmt.Sprintf("created[gt]=%d", n-1), true},
		{fmt.Sprintf("created[lt]=%d", n+1), true},
	} {
		var l eventList
		e.get(orgA, "/v1/events?"+tc.query).decode(t, 200, &l)
		if got := len(l.Data) == 1; got != tc.match {
			t.Errorf("%s (event created %d): matched %v, want %v", tc.query, n, got, tc.match)
		}
	}
}

func TestListFiltersAndPages(t *testing.T) {
	e := newEnv(t)
	start := e.clock.now
	evs := e.seed(orgA, "customer.created", "customer.updated", "invoice.paid", "customer.deleted",
		"customer_note.created", "customer.address.changed")
	newest := func(idx ...int) string {
		out := make([]string, len(idx))
		for i, j := range idx {
			out[i] = evs[j].ID
		}
		return strings.Join(out, ",")
	}
	at := func(i int) int64 { return start.Add(time.Duration(i+1) * time.Second).Unix() }
	for _, tc := range []struct {
		query   string
		want    string
		hasMore bool
	}{
		{"", newest(5, 4, 3, 2, 1, 0), false},
		{"?limit=2", newest(5, 4), true},
		{"?limit=2&starting_after=" + evs[4].ID, newest(3, 2), true},
		{"?limit=2&starting_after=" + evs[2].ID, newest(1, 0), false},
		{"?limit=2&ending_before=" + evs[1].ID, newest(3, 2), true},
		{"?limit=2&ending_before=" + evs[3].ID, newest(5, 4), false},
		{"?type=customer.created", newest(0), false},
		{"?type=customer.*", newest(5, 3, 1, 0), false},
		{"?type=customer.address.*", newest(5), false},
		{"?type=*", newest(5, 4, 3, 2, 1, 0), false},
		{fmt.Sprintf("?created[gte]=%d", at(3)), newest(5, 4, 3), false},
		{fmt.Sprintf("?created[gt]=%d", at(3)), newest(5, 4), false},
		{fmt.Sprintf("?created[lt]=%d", at(2)), newest(1, 0), false},
		{fmt.Sprintf("?created[lte]=%d", at(2)), newest(2, 1, 0), false},
		{fmt.Sprintf("?type=customer.*&created[gte]=%d&created[lt]=%d&limit=1", at(1), at(5)), newest(3), true},
	} {
		t.Run(tc.query, func(t *testing.T) {
			var l eventList
			e.get(orgA, "/v1/events"+tc.query).decode(t, 200, &l)
			if got := strings.Join(eventIDs(l.Data), ","); got != tc.want || l.HasMore != tc.hasMore {
				t.Fatalf("got %s has_more %v, want %s has_more %v", got, l.HasMore, tc.want, tc.hasMore)
			}
			if l.Object != "list" || l.URL != "/v1/events" {
				t.Fatalf("list envelope %+v", l)
			}
		})
	}
	for _, tc := range []struct {
		query string
		want  wantError
	}{
		{"?limit=0", wantError{400, "parameter_invalid", "limit"}},
		{"?limit=101", wantError{400, "parameter_invalid", "limit"}},
		{"?limit=x", wantError{400, "parameter_invalid", "limit"}},
		{"?starting_after=cus_1", wantError{400, "parameter_invalid", "starting_after"}},
		{"?starting_after=" + evs[0].ID + "&ending_before=" + evs[1].ID, wantError{400, "parameter_invalid", "ending_before"}},
		{"?type=customer", wantError{400, "parameter_invalid", "type"}},
		{"?type=Customer.*", wantError{400, "parameter_invalid", "type"}},
		{"?type=customer.*.created", wantError{400, "parameter_invalid", "type"}},
		{"?created[gte]=yesterday", wantError{400, "parameter_invalid", "created[gte]"}},
		{"?created=soon", wantError{400, "parameter_invalid", "created"}},
		{"?limit=1&limit=2", wantError{400, "parameter_invalid", "limit"}},
	} {
		t.Run("refuses "+tc.query, func(t *testing.T) {
			e.get(orgA, "/v1/events"+tc.query).assertError(t, tc.want)
		})
	}
}

func TestTenantIsolation(t *testing.T) {
	e := newEnv(t)
	a := e.seed(orgA, "customer.created")[0]
	live := e.seed(orgALive, "customer.created")[0]
	b := e.seed(orgB, "customer.created")[0]

	for _, tc := range []struct {
		name string
		id   identity.Identity
		evID string
	}{
		{"org B reads org A's", orgB, a.ID},
		{"live reads sandbox", orgALive, a.ID},
		{"sandbox reads live", orgA, live.ID},
		{"org A reads org B's", orgA, b.ID},
		{"malformed id", orgA, "evt_nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.get(tc.id, "/v1/events/"+tc.evID).assertError(t, wantError{404, "resource_missing", "id"})
		})
	}
	for _, tc := range []struct {
		id   identity.Identity
		want string
	}{{orgA, a.ID}, {orgALive, live.ID}, {orgB, b.ID}} {
		var l eventList
		e.get(tc.id, "/v1/events").decode(t, 200, &l)
		if got := strings.Join(eventIDs(l.Data), ","); got != tc.want {
			t.Errorf("%s livemode %v lists %s, want only %s", tc.id.OrgID, tc.id.Livemode, got, tc.want)
		}
	}
}

func TestDeliverySummary(t *testing.T) {
	e := newEnv(t)
	ev := e.seed(orgA, "customer.created")[0]
	ctx := context.Background()
	if _, err := e.pool.Exec(ctx, `INSERT INTO webhook_endpoints (id, organization_id, livemode, url, enabled_events)
		VALUES ('we_1', 'org_A', false, 'https://example.com', '{*}')`); err != nil {
		t.Fatal(err)
	}
	for i, status := range []string{"succeeded", "succeeded", "pending", "failed", "dead"} {
		// Distinct endpoints per delivery (the table allows one per event
		// and endpoint); they all count for the event.
		ep := fmt.Sprintf("we_%d", i+2)
		if _, err := e.pool.Exec(ctx, `INSERT INTO webhook_endpoints (id, organization_id, livemode, url, enabled_events)
			VALUES ($1, 'org_A', false, 'https://example.com', '{*}')`, ep); err != nil {
			t.Fatal(err)
		}
		if _, err := e.pool.Exec(ctx, `INSERT INTO webhook_deliveries (id, organization_id, livemode, event_id, endpoint_id, status)
			VALUES ($1, 'org_A', false, $2, $3, $4)`, ids.New(ids.Delivery), ev.ID, ep, status); err != nil {
			t.Fatal(err)
		}
	}
	var got eventJSON
	e.get(orgA, "/v1/events/"+ev.ID).decode(t, 200, &got)
	want := DeliverySummary{Total: 5, Succeeded: 2, Pending: 1, Failed: 1, Dead: 1}
	if got.Deliveries == nil || *got.Deliveries != want {
		t.Fatalf("deliveries = %+v, want %+v", got.Deliveries, want)
	}
}

func TestTypeValidation(t *testing.T) {
	for _, tc := range []struct {
		typ  string
		want bool
	}{
		{"customer.created", true},
		{"customer.address.changed", true},
		{"webhook_endpoint.test", true},
		{"customer", false},
		{"customer.", false},
		{".created", false},
		{"customer..created", false},
		{"Customer.created", false},
		{"customer.created1", false},
		{"customer-x.created", false},
		{"a." + strings.Repeat("b", 98), true},
		{"a." + strings.Repeat("b", 99), false},
	} {
		if got := ValidType(tc.typ); got != tc.want {
			t.Errorf("ValidType(%q) = %v, want %v", tc.typ, got, tc.want)
		}
	}
}
