package requestlog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync"
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
	outboxes.Remove(s.Producer)
	return s.sender.Close()
}

// outboxes are the producers and adoptions the metrics count
// (outbox.Tally: counts of producers a reload stopped stay in, and an
// adopted backlog shows while it is sent).
var outboxes outbox.Tally

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

// spoolPath is the directory of one broker set (config.BrokerSet) inside
// dir, so that two configs (or a config and the one a reload replaces)
// pointing at other brokers never share a spool; a spool no running set
// names is adopted (adoptOrphans).
func spoolPath(brokers []string, dir string) string {
	sum := sha256.Sum256([]byte(strings.Join(brokers, ",")))
	return filepath.Join(dir, spoolPrefix+hex.EncodeToString(sum[:6]))
}

const spoolPrefix = "kafka-"

// adoptOrphans sends what other broker lists' spools in dir hold (a
// gateway restarted with KAFKA_BROKERS spelled another way, or pointed at
// a new cluster, while Kafka was away) through s's sender, then removes
// them. It starts once s has reached Kafka: by then every handler of the
// loaded config holds its own spool. A spool another process holds is left
// alone, and one a producer of this process opens meanwhile (a reload back
// to its brokers) is handed over to it (claimSpool).
func (s *sharedProducer) adoptOrphans(ctx context.Context, dir, own string, log *zap.Logger) {
	if !waitUntil(ctx, func() bool { return s.Stats().Sent > 0 }) {
		return
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		if e.IsDir() && strings.HasPrefix(e.Name(), spoolPrefix) && path != own {
			s.adopt(ctx, path, log)
		}
	}
}

// adopt sends the spool at path through s's sender and removes it, unless
// a producer of this process holds it or claims it meanwhile.
func (s *sharedProducer) adopt(ctx context.Context, path string, log *zap.Logger) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a := &adoption{cancel: cancel, done: make(chan struct{})}
	adoptMu.Lock()
	if liveSpools[path] > 0 || adoptions[path] != nil { // a producer's, or another's adoption
		adoptMu.Unlock()
		return
	}
	adoptions[path] = a
	adoptMu.Unlock()
	defer func() { // after the removal: a claim waits for it
		adoptMu.Lock()
		delete(adoptions, path)
		adoptMu.Unlock()
		close(a.done)
	}()
	o, err := outbox.New(outbox.Config{Dir: path, BatchSize: SendBatch, Linger: Linger, Logger: log}, s.sender)
	if err != nil {
		return // held by another process
	}
	outboxes.Add(o)
	defer outboxes.Remove(o)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = o.Run(ctx)
	}()
	emptied := waitUntil(ctx, func() bool { st := o.Stats(); return st.SpoolBytes == 0 && st.Memory == 0 })
	cancel()
	<-done
	if !emptied {
		return // stopping, or claimed: the rest stays in the spool
	}
	if err := os.RemoveAll(path); err != nil {
		log.Warn("request_log: removing an adopted spool", zap.String("spool", path), zap.Error(err))
	}
	log.Info("request_log: sent the request logs another broker list's spool held", zap.String("spool", path),
		zap.Uint64("sent", o.Stats().Sent))
}

// waitUntil polls cond every adoptPoll until it holds (true) or ctx ends.
func waitUntil(ctx context.Context, cond func() bool) bool {
	tick := time.NewTicker(adoptPoll)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
	return true
}

// The spools of this process's producers and those adoptOrphans is
// sending, by path: a producer created for a spool being adopted (a reload
// back to its brokers) stops the adoption and takes the spool over.
var (
	adoptMu    sync.Mutex
	liveSpools = map[string]int{}
	adoptions  = map[string]*adoption{}
)

type adoption struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// claimSpool marks path as a live producer's, stopping its adoption first.
func claimSpool(path string) {
	adoptMu.Lock()
	liveSpools[path]++
	a := adoptions[path]
	adoptMu.Unlock()
	if a != nil {
		a.cancel()
		<-a.done
	}
}

func unclaimSpool(path string) {
	adoptMu.Lock()
	if liveSpools[path]--; liveSpools[path] <= 0 {
		delete(liveSpools, path)
	}
	adoptMu.Unlock()
}

// adoptPoll is how often adoptOrphans looks at its progress.
var adoptPoll = time.Second

// acquireProducer returns the shared producer for brokers and dir, creating
// and starting it if needed. Limits and logger apply when it is created;
// a handler sharing an existing producer gets that one's limits, with a
// warning when its own differ (a reload that changed memory_limit or
// spool_limit: the spool cannot change hands while it runs). Callers
// release it with releaseProducer in Cleanup.
func acquireProducer(brokers []string, dir string, memoryLimit int, spoolLimit int64, log *zap.Logger) (*sharedProducer, error) {
	v, _, err := producers.LoadOrNew(producerKey(brokers, dir), func() (caddy.Destructor, error) {
		own := spoolPath(brokers, dir)
		claimSpool(own)
		sender := outbox.NewKafkaSenderBatch(brokers, SendBatch)
		p, err := outbox.New(outbox.Config{
			Dir: own, MemoryLimit: memoryLimit, SpoolLimit: spoolLimit,
			BatchSize: SendBatch, Linger: Linger, Logger: log.Named("outbox"),
		}, sender)
		if err != nil {
			unclaimSpool(own)
			_ = sender.Close()
			return nil, err
		}
		outboxes.Add(p)
		ctx, cancel := context.WithCancel(context.Background())
		sp := &sharedProducer{Producer: p, sender: sender, cancel: cancel, done: make(chan struct{}),
			memoryLimit: memoryLimit, spoolLimit: spoolLimit}
		var adopting sync.WaitGroup
		adopting.Go(func() { sp.adoptOrphans(ctx, dir, spoolPath(brokers, dir), log.Named("outbox")) })
		go func() {
			defer close(sp.done)
			_ = p.Run(ctx)
			adopting.Wait()
			unclaimSpool(own)
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

// outboxStats sums the counters of every producer, for the metrics: several
// configs or broker sets may be live at once.
func outboxStats() outbox.Stats { return outboxes.Stats() }
