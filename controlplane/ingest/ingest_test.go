package ingest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/internal/redact"
	"github.com/gatehouse/gatehouse/internal/testenv"
	"github.com/gatehouse/gatehouse/internal/wire"
)

// TestIngestStoresAndMetersEachRequestOnce produces request logs with
// duplicates and malformed values to a real topic and checks what the
// worker leaves in Postgres, then redelivers everything — to the same
// group and to a new group reading from the start — and checks nothing
// changes.
func TestIngestStoresAndMetersEachRequestOnce(t *testing.T) {
	db, _ := testenv.Pool(t)
	brokers := testenv.Kafka(t)
	topic := testenv.KafkaTopic(t, brokers, "request-logs", 3)

	now := time.Now().UTC()
	yesterday := now.Add(-24 * time.Hour)
	type k struct {
		org  string
		live bool
		key  string
		day  string
	}
	want := map[k]int64{}
	var values [][]byte
	const n = 600
	for i := 0; i < n; i++ {
		l := wire.RequestLog{
			V: 1, RequestID: reqID(i), Method: "GET", Path: fmt.Sprintf("/v1/customers/cus_%d", i),
			Route: "/v1/customers/{id}", Status: 200, DurationUS: 1500, BytesOut: 120,
			OrganizationID: fmt.Sprintf("org_%d", i%3), Livemode: i%2 == 0, APIKeyID: fmt.Sprintf("key_%d", i%4),
		}
		at := now
		if i%5 == 0 {
			at = yesterday
		}
		if i%7 == 0 { // refused before authentication: logged, not metered
			l.OrganizationID, l.APIKeyID, l.Livemode, l.Status, l.ErrorCode = "", "", false, 401, "api_key_missing"
		}
		l.Time = at.UnixMicro() + int64(i)
		if l.OrganizationID != "" {
			want[k{l.OrganizationID, l.Livemode, l.APIKeyID, at.Format(time.DateOnly)}]++
		}
		values = append(values, encode(t, l))
	}
	// Duplicates within the stream, as an outbox retry after a timeout
	// would produce them, and malformed values.
	stream := append([][]byte{}, values...)
	stream = append(stream, values[:50]...)
	stream = append(stream,
		[]byte("not json"),
		[]byte(`{"v":1,"time_us":1,"method":"GET"}`), // no request id
		[]byte(`{"v":0,"request_id":"req_x","time_us":1,"method":"GET"}`),
		[]byte(`[1,2,3]`),
	)
	produce(t, brokers, topic, stream)

	w, reg := startWorker(t, db, brokers, topic, nil)
	waitFor(t, 60*time.Second, "every message to be handled", func() bool {
		return counterValue(t, reg, "gatehouse_request_log_ingest_rows_total")+
			counterValue(t, reg, "gatehouse_request_log_ingest_duplicates_total")+
			counterValue(t, reg, "gatehouse_request_log_ingest_skipped_total", "reason", "malformed") >= float64(len(stream))
	})
	if got := count(t, db, `SELECT count(*) FROM request_logs`); got != n {
		t.Fatalf("request_logs has %d rows, want %d", got, n)
	}
	if got := counterValue(t, reg, "gatehouse_request_log_ingest_skipped_total", "reason", "malformed"); got != 4 {
		t.Fatalf("malformed = %v, want 4", got)
	}
	if got := counterValue(t, reg, "gatehouse_request_log_ingest_duplicates_total"); got != 50 {
		t.Fatalf("duplicates = %v, want 50", got)
	}

	checkUsage := func() {
		t.Helper()
		rows, err := db.Query(context.Background(),
			`SELECT organization_id, livemode, api_key_id, day::text, quantity FROM usage_records WHERE metric = 'requests'`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		got := map[k]int64{}
		for rows.Next() {
			var key k
			var q int64
			if err := rows.Scan(&key.org, &key.live, &key.key, &key.day, &q); err != nil {
				t.Fatal(err)
			}
			got[key] = q
		}
		if len(got) != len(want) {
			t.Fatalf("usage has %d rows, want %d:\n got %v\nwant %v", len(got), len(want), got, want)
		}
		for key, q := range want {
			if got[key] != q {
				t.Errorf("usage %v = %d, want %d", key, got[key], q)
			}
		}
	}
	checkUsage()
	if got := count(t, db, `SELECT count(*) FROM usage_records WHERE organization_id = ''`); got != 0 {
		t.Fatalf("anonymous requests were metered (%d rows)", got)
	}

	t.Run("redelivery to the same group changes nothing", func(t *testing.T) {
		before := counterValue(t, reg, "gatehouse_request_log_ingest_duplicates_total")
		produce(t, brokers, topic, values)
		waitFor(t, 60*time.Second, "the redelivered batch", func() bool {
			return counterValue(t, reg, "gatehouse_request_log_ingest_duplicates_total") >= before+n
		})
		if got := count(t, db, `SELECT count(*) FROM request_logs`); got != n {
			t.Fatalf("request_logs has %d rows after redelivery, want %d", got, n)
		}
		checkUsage()
	})

	t.Run("a group reading from the start changes nothing", func(t *testing.T) {
		_, reg2 := startWorker(t, db, brokers, topic, nil)
		total := float64(len(stream) + n)
		waitFor(t, 60*time.Second, "the second group to read everything", func() bool {
			return counterValue(t, reg2, "gatehouse_request_log_ingest_duplicates_total")+
				counterValue(t, reg2, "gatehouse_request_log_ingest_skipped_total", "reason", "malformed") >= total
		})
		if got := counterValue(t, reg2, "gatehouse_request_log_ingest_rows_total"); got != 0 {
			t.Fatalf("second group stored %v rows", got)
		}
		checkUsage()
	})
	_ = w
}

// TestIngestMetersRateLimitedRequestsApart: a request the gateway's rate
// limit or quota refused consumed nothing there, so it is not "requests"
// usage; counted so, a client retrying into its limit would show more use
// than the quota it is held to. It is metered as rate_limited_requests
// instead, as is a refusal of limits failing closed while Redis is away.
func TestIngestMetersRateLimitedRequestsApart(t *testing.T) {
	db, _ := testenv.Pool(t)
	brokers := testenv.Kafka(t)
	topic := testenv.KafkaTopic(t, brokers, "request-logs", 1)
	at := time.Now().UTC()
	var values [][]byte
	// "error": Redis was away; the limits failed open (the request passed)
	// or, configured so, closed ("error closed": a 503, refused).
	for i, rl := range []string{"allowed", "limited:per-key", "limited:monthly", "error", "", "allowed", "error closed"} {
		l := wire.RequestLog{V: 1, RequestID: reqID(i), Time: at.UnixMicro() + int64(i), OrganizationID: "org_a",
			Livemode: true, APIKeyID: "key_a", Method: "GET", Path: "/v1/customers", Status: 200, RateLimit: rl}
		switch {
		case strings.HasPrefix(rl, "limited:"):
			l.Status, l.ErrorType, l.ErrorCode = 429, "rate_limit_error", "rate_limited"
		case rl == "error closed":
			l.RateLimit, l.Status, l.ErrorType, l.ErrorCode = "error", 503, "api_error", "rate_limit_unavailable"
		}
		values = append(values, encode(t, l))
	}
	produce(t, brokers, topic, values)
	startWorker(t, db, brokers, topic, nil)
	waitFor(t, 60*time.Second, "the rows", func() bool {
		return count(t, db, `SELECT count(*) FROM request_logs`) == int64(len(values))
	})
	if got := count(t, db, `SELECT coalesce(sum(quantity), 0) FROM usage_records WHERE organization_id = 'org_a' AND metric = 'requests'`); got != 4 {
		t.Errorf("metered %d requests, want the 4 the rate limit let through", got)
	}
	if got := count(t, db, `SELECT coalesce(sum(quantity), 0) FROM usage_records WHERE organization_id = 'org_a' AND metric = 'rate_limited_requests'`); got != 3 {
		t.Errorf("metered %d rate-limited requests, want the 3 it refused", got)
	}
}

// TestIngestDoesNotMeterRefusalsOfAnIdentifiedKey: a request api_key
// refused after identifying its key (expired, IP allowlist, scope, API
// version) is logged under the organisation, so support finds it, but no
// request was authenticated: it is not "requests" usage. Counted, a client
// calling with an expired key piled up usage that never reached the backend
// and that the quota meters never saw.
func TestIngestDoesNotMeterRefusalsOfAnIdentifiedKey(t *testing.T) {
	db, _ := testenv.Pool(t)
	brokers := testenv.Kafka(t)
	topic := testenv.KafkaTopic(t, brokers, "request-logs", 1)
	at := time.Now().UTC()
	var values [][]byte
	for i, code := range []string{"", "api_key_expired", "ip_not_allowed", "scope_missing", "api_version_invalid", ""} {
		l := wire.RequestLog{V: 1, RequestID: reqID(i), Time: at.UnixMicro() + int64(i), OrganizationID: "org_a",
			Livemode: true, APIKeyID: "key_a", Method: "GET", Path: "/v1/customers", Status: 200, RateLimit: "allowed"}
		if code != "" {
			l.Status, l.ErrorType, l.ErrorCode, l.RateLimit, l.AuthRefused = 401, "authentication_error", code, "", true
		}
		values = append(values, encode(t, l))
	}
	produce(t, brokers, topic, values)
	startWorker(t, db, brokers, topic, nil)
	waitFor(t, 60*time.Second, "the rows", func() bool {
		return count(t, db, `SELECT count(*) FROM request_logs WHERE organization_id = 'org_a'`) == int64(len(values))
	})
	if got := count(t, db, `SELECT count(*) FROM request_logs WHERE auth_refused`); got != 4 {
		t.Errorf("%d rows marked refused by api_key, want 4", got)
	}
	if got := count(t, db, `SELECT coalesce(sum(quantity), 0) FROM usage_records WHERE organization_id = 'org_a'`); got != 2 {
		t.Errorf("metered %d, want the 2 authenticated requests", got)
	}
}

// TestIngestFieldsAndCleaning checks that a message's fields land in their
// columns, and that what Postgres could not store (NUL, invalid UTF-8) or a
// key that slipped past a producer does not.
func TestIngestFieldsAndCleaning(t *testing.T) {
	db, _ := testenv.Pool(t)
	brokers := testenv.Kafka(t)
	topic := testenv.KafkaTopic(t, brokers, "request-logs", 1)
	at := time.Now().UTC().Truncate(time.Microsecond)
	leaked := "sk_test_" + strings.Repeat("A", 42)
	produce(t, brokers, topic, [][]byte{encode(t, wire.RequestLog{
		V: 1, RequestID: reqID(1), Time: at.UnixMicro(), OrganizationID: "org_a", Livemode: true, APIKeyID: "key_a",
		Method: "POST", Route: "/v1/customers", Path: "/v1/customers?x=1", Status: 402, DurationUS: 12345, UpstreamUS: 10000,
		BytesIn: 10, BytesOut: 20, ClientIP: "203.0.113.9", UserAgent: "curl/8\x00\xff", APIVersion: "2026-11-01",
		IdempotencyKey: "idem-1", Replayed: true, RateLimit: "allowed", ErrorType: "card_error", ErrorCode: "card_declined",
		ErrorMessage: "Your card was declined; key " + leaked, ErrorParam: "card[number]",
		RequestHeaders:  map[string]string{"Content-Type": "application/json", "X-Leak": leaked},
		ResponseHeaders: map[string]string{"Request-Id": reqID(1)},
		RequestBody:     `{"a":"` + leaked + `"}`, ResponseBody: "{\"b\":\"line\nbreak\"}",
	})})
	startWorker(t, db, brokers, topic, nil)
	waitFor(t, 60*time.Second, "the row", func() bool {
		return count(t, db, `SELECT count(*) FROM request_logs`) == 1
	})
	var (
		createdAt                                                          time.Time
		org, key, method, route, path, ip, ua, ver, idem, rl, etype, ecode string
		live, replayed                                                     bool
		status                                                             int
		dur, up, in, out                                                   int64
		reqH, respH, reqB, respB, emsg, eparam                             string
	)
	err := db.QueryRow(context.Background(), `
		SELECT created_at, organization_id, livemode, api_key_id, method, route, path, status, duration_us, upstream_us,
		       bytes_in, bytes_out, client_ip, user_agent, api_version, idempotency_key, idempotent_replayed, rate_limit,
		       error_type, error_code, error_message, error_param, request_headers::text, response_headers::text,
		       request_body, response_body
		FROM request_logs WHERE request_id = $1`, reqID(1)).Scan(
		&createdAt, &org, &live, &key, &method, &route, &path, &status, &dur, &up, &in, &out, &ip, &ua, &ver, &idem,
		&replayed, &rl, &etype, &ecode, &emsg, &eparam, &reqH, &respH, &reqB, &respB)
	if err != nil {
		t.Fatal(err)
	}
	if !createdAt.Equal(at) || org != "org_a" || !live || key != "key_a" || method != "POST" || route != "/v1/customers" ||
		path != "/v1/customers?x=1" || status != 402 || dur != 12345 || up != 10000 || in != 10 || out != 20 ||
		ip != "203.0.113.9" || ver != "2026-11-01" || idem != "idem-1" || !replayed || rl != "allowed" ||
		etype != "card_error" || ecode != "card_declined" {
		t.Fatalf("row does not match the message: %v %s %v %s %s %s %s %d %d %d %d %d %s %s %s %v %s %s %s",
			createdAt, org, live, key, method, route, path, status, dur, up, in, out, ip, ver, idem, replayed, rl, etype, ecode)
	}
	if emsg != "Your card was declined; key "+redact.Mask || eparam != "card[number]" {
		t.Errorf("error message %q, param %q", emsg, eparam)
	}
	if ua != `curl/8\u0000`+"\uFFFD" {
		t.Errorf("user agent = %q", ua)
	}
	for _, s := range []string{reqH, respH, reqB, respB} {
		if strings.Contains(s, leaked[8:20]) {
			t.Errorf("a key reached the table: %s", s)
		}
	}
	if respB != "{\"b\":\"line\nbreak\"}" {
		t.Errorf("response body = %q", respB)
	}
}

// TestIngestRoutesByDay checks on-demand partitions for late messages and
// the skipping of messages outside the kept range.
func TestIngestRoutesByDay(t *testing.T) {
	db, _ := testenv.Pool(t)
	brokers := testenv.Kafka(t)
	topic := testenv.KafkaTopic(t, brokers, "request-logs", 1)
	now := time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC)
	msg := func(i int, at time.Time) []byte {
		return encode(t, wire.RequestLog{V: 1, RequestID: reqID(i), Time: at.UnixMicro(), Method: "GET", Path: "/", Status: 200,
			OrganizationID: "org_a", APIKeyID: "key_a"})
	}
	produce(t, brokers, topic, [][]byte{
		msg(1, now),
		msg(2, now.AddDate(0, 0, -5)),  // late: partition made on demand
		msg(3, now.AddDate(0, 0, -40)), // past retention
		msg(4, now.AddDate(0, 0, 10)),  // a gateway clock far ahead
		msg(5, now.AddDate(0, 0, 3)),   // just past the prepared range
	})
	_, reg := startWorker(t, db, brokers, topic, func(c *Config) { c.Now = func() time.Time { return now } })
	waitFor(t, 60*time.Second, "all messages", func() bool {
		return counterValue(t, reg, "gatehouse_request_log_ingest_rows_total")+
			counterValue(t, reg, "gatehouse_request_log_ingest_skipped_total", "reason", "expired")+
			counterValue(t, reg, "gatehouse_request_log_ingest_skipped_total", "reason", "future") >= 5
	})
	if got := count(t, db, `SELECT count(*) FROM request_logs`); got != 3 {
		t.Fatalf("stored %d rows, want 3", got)
	}
	for _, c := range []struct {
		reason string
		want   float64
	}{{"expired", 1}, {"future", 1}} {
		if got := counterValue(t, reg, "gatehouse_request_log_ingest_skipped_total", "reason", c.reason); got != c.want {
			t.Errorf("skipped %s = %v, want %v", c.reason, got, c.want)
		}
	}
	for _, p := range []string{"request_logs_20260310", "request_logs_20260318"} {
		if count(t, db, `SELECT count(*) FROM `+p) != 1 {
			t.Errorf("partition %s does not hold its row", p)
		}
	}
}

func TestPartitionMaintenance(t *testing.T) {
	db, _ := testenv.Pool(t)
	now := time.Date(2026, 3, 15, 23, 30, 0, 0, time.UTC)
	p := NewPartitions(db, 30*24*time.Hour, 2, func() time.Time { return now })
	ctx := context.Background()
	// Left over from earlier days.
	for _, d := range []time.Time{now.AddDate(0, 0, -45), now.AddDate(0, 0, -31), now.AddDate(0, 0, -30), now.AddDate(0, 0, -1)} {
		if _, err := p.Ensure(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	created, dropped, err := p.Maintain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// 2026-02-13 ends before now-30d (02-13 23:30); 02-14 still holds
	// requests younger than that.
	if want := "request_logs_20260315,request_logs_20260316,request_logs_20260317"; strings.Join(created, ",") != want {
		t.Errorf("created %v, want %s", created, want)
	}
	if want := "request_logs_20260129,request_logs_20260212"; strings.Join(dropped, ",") != want {
		t.Errorf("dropped %v, want %s", dropped, want)
	}
	list, err := p.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := "request_logs_20260213,request_logs_20260314,request_logs_20260315,request_logs_20260316,request_logs_20260317"; strings.Join(list, ",") != want {
		t.Errorf("partitions %v, want %s", list, want)
	}

	// A day later: one more ahead, one more past retention.
	now = now.Add(24 * time.Hour)
	created, dropped, err = p.Maintain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(created, ",") != "request_logs_20260318" || strings.Join(dropped, ",") != "request_logs_20260213" {
		t.Errorf("next day: created %v, dropped %v", created, dropped)
	}
	// Idempotent.
	created, dropped, err = p.Maintain(ctx)
	if err != nil || len(created)+len(dropped) != 0 {
		t.Errorf("second run: created %v, dropped %v, err %v", created, dropped, err)
	}
}

func TestParseRetention(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		err  bool
	}{
		{"30", 30 * 24 * time.Hour, false},
		{"7d", 7 * 24 * time.Hour, false},
		{"720h", 720 * time.Hour, false},
		{"0", 0, true},
		{"1h", 0, true},
		{"soon", 0, true},
		{"36500d", 36500 * 24 * time.Hour, false},
		// Past time.Duration's 292 years a day count would wrap around,
		// 213504 days to 25 minutes: refused, not kept for minutes.
		{"36501", 0, true},
		{"213504d", 0, true},
		{"99999999999999999999d", 0, true},
		{"2000000h", 0, true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseRetention(tc.in)
			if (err != nil) != tc.err || got != tc.want {
				t.Fatalf("ParseRetention(%q) = %v, %v", tc.in, got, err)
			}
		})
	}
}

// Creating a partition waits for an exclusive lock on request_logs, and
// every read that comes after waits behind it: with a long read in
// progress, Ensure gives up after a second rather than hold up the reads
// queued behind it (the ingester retries; days are made ahead).
func TestPartitionCreationDoesNotStallReads(t *testing.T) {
	db, _ := testenv.Pool(t)
	ctx := context.Background()
	now := time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC)
	p := NewPartitions(db, 30*24*time.Hour, 2, func() time.Time { return now })
	if _, err := p.Ensure(ctx, now); err != nil {
		t.Fatal(err)
	}
	long, err := db.Begin(ctx) // a long read: a usage chart, a 30-day search
	if err != nil {
		t.Fatal(err)
	}
	defer long.Rollback(ctx)
	if _, err := long.Exec(ctx, `SELECT count(*) FROM request_logs`); err != nil {
		t.Fatal(err)
	}

	ensured := make(chan error, 1)
	go func() {
		_, err := p.Ensure(ctx, now.AddDate(0, 0, 3))
		ensured <- err
	}()
	// Once the creation waits for its lock, a reader comes along. It has
	// far longer than the creation may wait, and far less than the long
	// read lasts (until this test ends it).
	waitForLockQueue(t, db)
	reader, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Rollback(ctx)
	if _, err := reader.Exec(ctx, `SET LOCAL statement_timeout = '10s'`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := reader.QueryRow(ctx, `SELECT count(*) FROM request_logs`).Scan(&n); err != nil {
		t.Fatalf("a read queued behind the partition's creation: %v", err)
	}
	if err := <-ensured; err == nil {
		t.Error("the partition was created while a read held request_logs")
	}
	// Once the reads are over, the creation goes through.
	reader.Rollback(ctx)
	long.Rollback(ctx)
	if created, err := p.Ensure(ctx, now.AddDate(0, 0, 3)); err != nil || !created {
		t.Fatalf("after the long read: created %v, %v", created, err)
	}
}

// waitForLockQueue waits until a session waits for a lock on request_logs.
func waitForLockQueue(t *testing.T, db *pgxpool.Pool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		var waiting bool
		if err := db.QueryRow(context.Background(), `
			SELECT EXISTS (SELECT 1 FROM pg_locks WHERE relation = 'request_logs'::regclass AND NOT granted)`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			return
		}
	}
	t.Fatal("nothing came to wait for a lock on request_logs")
}

// A creation that keeps failing for its lock waits longer each time, and
// in the end as long as it takes: reads that never stop overlapping must
// not keep a day's partition, and the ingester that needs it, waiting
// forever.
func TestCreateLockWaitGrowsToUnbounded(t *testing.T) {
	var got []time.Duration
	for n := range maxCreateWaits + 2 {
		got = append(got, createLockWait(n))
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 0, 0}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("waits %v, want %v", got, want)
	}
}

// The lag metric counts what is not stored: it grows while Postgres
// blocks the ingester and falls back to zero once everything is stored.
func TestLagGrowsWhileStoringIsStuck(t *testing.T) {
	db, _ := testenv.Pool(t)
	brokers := testenv.Kafka(t)
	topic := testenv.KafkaTopic(t, brokers, "request-logs", 2)
	at := time.Now().UTC()
	msgs := func(from, n int) (v [][]byte) {
		for i := from; i < from+n; i++ {
			v = append(v, encode(t, wire.RequestLog{V: 1, RequestID: reqID(i), Time: at.UnixMicro() + int64(i),
				OrganizationID: fmt.Sprintf("org_%d", i%4), APIKeyID: "key_a", Method: "GET", Path: "/", Status: 200}))
		}
		return v
	}
	produce(t, brokers, topic, msgs(0, 10))
	_, reg := startWorker(t, db, brokers, topic, func(c *Config) { c.LagEvery = 50 * time.Millisecond })
	lag := func() float64 { return counterValue(t, reg, "gatehouse_request_log_ingest_consumer_lag") }
	waitFor(t, 60*time.Second, "the first rows stored, no lag", func() bool {
		return count(t, db, `SELECT count(*) FROM request_logs`) == 10 && lag() == 0
	})

	ctx := context.Background()
	stall, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stall.Exec(ctx, `LOCK TABLE request_logs IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	produce(t, brokers, topic, msgs(10, 500))
	waitFor(t, 30*time.Second, "a lag of the 500 messages not stored", func() bool { return lag() >= 500 })
	_ = stall.Rollback(ctx)
	waitFor(t, 60*time.Second, "everything stored, no lag", func() bool {
		return count(t, db, `SELECT count(*) FROM request_logs`) == 510 && lag() == 0
	})
}
