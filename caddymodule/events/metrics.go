package events

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/internal/outbox"
)

// Why a matching request produced no event.
const (
	reasonReplayed   = "replayed"    // an idempotent replay; the original produced it
	reasonTooLarge   = "too_large"   // body over max_response_size
	reasonNotJSON    = "not_json"    // body empty or not a JSON object
	reasonNotStored  = "unstorable"  // JSON the platform cannot store: NUL, bad UTF-8, huge numbers
	reasonEncoding   = "encoding"    // compressed with something other than gzip
	reasonNoIdentity = "no_identity" // no api_key organisation: a misordered Caddyfile
)

// outboxes are the producers the metrics count (outbox.Tally: counts of
// producers a reload stopped stay in).
var outboxes outbox.Tally

func outboxStats() outbox.Stats { return outboxes.Stats() }

// The collectors live for the process and are registered into each config's
// registry, so counts survive config reloads (the reverse proxy's pattern).
var metrics = struct {
	once    sync.Once
	emitted *prometheus.CounterVec
	skipped *prometheus.CounterVec
	outbox  []prometheus.Collector
}{}

func registerMetrics(reg *prometheus.Registry) error {
	const ns, sub = "caddy", "gatehouse_events"
	metrics.once.Do(func() {
		metrics.emitted = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "emitted_total",
			Help: "Events queued for Kafka by emit_events, by event type.",
		}, []string{"type"})
		metrics.skipped = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "skipped_total",
			Help: "Responses a rule matched that produced no event, by reason.",
		}, []string{"reason"})
		// Pre-create every series so dashboards see zeros, not gaps.
		for _, r := range []string{reasonReplayed, reasonTooLarge, reasonNotJSON, reasonNotStored, reasonEncoding, reasonNoIdentity} {
			metrics.skipped.WithLabelValues(r)
		}
		// The outbox: events queued but not yet in Kafka, and the ones
		// lost because the spool was full.
		metrics.outbox = []prometheus.Collector{
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "spool_bytes",
				Help: "Bytes of events waiting in the on-disk spool for Kafka."},
				func() float64 { return float64(outboxStats().SpoolBytes) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "spooled_total",
				Help: "Events written to the on-disk spool because Kafka was slow or down (since the gateway started)."},
				func() float64 { return float64(outboxStats().Spooled) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "dropped_total",
				Help: "Events lost because the spool was full (since the gateway started)."},
				func() float64 { return float64(outboxStats().Dropped) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "sent_total",
				Help: "Events Kafka acknowledged (since the gateway started)."},
				func() float64 { return float64(outboxStats().Sent) }),
		}
	})
	if reg == nil {
		return nil
	}
	for _, c := range append([]prometheus.Collector{metrics.emitted, metrics.skipped}, metrics.outbox...) {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return err
			}
		}
	}
	return nil
}

func skipped(reason string) { metrics.skipped.WithLabelValues(reason).Inc() }
