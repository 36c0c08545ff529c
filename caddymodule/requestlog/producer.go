package requestlog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/gatehouse/gatehouse/internal/outbox"
)

// producers holds one running outbox per (brokers, spool directory), shared
// by every request_log handler of every loaded config: a reload neither
// loses what is queued nor opens a second writer on the same spool.
var producers = caddy.NewUsagePool()

type sharedProducer struct {
	*outbox.Producer
	sender *outbox.KafkaSender
	cancel context.CancelFunc
	done   chan struct{}
	// The limits it was created with; a config loaded while it runs
	// shares it, and its own limits wait for the next start.
	memoryLimit int
	spoolLimit  int64
}

// Destruct stops the producer when the last handler using it is cleaned
// up: what Kafka has not taken by then stays in the spool for the next
// start.
func (s *sharedProducer) Destruct() error {
	s.cancel()
	<-s.done
	return s.sender.Close()
}

// producerKey names a shared producer; dir is absolute and clean
// (Provision), so two spellings of one directory share it.
func producerKey(brokers []string, dir string) string {
	return strings.Join(brokers, ",") + "|" + dir
}

// Linger is how long request logs wait in memory to fill a batch (a full
// batch leaves at once). Each send costs the Kafka broker about the same
// CPU whatever its size, and wakes the ingester's fetch: at a light 850
// requests/s, sending every 100 ms rather than every 10 ms (the outbox's
// default, kept for events) halved the broker's CPU per request (207 →
// 107 µs, four interleaved profile runs each) on a machine where it shares
// the cores with the gateway. A log shows up to 0.1 s later, and a kill -9
// loses up to 0.1 s of them (README, known gaps).
const Linger = 100 * time.Millisecond

// SendBatch is the most request logs per send, for the same reason: under
// load a batch of the outbox's default 128 fills well before Linger ends,
// and the broker's CPU per entry falls with the entries per send (kafka-go
// to the local broker, 5,000 entries/s of 800 bytes: 9–24 µs an entry in
// sends of 128, 1–5 µs in sends of 500; the full gateway at saturation,
// four interleaved pairs of 10 s profile runs: the broker's CPU per
// request 22–33 → 16–28 µs).
const SendBatch = outbox.MaxSendBatch

// spoolPath is the directory of one broker set's spool inside dir, so that
// pointing a config at other brokers never mixes their queues.
func spoolPath(brokers []string, dir string) string {
	sum := sha256.Sum256([]byte(strings.Join(brokers, ",")))
	return filepath.Join(dir, "kafka-"+hex.EncodeToString(sum[:6]))
}

// acquireProducer returns the shared producer for brokers and dir, creating
// and starting it if needed. Limits and logger apply when it is created;
// a handler sharing an existing producer gets that one's limits, with a
// warning when its own differ (a reload that changed memory_limit or
// spool_limit: the spool cannot change hands while it runs). Callers
// release it with releaseProducer in Cleanup.
func acquireProducer(brokers []string, dir string, memoryLimit int, spoolLimit int64, log *zap.Logger) (*sharedProducer, error) {
	v, _, err := producers.LoadOrNew(producerKey(brokers, dir), func() (caddy.Destructor, error) {
		sender := outbox.NewKafkaSenderBatch(brokers, SendBatch)
		p, err := outbox.New(outbox.Config{
			Dir: spoolPath(brokers, dir), MemoryLimit: memoryLimit, SpoolLimit: spoolLimit,
			BatchSize: SendBatch, Linger: Linger, Logger: log.Named("outbox"),
		}, sender)
		if err != nil {
			_ = sender.Close()
			return nil, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		sp := &sharedProducer{Producer: p, sender: sender, cancel: cancel, done: make(chan struct{}),
			memoryLimit: memoryLimit, spoolLimit: spoolLimit}
		go func() {
			defer close(sp.done)
			_ = p.Run(ctx)
		}()
		return sp, nil
	})
	if err != nil {
		return nil, err
	}
	sp := v.(*sharedProducer)
	if sp.memoryLimit != memoryLimit || sp.spoolLimit != spoolLimit {
		log.Warn("request_log: the running spool keeps the memory_limit and spool_limit it started with; the new ones apply from the next start of the gateway",
			zap.Int("memory_limit", sp.memoryLimit), zap.Int64("spool_limit", sp.spoolLimit),
			zap.Int("configured_memory_limit", memoryLimit), zap.Int64("configured_spool_limit", spoolLimit))
	}
	return sp, nil
}

func releaseProducer(brokers []string, dir string) error {
	_, err := producers.Delete(producerKey(brokers, dir))
	return err
}

// outboxStats sums the counters of every running producer, for the
// metrics: several configs or broker sets may be live at once.
func outboxStats() outbox.Stats {
	var total outbox.Stats
	producers.Range(func(_, v any) bool {
		s := v.(*sharedProducer).Stats()
		total.Enqueued += s.Enqueued
		total.Sent += s.Sent
		total.Spooled += s.Spooled
		total.Dropped += s.Dropped
		total.SpoolBytes += s.SpoolBytes
		total.Memory += s.Memory
		return true
	})
	return total
}
