package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/gatehouse/gatehouse/internal/kafkabatch"
	"github.com/gatehouse/gatehouse/internal/pgerr"
	"github.com/gatehouse/gatehouse/internal/wire"
)

// DefaultGroupID is the ingester's Kafka consumer group.
const DefaultGroupID = "controlplane-events"

// WorkerConfig wires the ingester.
type WorkerConfig struct {
	Brokers []string
	// Topic is consumed; wire.TopicEvents when empty.
	Topic string
	// GroupID is the consumer group; DefaultGroupID when empty. Instances
	// in one group share the partitions.
	GroupID string
	DB      Execer
	// BatchSize is the most events per insert; 500 when zero.
	BatchSize int
	// BatchWait is how long a batch waits to fill once it has one event;
	// 50 ms when zero.
	BatchWait time.Duration
	// RetryEvery is the pause after a failed insert; 1 s when zero.
	RetryEvery time.Duration
	Logger     *zap.Logger
	// Registerer receives the ingester's metrics; nil registers none.
	Registerer prometheus.Registerer
}

// WorkerStats are the ingester's counters.
type WorkerStats struct {
	// Consumed counts messages read from Kafka.
	Consumed uint64
	// Inserted counts rows added to events.
	Inserted uint64
	// Malformed counts messages skipped because they are not valid events.
	Malformed uint64
}

// Worker writes the events topic into the events table.
type Worker struct {
	cfg WorkerConfig
	log *zap.Logger

	consumed, inserted, malformed counter
}

// counter is a metric that Stats can also read.
type counter struct {
	n atomic.Uint64
	c prometheus.Counter
}

func (c *counter) add(n int) {
	c.n.Add(uint64(n))
	c.c.Add(float64(n))
}

// NewWorker returns an ingester; call Run.
func NewWorker(cfg WorkerConfig) (*Worker, error) {
	if len(cfg.Brokers) == 0 || cfg.DB == nil {
		return nil, errors.New("events worker: brokers and a database are required")
	}
	if cfg.Topic == "" {
		cfg.Topic = wire.TopicEvents
	}
	if cfg.GroupID == "" {
		cfg.GroupID = DefaultGroupID
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 500
	}
	if cfg.BatchWait <= 0 {
		cfg.BatchWait = 50 * time.Millisecond
	}
	if cfg.RetryEvery <= 0 {
		cfg.RetryEvery = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	w := &Worker{cfg: cfg, log: cfg.Logger}
	w.consumed.c = prometheus.NewCounter(prometheus.CounterOpts{Name: "gatehouse_events_ingest_consumed_total",
		Help: "Messages read from the events topic by the control plane's event ingester."})
	w.inserted.c = prometheus.NewCounter(prometheus.CounterOpts{Name: "gatehouse_events_ingest_inserted_total",
		Help: "Events written to Postgres by the ingester (duplicates excluded)."})
	w.malformed.c = prometheus.NewCounter(prometheus.CounterOpts{Name: "gatehouse_events_ingest_malformed_total",
		Help: "Messages on the events topic skipped because they are not valid events."})
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{w.consumed.c, w.inserted.c, w.malformed.c} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("registering events worker metrics: %w", err)
			}
		}
	}
	return w, nil
}

// Stats returns the counters.
func (w *Worker) Stats() WorkerStats {
	return WorkerStats{Consumed: w.consumed.n.Load(), Inserted: w.inserted.n.Load(), Malformed: w.malformed.n.Load()}
}

// Run consumes until ctx ends. Each batch is inserted and committed to
// Postgres before its offsets are committed to Kafka, so a crash at any
// point re-reads, and re-inserts as no-ops, at most the batch in flight.
func (w *Worker) Run(ctx context.Context) error {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:       w.cfg.Brokers,
		GroupID:       w.cfg.GroupID,
		Topic:         w.cfg.Topic,
		MaxBytes:      16 << 20,
		QueueCapacity: kafkabatch.QueueCapacity,
		MaxWait:       250 * time.Millisecond,
		StartOffset:   kafka.FirstOffset, // a new group reads what came before it
		// CommitInterval 0: CommitMessages commits synchronously.
		Logger:      kafka.LoggerFunc(func(string, ...any) {}),
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) { w.log.Sugar().Warnf("kafka: "+msg, args...) }),
	})
	defer r.Close()
	w.log.Info("event ingester started", zap.String("topic", w.cfg.Topic), zap.String("group", w.cfg.GroupID))
	for {
		batch, err := kafkabatch.Fetch(ctx, r, w.cfg.BatchSize, w.cfg.BatchWait)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			w.log.Warn("reading events; retrying", zap.String("topic", w.cfg.Topic), zap.Error(err))
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(w.cfg.RetryEvery):
			}
			continue
		}
		if err := w.store(ctx, batch); err != nil {
			return nil // only when ctx ended
		}
		if err := r.CommitMessages(ctx, batch...); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// After a rebalance the new owner re-reads these; the inserts
			// are idempotent and later commits cover earlier offsets.
			w.log.Warn("committing event offsets", zap.Error(err))
		}
	}
}

// store inserts the batch's valid events, retrying until Postgres takes
// them or ctx ends (the only error it returns).
func (w *Worker) store(ctx context.Context, batch []kafka.Message) error {
	w.consumed.add(len(batch))
	evs := make([]wire.Event, 0, len(batch))
	for _, m := range batch {
		var e wire.Event
		err := json.Unmarshal(m.Value, &e)
		if err == nil {
			err = Validate(e)
		}
		if err != nil {
			w.skip(m, err)
			continue
		}
		evs = append(evs, e)
	}
	for {
		n, err := w.insert(ctx, evs)
		if err == nil {
			w.inserted.add(int(n))
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		w.log.Error("inserting events; retrying", zap.Error(err), zap.Int("events", len(evs)))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(w.cfg.RetryEvery):
		}
	}
}

// insert writes evs in one statement. Should Postgres still refuse a value
// Validate let through (a data or integrity error), it falls back to one
// statement per event so that only the offending event is skipped, not the
// batch, and the partition does not stall on it.
func (w *Worker) insert(ctx context.Context, evs []wire.Event) (int64, error) {
	n, err := Insert(ctx, w.cfg.DB, evs...)
	if err == nil || !pgerr.BadValue(err) {
		return n, err
	}
	n = 0
	for _, e := range evs {
		k, err := Insert(ctx, w.cfg.DB, e)
		if err != nil {
			if !pgerr.BadValue(err) {
				return n, err
			}
			w.malformed.add(1)
			w.log.Warn("skipping event Postgres refused", zap.String("event_id", e.ID), zap.Error(err))
			continue
		}
		n += k
	}
	return n, nil
}

func (w *Worker) skip(m kafka.Message, err error) {
	w.malformed.add(1)
	w.log.Warn("skipping malformed event message", zap.Int("partition", m.Partition),
		zap.Int64("offset", m.Offset), zap.Error(err))
}
