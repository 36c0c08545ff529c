// Package outbox sends messages to Kafka without making the caller wait for
// Kafka (DESIGN §7). Enqueue appends to a bounded in-memory buffer; one goroutine
// sends batches. When Kafka cannot take them, batches go to an on-disk spool
// and are sent, oldest first and in order, when Kafka is back. Only past the
// spool's size limit are messages dropped, and each drop is counted. In
// write-through mode (Config.WriteThrough) every message goes to the spool
// first, so that it survives a crash of the process.
//
// The gateway's request_log and emit_events modules and the control plane's
// event API all produce through it.
package outbox

import (
	"context"
	"errors"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
)

// Message is one record for a topic.
type Message struct {
	Topic string
	Key   []byte
	Value []byte
}

// Sender delivers a batch or fails as a whole. *KafkaSender is the real one.
type Sender interface {
	Send(ctx context.Context, msgs []Message) error
}

// Config tunes a Producer. Zero values take the defaults noted.
type Config struct {
	// Dir is the spool directory (required).
	Dir string
	// MemoryLimit is how many messages wait in memory before the rest go to
	// the spool. Default 20000.
	MemoryLimit int
	// MemoryBytes bounds the bytes (keys and values) waiting in memory the
	// same way, for large messages (request logs with captured bodies).
	// Default 64 MiB.
	MemoryBytes int64
	// SpoolLimit is the spool's size limit in bytes. Default 1 GiB.
	SpoolLimit int64
	// BatchSize is the most messages per send. Default SendBatch. Give the
	// Kafka sender the same (NewKafkaSenderBatch), so that each partition's
	// share of a send is one Kafka record batch.
	BatchSize int
	// BatchBytes is the most bytes (keys and values) per send, one message
	// at least: with the writer's record overhead it stays under the
	// writer's BatchBytes, so a send is never split by size either.
	// Default SendBytes, at most MaxSendBytes.
	BatchBytes int
	// Linger is how long the sender waits to fill a batch. Default 10 ms.
	Linger time.Duration
	// RetryEvery is the pause between attempts while Kafka is down. Default 1 s.
	RetryEvery time.Duration
	// SendTimeout bounds one send. Default 10 s.
	SendTimeout time.Duration
	// WriteThrough writes each message to the spool before Enqueue
	// returns, instead of keeping it in memory until it is sent, so that
	// a crash of this process (kill -9) loses nothing that was enqueued.
	// It costs a write(2) per message, under the spool's lock, and a
	// read when sending. The data is in the OS page cache, not fsynced: a
	// crash of the machine can still lose the last seconds. The spool
	// directory must outlive the process for a restart to send them.
	WriteThrough bool
	Logger       *zap.Logger
}

// Stats are counters for metrics.
type Stats struct {
	Enqueued, Sent, Spooled, Dropped uint64
	SpoolBytes                       int64
	Memory                           int
}

// Producer is the non-blocking, spooling producer.
type Producer struct {
	cfg    Config
	sender Sender
	spool  *spool
	log    *zap.Logger

	mu       sync.Mutex
	mem      []Message
	memBytes int64 // keys and values in mem
	wake     chan struct{}
	wakeAt   int // messages in memory that wake the sender before Linger ends
	stopped  bool
	// inflight is the batch drain took from mem and is sending; it is
	// older than mem. An overflow to the spool meanwhile spools it first
	// (inflightSpooled), so that a failed send cannot put it behind newer
	// messages; if the send succeeds, the inflightInSpool records it left
	// at the head of the spool (which was empty when drain took the batch)
	// are consumed unsent, so it reaches Kafka and sent_total once.
	inflight        []Message
	inflightSpooled bool
	inflightInSpool int
	// inflightLost counts the in-flight messages the spool had no room
	// for, counted as dropped: the send's success delivers them after all.
	inflightLost int

	enqueued, sent, spooled, dropped atomic.Uint64
	warnedAt                         atomic.Int64
	down                             atomic.Bool // the last drain failed: Kafka is away
}

// New opens the spool in cfg.Dir (re-sending anything a previous process
// left there) and returns a producer; call Run to start sending.
func New(cfg Config, sender Sender) (*Producer, error) {
	if cfg.MemoryLimit <= 0 {
		cfg.MemoryLimit = 20000
	}
	if cfg.MemoryBytes <= 0 {
		cfg.MemoryBytes = 64 << 20
	}
	if cfg.SpoolLimit <= 0 {
		cfg.SpoolLimit = 1 << 30
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = SendBatch
	}
	cfg.BatchSize = min(cfg.BatchSize, MaxSendBatch)
	if cfg.BatchBytes <= 0 {
		cfg.BatchBytes = SendBytes
	}
	cfg.BatchBytes = min(cfg.BatchBytes, MaxSendBytes)
	if cfg.Linger <= 0 {
		cfg.Linger = 10 * time.Millisecond
	}
	if cfg.RetryEvery <= 0 {
		cfg.RetryEvery = time.Second
	}
	if cfg.SendTimeout <= 0 {
		cfg.SendTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	// Segments of at most an eighth of the limit: the sent start of the
	// head segment stays on disk until it rolls, so disk use stays within
	// about 1.125 × SpoolLimit (64 MiB segments made a 1 MiB limit 65 MiB).
	sp, err := openSpool(cfg.Dir, cfg.SpoolLimit, min(64<<20, max(cfg.SpoolLimit/8, 64<<10)))
	if err != nil {
		return nil, err
	}
	return &Producer{cfg: cfg, sender: sender, spool: sp, log: cfg.Logger, wake: make(chan struct{}, 1),
		// A memory limit under the batch size would overflow to the spool
		// before a full batch woke the sender: wake it half-way instead.
		wakeAt: min(cfg.BatchSize, max(cfg.MemoryLimit/2, 1))}, nil
}

// MaxMessageBytes is the largest key plus value Enqueue accepts: larger
// messages would be refused by the broker forever and stall everything
// queued behind them, so they are dropped (and counted) at once.
const MaxMessageBytes = 1_030_000

// Enqueue queues m for sending. It never blocks on Kafka: when memory is
// full, what is in memory and m move to the disk spool, keeping their order.
func (p *Producer) Enqueue(m Message) {
	p.enqueued.Add(1)
	if len(m.Key)+len(m.Value) > MaxMessageBytes {
		p.dropped.Add(1)
		p.warn("outbox: dropping a message larger than Kafka accepts", zap.String("topic", m.Topic),
			zap.Int("bytes", len(m.Key)+len(m.Value)))
		return
	}
	if p.cfg.WriteThrough {
		p.journal(m) // the spool orders appends itself
		return
	}
	size := int64(len(m.Key) + len(m.Value))
	p.mu.Lock()
	if len(p.mem) < p.cfg.MemoryLimit && p.memBytes+size <= p.cfg.MemoryBytes && !p.stopped {
		p.mem = append(p.mem, m)
		p.memBytes += size
		full := len(p.mem) >= p.wakeAt || p.memBytes >= int64(p.cfg.BatchBytes)
		p.mu.Unlock()
		if full {
			p.signal()
		}
		return
	}
	batch := append(p.takeMem(), m)
	inflight := p.inflight != nil && !p.inflightSpooled
	if inflight {
		batch = append(slices.Clip(p.inflight), batch...)
		p.inflightSpooled = true
	}
	n := p.toSpool(batch) // under p.mu so nothing newer overtakes these
	if inflight {
		p.inflightInSpool = min(n, len(p.inflight))
		p.inflightLost = len(p.inflight) - p.inflightInSpool
	}
	p.mu.Unlock()
}

// takeMem empties memory and returns what it held. p.mu must be held.
func (p *Producer) takeMem() []Message {
	m := p.mem
	p.mem, p.memBytes = nil, 0
	return m
}

func (p *Producer) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// journal appends m to the spool in write-through mode. The spool is its
// normal path, so m counts as spooled only while Kafka is failing, as in
// memory mode: Stats.Spooled stays "waited on disk for Kafka" in both.
func (p *Producer) journal(m Message) {
	if _, err := p.spool.append([]Message{m}); err != nil {
		p.dropped.Add(1)
		p.warn("outbox spool full or failing; dropping messages", zap.Error(err), zap.Int("dropped", 1))
		return
	}
	if p.down.Load() {
		p.spooled.Add(1)
	}
}

// toSpool appends msgs to the spool, counting what does not fit as dropped,
// and returns how many were written.
func (p *Producer) toSpool(msgs []Message) int {
	n, err := p.spool.append(msgs)
	p.spooled.Add(uint64(n))
	if err != nil {
		p.dropped.Add(uint64(len(msgs) - n))
		p.warn("outbox spool full or failing; dropping messages", zap.Error(err), zap.Int("dropped", len(msgs)-n))
	}
	return n
}

// skipSpooled consumes the first n records of the spool without sending
// them: an in-flight batch that an overflow spooled and its send delivered.
func (p *Producer) skipSpooled(n int) {
	for n > 0 {
		msgs, pos, err := p.spool.peek(n, math.MaxInt)
		if err == nil && len(msgs) == 0 && !pos.segDone {
			return
		}
		if err == nil {
			err = p.spool.commit(pos)
		}
		if err != nil {
			p.warn("skipping sent messages in the outbox spool; they will be sent again", zap.Error(err))
			return
		}
		n -= len(msgs)
	}
}

// warn logs at most every 10 s, so an outage does not flood the logs.
func (p *Producer) warn(msg string, fields ...zap.Field) {
	now := time.Now().UnixNano()
	last := p.warnedAt.Load()
	if now-last < int64(10*time.Second) || !p.warnedAt.CompareAndSwap(last, now) {
		return
	}
	p.log.Warn(msg, fields...)
}

// Stats returns the counters.
func (p *Producer) Stats() Stats {
	p.mu.Lock()
	mem := len(p.mem)
	p.mu.Unlock()
	return Stats{
		Enqueued: p.enqueued.Load(), Sent: p.sent.Load(), Spooled: p.spooled.Load(),
		Dropped: p.dropped.Load(), SpoolBytes: p.spool.Bytes(), Memory: mem,
	}
}

// Run sends until ctx ends, then gives what is queued (in the spool and in
// memory) 3 s to reach Kafka, unless Kafka is failing, and spools the rest,
// so a clean shutdown loses nothing.
func (p *Producer) Run(ctx context.Context) error {
	tick := time.NewTicker(p.cfg.Linger)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			p.shutdown()
			return nil
		case <-tick.C:
		case <-p.wake:
		}
		wasDown := p.down.Load()
		if wasDown {
			// Kafka was failing: keep memory small and durable while waiting.
			p.mu.Lock()
			if len(p.mem) > 0 {
				p.toSpool(p.takeMem())
			}
			p.mu.Unlock()
			p.spool.sync()
		}
		ok := p.drain(ctx)
		p.down.Store(!ok)
		if ctx.Err() != nil {
			p.shutdown() // not retrying a send that failed meanwhile
			return nil
		}
		if ok && wasDown {
			p.log.Info("kafka reachable again; spool drained")
		}
		if !ok {
			select {
			case <-ctx.Done():
				p.shutdown()
				return nil
			case <-time.After(p.cfg.RetryEvery):
			}
		}
	}
}

// drain sends the spool first (it holds the oldest messages), then memory,
// until both are empty or ctx ends. It reports false when Kafka refused a
// batch.
func (p *Producer) drain(ctx context.Context) bool {
	for !p.spool.empty() {
		if ctx.Err() != nil {
			return true // stopped, not failed: what is left stays in the spool
		}
		msgs, pos, err := p.spool.peek(p.cfg.BatchSize, p.cfg.BatchBytes)
		if err != nil {
			p.warn("reading outbox spool", zap.Error(err))
			return false
		}
		if len(msgs) > 0 {
			if err := p.send(ctx, msgs); err != nil {
				return false
			}
		} else if !pos.segDone {
			break // the live segment's tail is still being written
		}
		if err := p.spool.commit(pos); err != nil {
			p.warn("committing outbox spool", zap.Error(err))
			return false
		}
	}
	for {
		if ctx.Err() != nil {
			return true // stopped, not failed: shutdown spools the rest
		}
		p.mu.Lock()
		if !p.spool.empty() {
			p.mu.Unlock()
			return true // Enqueue overflowed to the spool meanwhile; next round
		}
		n := sendable(p.mem, p.cfg.BatchSize, p.cfg.BatchBytes)
		if n == 0 {
			p.mu.Unlock()
			return true
		}
		batch := p.mem[:n:n]
		p.mem = p.mem[n:]
		for _, m := range batch {
			p.memBytes -= int64(len(m.Key) + len(m.Value))
		}
		if len(p.mem) == 0 {
			p.mem = nil
		}
		p.inflight, p.inflightSpooled = batch, false
		p.mu.Unlock()
		err := p.send(ctx, batch)
		p.mu.Lock()
		spooled, inSpool, lost := p.inflightSpooled, p.inflightInSpool, p.inflightLost
		p.inflight, p.inflightSpooled, p.inflightInSpool, p.inflightLost = nil, false, 0, 0
		if err != nil {
			// Older than anything still in memory: spooling it first keeps
			// order, unless an overflow already spooled it ahead of newer ones.
			if !spooled {
				p.toSpool(append(batch, p.takeMem()...))
			} else {
				p.toSpool(p.takeMem())
			}
			p.mu.Unlock()
			return false
		}
		if spooled {
			p.skipSpooled(inSpool)
		}
		if lost > 0 {
			p.dropped.Add(^uint64(lost - 1)) // delivered after all: not dropped
		}
		p.mu.Unlock()
	}
}

// send writes one batch. Cancelling ctx does not abort it midway (the
// outcome of a half-written batch is unknown), but a deadline on ctx, as
// at shutdown, bounds it.
func (p *Producer) send(ctx context.Context, msgs []Message) error {
	timeout := p.cfg.SendTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	if err := p.sender.Send(sctx, msgs); err != nil {
		p.warn("kafka unavailable; spooling to disk", zap.Error(err), zap.Int64("spool_bytes", p.spool.Bytes()))
		return err
	}
	p.sent.Add(uint64(len(msgs)))
	return nil
}

func (p *Producer) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	if !p.down.Load() {
		p.drain(ctx) // the spool first: in write-through mode it holds everything
	}
	p.mu.Lock()
	if len(p.mem) > 0 {
		p.toSpool(p.takeMem())
	}
	p.mu.Unlock()
	p.spool.close()
}

// SendBatch is the outbox's default send size and the Kafka writer's batch
// size. Equal, so that a partition's share of one send is one record batch
// that Kafka takes or refuses whole: a send split into several batches
// could half succeed, and resending it would put its tail after copies.
const SendBatch = 128

// SendBytes is the outbox's default bound on the bytes of one send; see
// Config.BatchBytes.
const SendBytes = 900_000

// writerBatchBytes is the Kafka writer's bound on a record batch: the
// broker refuses one over message.max.bytes (1 MiB by default) as a whole.
const writerBatchBytes = 1_040_000

// MaxSendBytes bounds Config.BatchBytes: kafka-go counts 22 bytes of
// record overhead per message besides its key and value, so MaxSendBatch
// messages of MaxSendBytes stay within the writer's bound.
const MaxSendBytes = writerBatchBytes - 32*MaxSendBatch

// MaxSendBatch bounds BatchSize: past it, kafka-go's per-partition
// allocation for every send (room for BatchSize messages) costs more than
// the broker saves.
const MaxSendBatch = 1024

// sendable is how many of msgs, from the first, make one send: at most n
// messages and maxBytes bytes, and one message at least.
func sendable(msgs []Message, n, maxBytes int) int {
	size := 0
	for i, m := range msgs[:min(n, len(msgs))] {
		size += len(m.Key) + len(m.Value)
		if size > maxBytes && i > 0 {
			return i
		}
	}
	return min(n, len(msgs))
}

// KafkaSender sends with a kafka-go Writer configured for durability:
// acks from all in-sync replicas, hashing on the key so one organisation's
// messages stay in one partition and in order.
type KafkaSender struct{ W *kafka.Writer }

// NewKafkaSender returns a sender for brokers, for sends of at most
// SendBatch messages.
func NewKafkaSender(brokers []string) *KafkaSender { return NewKafkaSenderBatch(brokers, SendBatch) }

// NewKafkaSenderBatch returns a sender for brokers for sends of at most
// batch messages (at most MaxSendBatch), the producer's Config.BatchSize.
func NewKafkaSenderBatch(brokers []string, batch int) *KafkaSender {
	return &KafkaSender{W: &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond, // we batch ourselves
		// kafka-go allocates room for BatchSize messages for every partition
		// of every send, however few it carries: at 10,000 that was 1.5 MB a
		// partition, gigabytes a second of garbage under load.
		BatchSize: min(batch, MaxSendBatch),
		// The broker refuses a record batch over message.max.bytes (1 MiB by
		// default) as a whole; the outbox would resend it forever.
		BatchBytes:   writerBatchBytes,
		MaxAttempts:  1, // we retry ourselves, spooling in between
		Compression:  kafka.Snappy,
		WriteTimeout: 5 * time.Second,
		ReadTimeout:  5 * time.Second,
	}}
}

// Send writes msgs as one batch.
func (k *KafkaSender) Send(ctx context.Context, msgs []Message) error {
	kms := make([]kafka.Message, len(msgs))
	for i, m := range msgs {
		kms[i] = kafka.Message{Topic: m.Topic, Key: m.Key, Value: m.Value}
	}
	err := k.W.WriteMessages(ctx, kms...)
	var werr kafka.WriteErrors
	if errors.As(err, &werr) && werr.Count() == 0 {
		return nil
	}
	return err
}

// Close closes the writer.
func (k *KafkaSender) Close() error { return k.W.Close() }

// Tally sums the Stats of running producers for metrics, and keeps the
// counts of those that stopped: a counter must never go back, and a config
// reload (other brokers, another spool) stops one producer and starts
// another. The zero value is ready to use.
type Tally struct {
	mu      sync.Mutex
	running map[*Producer]struct{}
	retired Stats
}

// Add counts p from now on.
func (t *Tally) Add(p *Producer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.running == nil {
		t.running = map[*Producer]struct{}{}
	}
	t.running[p] = struct{}{}
}

// Remove stops counting p, keeping its counters (not its gauges).
func (t *Tally) Remove(p *Producer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.running[p]; !ok {
		return
	}
	delete(t.running, p)
	st := p.Stats()
	t.retired.Enqueued += st.Enqueued
	t.retired.Sent += st.Sent
	t.retired.Spooled += st.Spooled
	t.retired.Dropped += st.Dropped
}

// Stats is the sum: the counters of every producer ever added, the gauges
// of those running.
func (t *Tally) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	sum := t.retired
	for p := range t.running {
		st := p.Stats()
		sum.Enqueued += st.Enqueued
		sum.Sent += st.Sent
		sum.Spooled += st.Spooled
		sum.Dropped += st.Dropped
		sum.SpoolBytes += st.SpoolBytes
		sum.Memory += st.Memory
	}
	return sum
}
