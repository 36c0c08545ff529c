package requestlog

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/testenv"
)

// An operator reloads the gateway with KAFKA_BROKERS spelled another way
// (or pointed at a new cluster). The request-log outbox counters are
// counters: Prometheus must never see them go down without a restart, and
// the metrics' own comment says counts carry across config reloads.
func TestOutboxCountersSurviveAReloadToOtherBrokers(t *testing.T) {
	brokers := testenv.Kafka(t)
	topic := testenv.KafkaTopic(t, brokers, "metricsreload", 1)
	_, kport, err := net.SplitHostPort(brokers[0])
	if err != nil {
		t.Fatal(err)
	}
	port := testenv.FreePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	spool := t.TempDir()
	load := func(brokerList string) { runLogging(t, port, brokerList, topic, spool) }
	load(brokers[0])
	const n = 20
	for i := 0; i < n; i++ {
		resp, err := http.Get(fmt.Sprintf("%s/v1/things/%d", base, i))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	waitFor(t, 30*time.Second, "the request logs sent", func() bool {
		return metric(t, base, "caddy_gatehouse_requestlog_sent_total") >= n
	})
	before := metric(t, base, "caddy_gatehouse_requestlog_sent_total")

	// The reload: same Kafka, the list spelled with localhost.
	load(net.JoinHostPort("localhost", kport))
	resp, err := http.Get(base + "/v1/things/after")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// The new config's log is sent and counted on top of the old ones (a
	// counter reset without a restart would lose those to rate() and
	// increase()).
	waitFor(t, 30*time.Second, fmt.Sprintf("sent_total past the %v sent before the reload", before), func() bool {
		return metric(t, base, "caddy_gatehouse_requestlog_sent_total") >= before+1
	})
}

// A gateway restarted with the broker list spelled another way while Kafka
// was away: the old list's spool holds a backlog of request logs, which
// this run adopts and sends. The outbox metrics are how an operator watches
// such a backlog drain: requestlog_sent_total counts what Kafka took.
func TestAdoptedSpoolBacklogShowsInTheMetrics(t *testing.T) {
	brokers, topic, alias := adoptionTest(t, "metricsadopt")
	spool := t.TempDir()
	old := []string{brokers[0]}
	// The previous run, on the old list while Kafka was away.
	const n = 5000
	val := []byte(strings.Repeat("v", 200))
	spoolBacklog(t, spoolPath(old, spool), topic, n, func(int) []byte { return val })

	// This run: the same Kafka, spelled localhost.
	port := testenv.FreePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	runLogging(t, port, alias, topic, spool)
	resp, err := http.Get(base + "/v1/things/1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// Sampled as a scrape would, until the backlog is gone.
	waitFor(t, 60*time.Second, "the adopted spool sent and removed", func() bool {
		_, err := os.Stat(spoolPath(old, spool))
		return os.IsNotExist(err)
	})
	sent := metric(t, base, "caddy_gatehouse_requestlog_sent_total")
	if sent < n+1 {
		t.Fatalf("%d request logs waited on disk and were then sent to Kafka, but requestlog_sent_total=%v once they were sent (want >= %d)",
			n, sent, n+1)
	}
}

// runLogging (re)loads a gateway on port that logs every request to topic
// through brokers, spooling in spool, and serves its metrics on /metrics.
func runLogging(t *testing.T, port int, brokers, topic, spool string) {
	t.Helper()
	runCaddy(t, port,
		map[string]any{"match": []any{map[string]any{"path": []string{"/metrics"}}}, "handle": []any{map[string]any{"handler": "metrics"}}},
		map[string]any{"handle": []any{
			map[string]any{"handler": "request_id"},
			map[string]any{"handler": "request_log", "brokers": []string{brokers}, "topic": topic, "spool_dir": spool},
			map[string]any{"handler": "static_response", "status_code": 200, "body": `{"ok":true}`},
		}},
	)
}
