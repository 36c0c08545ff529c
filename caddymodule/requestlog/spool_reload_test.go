package requestlog

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/outbox"
)

// A gateway restarted with another broker list (Y) sends what the old
// list's (X) spool held. While it does, a reload back to the old list (an
// operator reverting the change) must load: request_log's Provision
// acquires X's producer, which opens X's spool. The adoption holds that
// spool's lock, so the reload is refused with "in use by another process"
// naming the gateway's own pid.
func TestReloadBackToTheOldBrokersWhileTheirSpoolIsAdopted(t *testing.T) {
	brokers, topic, alias := adoptionTest(t, "spoolreload")
	dir := t.TempDir()
	x := []string{brokers[0]}
	y := config.BrokerSet(brokers[0], alias)

	// The previous run, on X while Kafka was away: a backlog in X's spool.
	const n = 150000
	val := []byte(strings.Repeat("v", 200))
	spoolBacklog(t, spoolPath(x, dir), topic, n, func(int) []byte { return val })

	// This run, on Y: Kafka takes a record, so X's spool is adopted.
	sp, err := acquireProducer(y, dir, 0, 0, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = releaseProducer(y, dir) })
	sp.Enqueue(outbox.Message{Topic: topic, Key: []byte("org_A"), Value: []byte("new")})
	waitFor(t, 30*time.Second, "the adoption to start sending X's spool", func() bool {
		_, err := os.Stat(filepath.Join(spoolPath(x, dir), "sent"))
		return err == nil
	})
	// The operator reverts to X: request_log's Provision acquires X.
	px, err := acquireProducer(x, dir, 0, 0, zap.NewNop())
	if err != nil {
		t.Fatalf("a reload back to the old brokers while their spool is being sent fails: %v", err)
	}
	defer func() { _ = releaseProducer(x, dir) }()
	// What the adoption had not sent, X's own producer sends.
	waitFor(t, 60*time.Second, "X's spool sent", func() bool {
		st := px.Stats()
		return st.SpoolBytes == 0 && st.Memory == 0
	})
	if st := px.Stats(); st.Dropped != 0 {
		t.Errorf("X's producer dropped %d", st.Dropped)
	}
}
