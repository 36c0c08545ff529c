package requestlog

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/gatehouse/gatehouse/caddymodule/requestid"
	"github.com/gatehouse/gatehouse/internal/apikey"
	"github.com/gatehouse/gatehouse/internal/redact"
	"github.com/gatehouse/gatehouse/internal/testenv"
	"github.com/gatehouse/gatehouse/internal/wire"
)

// Secrets planted in every place a request or response can carry one.
const (
	secretQuery    = "SecretInQuery1"
	secretHeader   = "SecretInHeader2"
	secretBody     = "SecretInBody3"
	secretNested   = "SecretInNested4"
	secretResponse = "SecretInResponse5"
	secretCookie   = "SecretInCookie6"
	secretUpstream = "SecretInUpstreamHeader7"
	card           = "4242424242424242"
)

// upstream plays the backend: it echoes JSON bodies, sets a cookie and a
// private header, and answers error objects on /v1/missing and (gzipped)
// /v1/gzipped.
func upstream(t *testing.T) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.HasPrefix(r.URL.Path, "/v1/missing"):
			w.WriteHeader(404)
			_, _ = w.Write([]byte(`{"error":{"type":"invalid_request_error","code":"resource_missing","param":"id",` +
				`"message":"No such customer; card ` + card + ` is not on file."}}`))
		case r.URL.Path == "/v1/gzipped":
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			_, _ = zw.Write([]byte(`{"error":{"type":"idempotency_error","code":"idempotency_key_in_use","message":"` + strings.Repeat("busy ", 200) + `"}}`))
			_ = zw.Close()
			w.Header().Set("Content-Encoding", "gzip")
			w.WriteHeader(409)
			_, _ = w.Write(buf.Bytes())
		case r.URL.Path == "/v1/upgrade" && r.Header.Get("Upgrade") == "echo":
			// A protocol switch (a WebSocket, say): 101, then the raw
			// connection says hello and closes.
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Errorf("hijack: %v", err)
				return
			}
			defer conn.Close()
			_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nhello")
			_ = brw.Flush()
		default:
			w.Header().Set("Set-Cookie", "session="+secretCookie+"; HttpOnly")
			w.Header().Set("X-Upstream-Token", secretUpstream)
			echo := json.RawMessage("null")
			if json.Valid(body) && len(body) > 0 {
				echo = body
			}
			out, _ := json.Marshal(map[string]any{"object": "customer", "echo": echo, "api_token": secretResponse})
			_, _ = w.Write(out)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func TestRequestLogEndToEnd(t *testing.T) {
	brokers := testenv.Kafka(t)
	topic := testenv.KafkaTopic(t, brokers, "requestlog", 1)
	up := upstream(t)
	port := testenv.FreePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	spool := t.TempDir()
	runCaddy(t, port,
		// An operator who keeps the upstream's messages out of the logs.
		map[string]any{"match": []any{map[string]any{"path": []string{"/v1/missing/quiet/*"}}}, "terminal": true, "handle": []any{
			map[string]any{"handler": "request_id"},
			map[string]any{"handler": "request_log", "brokers": []string{strings.Join(brokers, ",")}, "topic": topic,
				"spool_dir": spool, "omit_upstream_error_messages": true},
			map[string]any{"handler": "test_identity"},
			map[string]any{"handler": "reverse_proxy", "upstreams": []any{map[string]any{"dial": up.Listener.Addr().String()}}},
		}},
		map[string]any{"handle": []any{
			map[string]any{"handler": "request_id"},
			map[string]any{"handler": "request_log", "brokers": []string{strings.Join(brokers, ",")}, "topic": topic,
				"spool_dir": spool, "routes": []string{"/v1/customers/{id}", "/v1/customers"}, "max_body_capture": 4096},
			map[string]any{"handler": "test_identity"},
		}},
		map[string]any{"match": []any{map[string]any{"path": []string{"/metrics"}}}, "handle": []any{map[string]any{"handler": "metrics"}}},
		map[string]any{"match": []any{map[string]any{"path": []string{"/v1/down"}}},
			"handle": []any{map[string]any{"handler": "reverse_proxy", "upstreams": []any{map[string]any{"dial": fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))}}}}},
		map[string]any{"handle": []any{map[string]any{"handler": "reverse_proxy", "upstreams": []any{map[string]any{"dial": up.Listener.Addr().String()}}}}},
	)

	key, err := apikey.Generate(apikey.Secret, apikey.Sandbox)
	if err != nil {
		t.Fatal(err)
	}
	const keyID = "key_AAAAAAAAAAAAAAAAAAAAAA"
	newReq := func(method, path string, body string, hdr ...string) *http.Request {
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, _ := http.NewRequest(method, base+path, rd)
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("X-Test-Org", "org_A")
		req.Header.Set("X-Test-Key", keyID)
		req.Header.Set("X-Test-Live", "true")
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		return req
	}
	type sent struct {
		name   string
		req    *http.Request
		status int
		body   string
		id     string
	}
	postBody := `{"email":"jenny@example.com","password":"` + secretBody + `","card":{"number":"` + card + `","cvc":"123"},` +
		`"nested":[{"token":"` + secretNested + `"}],"note":"my key is ` + key + `"}`
	reqs := []*sent{
		{name: "get", req: newReq("GET", "/v1/customers/cus_9Xk2Ab77QQzz?api_key="+secretQuery+"&limit=3", "",
			"X-Custom", secretHeader, "User-Agent", "agent/1.0", "Idempotency-Key", "idem-1")},
		{name: "post with capture", req: newReq("POST", "/v1/customers", postBody, "Content-Type", "application/json", "X-Test-Capture", "true")},
		{name: "refused", req: newReq("GET", "/v1/customers", "", "X-Test-Refuse", "1")},
		{name: "refused an identified key", req: newReq("GET", "/v1/customers", "", "X-Test-Refuse", "identified")},
		{name: "upstream error", req: newReq("GET", "/v1/missing/cus_9Xk2Ab77QQzz", "")},
		{name: "upstream error, messages off", req: newReq("GET", "/v1/missing/quiet/cus_9Xk2Ab77QQzz", "")},
		{name: "refused, messages off", req: newReq("GET", "/v1/missing/quiet/cus_9Xk2Ab77QQzz", "", "X-Test-Refuse", "1")},
		{name: "gzipped error", req: newReq("GET", "/v1/gzipped", "", "Accept-Encoding", "gzip")},
		{name: "upstream down", req: newReq("GET", "/v1/down", "")},
		{name: "protocol switch", req: newReq("GET", "/v1/upgrade", "", "Connection", "Upgrade", "Upgrade", "echo")},
	}
	for _, s := range reqs {
		resp, body := do(t, s.req)
		s.status, s.body, s.id = resp.StatusCode, body, resp.Header.Get("Request-Id")
		if s.id == "" {
			t.Fatalf("%s: no Request-Id", s.name)
		}
	}

	// Read until every request's record arrived (other requests, such as
	// /metrics, are logged too).
	want := map[string]*sent{}
	for _, s := range reqs {
		want[s.id] = s
	}
	got := map[string]wire.RequestLog{}
	var raw []kafka.Message
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for len(got) < len(want) {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("read %d of %d request logs: %v", len(got), len(want), err)
		}
		var l wire.RequestLog
		if err := json.Unmarshal(m.Value, &l); err != nil {
			t.Fatalf("undecodable request log %q: %v", m.Value, err)
		}
		raw = append(raw, m)
		if want[l.RequestID] != nil {
			got[l.RequestID] = l
		}
	}
	rec := func(name string) (wire.RequestLog, *sent) {
		for _, s := range reqs {
			if s.name == name {
				return got[s.id], s
			}
		}
		t.Fatalf("no request %s", name)
		return wire.RequestLog{}, nil
	}

	t.Run("secrets appear nowhere", func(t *testing.T) {
		for _, m := range raw {
			for _, s := range []string{secretQuery, secretHeader, secretBody, secretNested, secretResponse, secretCookie,
				secretUpstream, card, key[8:20]} {
				if bytes.Contains(m.Value, []byte(s)) || bytes.Contains(m.Key, []byte(s)) {
					t.Errorf("%q reached Kafka: %s", s, m.Value)
				}
			}
		}
	})

	t.Run("a proxied request", func(t *testing.T) {
		l, s := rec("get")
		if s.status != 200 || l.Status != 200 {
			t.Fatalf("status %d, logged %d", s.status, l.Status)
		}
		checks := []struct {
			field    string
			got, exp any
		}{
			{"v", l.V, 1},
			{"org", l.OrganizationID, "org_A"},
			{"livemode", l.Livemode, true},
			{"key", l.APIKeyID, keyID},
			{"method", l.Method, "GET"},
			{"route", l.Route, "/v1/customers/{id}"},
			{"path", l.Path, "/v1/customers/cus_9Xk2Ab77QQzz?api_key=[REDACTED]&limit=3"},
			{"user agent", l.UserAgent, "agent/1.0"},
			{"api version", l.APIVersion, "2026-11-01"},
			{"idempotency key", l.IdempotencyKey, "idem-1"},
			{"client ip", l.ClientIP, "127.0.0.1"},
			{"bytes out", l.BytesOut, int64(len(s.body))},
			{"authorization", l.RequestHeaders["Authorization"], "[REDACTED]"},
			{"custom header", l.RequestHeaders["X-Custom"], ""},
			{"set-cookie", l.ResponseHeaders["Set-Cookie"], "[REDACTED]"},
			{"upstream header", l.ResponseHeaders["X-Upstream-Token"], ""},
			{"request id header", l.ResponseHeaders["Request-Id"], s.id},
			{"error", l.ErrorCode, ""},
			{"request body", l.RequestBody, ""},
			{"response body", l.ResponseBody, ""},
		}
		for _, c := range checks {
			if fmt.Sprint(c.got) != fmt.Sprint(c.exp) {
				t.Errorf("%s = %v, want %v", c.field, c.got, c.exp)
			}
		}
		if l.UpstreamUS <= 0 || l.DurationUS < l.UpstreamUS {
			t.Errorf("durations: total %dµs, upstream %dµs", l.DurationUS, l.UpstreamUS)
		}
		if d := time.Since(time.UnixMicro(l.Time)); d < 0 || d > time.Minute {
			t.Errorf("time %v is off by %v", time.UnixMicro(l.Time), d)
		}
		for _, m := range raw {
			var k struct {
				RequestID string `json:"request_id"`
			}
			_ = json.Unmarshal(m.Value, &k)
			if k.RequestID == s.id && string(m.Key) != "org_A" {
				t.Errorf("kafka key %q, want org_A", m.Key)
			}
		}
	})

	t.Run("bodies when capture is on, redacted", func(t *testing.T) {
		l, s := rec("post with capture")
		if s.status != 200 || l.Route != "/v1/customers" || l.BytesIn != int64(len(postBody)) {
			t.Fatalf("status %d, route %q, bytes in %d", s.status, l.Route, l.BytesIn)
		}
		var reqBody map[string]any
		if err := json.Unmarshal([]byte(l.RequestBody), &reqBody); err != nil {
			t.Fatalf("request body is not JSON: %v: %s", err, l.RequestBody)
		}
		if reqBody["email"] != "jenny@example.com" || reqBody["password"] != "[REDACTED]" || reqBody["note"] != "my key is [REDACTED]" {
			t.Errorf("request body: %s", l.RequestBody)
		}
		if !strings.Contains(l.ResponseBody, `"object":"customer"`) || !strings.Contains(l.ResponseBody, `"api_token":"[REDACTED]"`) {
			t.Errorf("response body: %s", l.ResponseBody)
		}
	})

	t.Run("a refusal of an identified key", func(t *testing.T) {
		l, s := rec("refused an identified key")
		if s.status != 401 || l.OrganizationID != "org_A" || l.APIKeyID != keyID || !l.AuthRefused || l.ErrorCode != "api_key_expired" {
			t.Fatalf("got %d: %+v", s.status, l)
		}
		if l, _ := rec("get"); l.AuthRefused {
			t.Fatal("an authenticated request logged as refused")
		}
	})

	t.Run("an authentication refusal", func(t *testing.T) {
		l, s := rec("refused")
		if s.status != 401 || l.Status != 401 || l.OrganizationID != "" || l.APIKeyID != "" ||
			l.ErrorType != "authentication_error" || l.ErrorCode != "api_key_invalid" {
			t.Fatalf("got %d: %+v", s.status, l)
		}
		for _, m := range raw {
			if bytes.Contains(m.Value, []byte(s.id)) && string(m.Key) != "anonymous" {
				t.Errorf("kafka key %q, want anonymous", m.Key)
			}
		}
	})

	// The error object's message and param are kept without body capture,
	// redacted and capped.
	for _, c := range []struct{ name, typ, code, message, param string }{
		{"refused", "authentication_error", "api_key_invalid", "No such API key.", ""},
		{"upstream error", "invalid_request_error", "resource_missing", "No such customer; card [REDACTED] is not on file.", "id"},
		{"gzipped error", "idempotency_error", "idempotency_key_in_use", "", ""}, // 1,000 bytes: cut, below
		{"upstream down", "api_error", "upstream_unavailable", "The service behind the gateway could not be reached or failed to answer. Retry later; if it persists, contact support with the request id.", ""},
		// upstream_error_messages off: the upstream's message is left out,
		// its type, code and param and the gateway's own message kept.
		{"upstream error, messages off", "invalid_request_error", "resource_missing", "", "id"},
		{"refused, messages off", "authentication_error", "api_key_invalid", "No such API key.", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			l, s := rec(c.name)
			if l.Status != s.status || l.ErrorType != c.typ || l.ErrorCode != c.code {
				t.Fatalf("response %d, logged %d %s/%s; want %s/%s", s.status, l.Status, l.ErrorType, l.ErrorCode, c.typ, c.code)
			}
			if c.name == "upstream error, messages off" {
				if l.ErrorMessage != "" || l.ErrorParam != c.param {
					t.Errorf("logged message %q, param %q; want none, %q", l.ErrorMessage, l.ErrorParam, c.param)
				}
			} else if c.message == "" {
				cut := strings.TrimSuffix(l.ErrorMessage, "…")
				if len(l.ErrorMessage) > redact.MaxErrorMessage || len(cut) < 400 || cut == l.ErrorMessage ||
					!strings.HasPrefix(strings.Repeat("busy ", 200), cut) {
					t.Errorf("a long message logged as %q", l.ErrorMessage)
				}
			} else if l.ErrorMessage != c.message || l.ErrorParam != c.param {
				t.Errorf("logged message %q, param %q;\nwant %q, %q", l.ErrorMessage, l.ErrorParam, c.message, c.param)
			}
		})
	}
	t.Run("a protocol switch", func(t *testing.T) {
		l, s := rec("protocol switch")
		if s.status != 101 || s.body != "hello" || l.Status != 101 || l.ErrorCode != "" {
			t.Fatalf("response %d %q, logged %d %q", s.status, s.body, l.Status, l.ErrorCode)
		}
	})
	if l, _ := rec("upstream error"); l.Route != "/v1/missing/{id}" {
		t.Errorf("derived route %q", l.Route)
	}

	t.Run("metrics", func(t *testing.T) {
		if v := metric(t, base, "caddy_gatehouse_requests_total", `route="/v1/customers/{id}"`, `status_class="2xx"`); v < 1 {
			t.Errorf("requests_total = %v", v)
		}
		if v := metric(t, base, "caddy_gatehouse_request_duration_seconds_count", `route="/v1/customers"`); v < 2 {
			t.Errorf("request_duration_seconds_count = %v", v)
		}
		if v := metric(t, base, "caddy_gatehouse_auth_failures_total", `code="api_key_invalid"`); v < 1 {
			t.Errorf("auth_failures_total = %v", v)
		}
		waitFor(t, 30*time.Second, "sent_total", func() bool {
			return metric(t, base, "caddy_gatehouse_requestlog_sent_total") >= float64(len(reqs))
		})
		for _, m := range []string{"caddy_gatehouse_requestlog_spool_bytes", "caddy_gatehouse_requestlog_spooled_total",
			"caddy_gatehouse_requestlog_dropped_total", "caddy_gatehouse_rate_limited_total"} {
			if metric(t, base, m) < 0 {
				t.Errorf("%s is not exported", m)
			}
		}
	})
}

// tarpit accepts connections and never answers: a Kafka that hangs, the
// worst case for a producer on the request path.
func tarpit(t *testing.T) (addr string, stop func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	return ln.Addr().String(), func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}
}

// TestKafkaUnavailable points request_log at a broker that accepts
// connections and never answers, and at a closed port: requests are not
// slowed and records go to the spool.
func TestKafkaUnavailable(t *testing.T) {
	for _, c := range []struct{ name, broker string }{
		{"hanging broker", ""},
		{"closed port", fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))},
	} {
		t.Run(c.name, func(t *testing.T) {
			up := upstream(t)
			port := testenv.FreePort(t)
			base := fmt.Sprintf("http://127.0.0.1:%d", port)
			broker, stop := c.broker, func() {}
			if broker == "" {
				broker, stop = tarpit(t)
			}
			runCaddy(t, port,
				map[string]any{"handle": []any{
					map[string]any{"handler": "request_id"},
					// A small memory buffer, so the spool takes over at once.
					map[string]any{"handler": "request_log", "brokers": []string{broker}, "spool_dir": t.TempDir(), "memory_limit": 10},
				}},
				map[string]any{"match": []any{map[string]any{"path": []string{"/metrics"}}}, "handle": []any{map[string]any{"handler": "metrics"}}},
				map[string]any{"handle": []any{map[string]any{"handler": "reverse_proxy", "upstreams": []any{map[string]any{"dial": up.Listener.Addr().String()}}}}},
			)
			// Registered after runCaddy, so it runs first: the producer's
			// pending send then fails instead of waiting out its timeout.
			t.Cleanup(stop)
			before := metric(t, base, "caddy_gatehouse_requestlog_spooled_total")
			const n = 60
			var slowest time.Duration
			start := time.Now()
			for i := 0; i < n; i++ {
				t0 := time.Now()
				resp, body := do(t, mustReq(t, base+"/v1/customers/cus_1"))
				if resp.StatusCode != 200 {
					t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
				}
				slowest = max(slowest, time.Since(t0))
			}
			total := time.Since(start)
			// Kafka's timeouts are seconds; a request that waited on it
			// would show. The bound leaves room for a loaded CI machine.
			if slowest > time.Second || total > 10*time.Second {
				t.Fatalf("slowest request %v, %d requests in %v", slowest, n, total)
			}
			t.Logf("%d requests in %v, slowest %v", n, total, slowest)
			waitFor(t, 30*time.Second, "records in the spool", func() bool {
				return metric(t, base, "caddy_gatehouse_requestlog_spooled_total")-before >= n-10
			})
			if v := metric(t, base, "caddy_gatehouse_requestlog_spool_bytes"); v <= 0 {
				t.Errorf("spool_bytes = %v", v)
			}
		})
	}
}

func mustReq(t *testing.T, url string) *http.Request {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}
