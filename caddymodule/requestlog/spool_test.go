package requestlog

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/outbox"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

type downSender struct{}

func (downSender) Send(context.Context, []outbox.Message) error { return errors.New("kafka away") }

// Request logs spooled while Kafka was away reach it after a restart whose
// broker list names the brokers another way (reordered, another address of
// the same broker, one more bootstrap broker): the spool is per broker
// list, and the new list's producer never looked at the old list's spool,
// so they waited there for good (and their usage was never metered).
func TestSpooledLogsSurviveARestartWithTheBrokersListedAnotherWay(t *testing.T) {
	brokers, topic, alias := adoptionTest(t, "spooladopt")
	dir := t.TempDir()

	// The first gateway: Kafka is away, three request logs go to the
	// spool, and the gateway stops.
	before := []string{brokers[0]}
	spoolBacklog(t, spoolPath(before, dir), topic, 3, func(i int) []byte { return fmt.Appendf(nil, "spooled %d", i) })
	// The second, with Kafka back, lists the broker under two names (as
	// Provision reads them).
	after := config.BrokerSet(alias + "," + brokers[0])
	sp, err := acquireProducer(after, dir, 0, 0, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = releaseProducer(after, dir) })
	sp.Enqueue(outbox.Message{Topic: topic, Key: []byte("org_A"), Value: []byte("new")})

	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rcancel()
	var got []string
	for len(got) < 4 {
		m, err := r.ReadMessage(rctx)
		if err != nil {
			t.Fatalf("Kafka got %q, want the new log and the 3 spooled ones: %v", got, err)
		}
		got = append(got, string(m.Value))
	}
	sort.Strings(got)
	if fmt.Sprint(got) != "[new spooled 0 spooled 1 spooled 2]" {
		t.Fatalf("Kafka got %q", got)
	}
	waitFor(t, 10*time.Second, "the old spool's removal", func() bool {
		_, err := os.Stat(spoolPath(before, dir))
		return os.IsNotExist(err)
	})
	if _, err := os.Stat(spoolPath(after, dir)); err != nil {
		t.Errorf("the running list's own spool: %v", err)
	}
}

// spoolBacklog leaves n request logs (value(i)) in the spool at path, as a
// gateway that stopped while Kafka was away does.
func spoolBacklog(t *testing.T, path, topic string, n int, value func(i int) []byte) {
	t.Helper()
	p, err := outbox.New(outbox.Config{Dir: path, Linger: time.Millisecond, RetryEvery: time.Millisecond}, downSender{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	for i := range n {
		p.Enqueue(outbox.Message{Topic: topic, Key: fmt.Appendf(nil, "k%d", i), Value: value(i)})
	}
	waitFor(t, 60*time.Second, "the backlog in the spool", func() bool { return p.Stats().Spooled >= uint64(n) })
	cancel()
	<-done
}

// adoptionTest makes spool adoption quick for the test and returns the
// Kafka brokers, a fresh topic named after name, and another name for the
// first broker (localhost for 127.0.0.1, and back): a broker list written
// another way.
func adoptionTest(t *testing.T, name string) (brokers []string, topic, alias string) {
	t.Helper()
	poll := adoptPoll
	adoptPoll = 10 * time.Millisecond
	t.Cleanup(func() { adoptPoll = poll })
	brokers = testenv.Kafka(t)
	topic = testenv.KafkaTopic(t, brokers, name, 1)
	host, port, err := net.SplitHostPort(brokers[0])
	if err != nil {
		t.Fatal(err)
	}
	alias = net.JoinHostPort("localhost", port)
	if host == "localhost" {
		alias = net.JoinHostPort("127.0.0.1", port)
	}
	return brokers, topic, alias
}
