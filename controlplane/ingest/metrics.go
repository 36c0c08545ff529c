package ingest

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	rows, duplicates, errors             prometheus.Counter
	skipped                              *prometheus.CounterVec
	batchSeconds                         prometheus.Histogram
	lag                                  prometheus.Gauge
	partitionsCreated, partitionsDropped prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "gatehouse", "request_log_ingest"
	m := &metrics{
		rows: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "rows_total",
			Help: "Request logs stored."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "duplicates_total",
			Help: "Redelivered request logs that were already stored and were skipped."}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "batch_errors_total",
			Help: "Batches that failed to store and were retried."}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "skipped_total",
			Help: "Messages not stored, by reason: malformed, expired (older than retention), future, refused (by Postgres)."},
			[]string{"reason"}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "batch_duration_seconds",
			Help:    "Time to decode and durably store one batch.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "consumer_lag",
			Help: "Messages of the topic the consumer group has not stored yet (end offsets less committed ones, all partitions; the same in every replica), read from Kafka every 10 s."}),
		partitionsCreated: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "partitions_created_total",
			Help: "Daily request_logs partitions created."}),
		partitionsDropped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "partitions_dropped_total",
			Help: "Daily request_logs partitions dropped by retention."}),
	}
	for _, r := range []string{"malformed", "expired", "future", "refused"} {
		m.skipped.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.rows, m.duplicates, m.errors, m.skipped, m.batchSeconds, m.lag,
		m.partitionsCreated, m.partitionsDropped} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, errors.New("request log ingester: metrics already registered; one worker per registry")
			}
			return nil, err
		}
	}
	return m, nil
}
