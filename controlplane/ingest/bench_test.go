package ingest

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/testenv"
	"github.com/gatehouse/gatehouse/internal/wire"
)

// BenchmarkIngest measures ingestion throughput from Kafka to Postgres:
// INGEST_BENCH_N (default 200,000) realistic request logs — 50 organisations,
// 4 keys each, allowlisted headers, some errors — are produced to a fresh
// 6-partition topic first; the timer covers one worker consuming them until
// every row is in request_logs and metered. The figure is reported as
// entries/s. Run with -benchtime=1x (make bench does).
func BenchmarkIngest(b *testing.B) {
	n := 200_000
	if v, err := strconv.Atoi(os.Getenv("INGEST_BENCH_N")); err == nil && v > 0 {
		n = v
	}
	db, _ := testenv.Pool(b)
	brokers := testenv.Kafka(b)
	for i := 0; i < b.N; i++ {
		topic := testenv.KafkaTopic(b, brokers, "request-logs", 6)
		start := time.Now().UTC()
		values := make([][]byte, n)
		for j := range values {
			org := j % 50
			l := wire.RequestLog{
				V: 1, RequestID: fmt.Sprintf("req_b%d%020d", i, j), Time: start.UnixMicro() + int64(j),
				OrganizationID: fmt.Sprintf("org_%021d", org), Livemode: j%3 == 0, APIKeyID: fmt.Sprintf("key_%021d", org*4+j%4),
				Method: "POST", Route: "/v1/customers/{id}", Path: fmt.Sprintf("/v1/customers/cus_%018d?expand=x", j),
				Status: 200, DurationUS: 2300, UpstreamUS: 1900, BytesIn: 180, BytesOut: 640,
				ClientIP: "203.0.113.7", UserAgent: "gatehouse-go/1.4.0 go1.26", APIVersion: "2026-11-01",
				IdempotencyKey: fmt.Sprintf("idem-%d", j), RateLimit: "allowed",
				RequestHeaders: map[string]string{
					"Authorization": "[REDACTED]", "Content-Type": "application/json", "User-Agent": "gatehouse-go/1.4.0 go1.26",
					"Idempotency-Key": fmt.Sprintf("idem-%d", j), "Accept": "application/json",
				},
				ResponseHeaders: map[string]string{
					"Content-Type": "application/json", "Request-Id": fmt.Sprintf("req_b%d%020d", i, j),
					"Ratelimit": "limit=100, remaining=99, reset=1", "Ratelimit-Policy": "100;w=1",
				},
			}
			if j%20 == 0 {
				l.Status, l.ErrorType, l.ErrorCode = 404, "invalid_request_error", "resource_missing"
			}
			values[j] = encode(b, l)
		}
		produce(b, brokers, topic, values)

		b.ResetTimer()
		t0 := time.Now()
		_, reg := startWorker(b, db, brokers, topic, nil)
		waitFor(b, 10*time.Minute, "all rows", func() bool {
			return counterValue(b, reg, "gatehouse_request_log_ingest_rows_total") >= float64(n)
		})
		elapsed := time.Since(t0)
		b.StopTimer()
		if got := count(b, db, `SELECT count(*) FROM request_logs WHERE request_id LIKE $1`, fmt.Sprintf("req_b%d%%", i)); got != int64(n) {
			b.Fatalf("stored %d rows, want %d", got, n)
		}
		b.ReportMetric(float64(n)/elapsed.Seconds(), "entries/s")
		b.Logf("%d entries in %s: %.0f entries/s (includes joining the consumer group)", n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds())
		b.StartTimer()
	}
}
