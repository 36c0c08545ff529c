package deliverer

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the worker's Prometheus series. Labels have bounded values
// only: never an endpoint or organisation id.
type metrics struct {
	consumed       prometheus.Counter
	malformed      prometheus.Counter
	fannedOut      prometheus.Counter
	fastPath       prometheus.Counter
	attempts       *prometheus.CounterVec   // by result
	deliveries     *prometheus.CounterVec   // final outcomes: succeeded, dead
	attemptLatency *prometheus.HistogramVec // by result
	firstAttempt   prometheus.Histogram
	leaseLost      prometheus.Counter
	polls          prometheus.Counter
	deadLetters    prometheus.Counter
	disabled       *prometheus.CounterVec // by reason
	alerts         *prometheus.CounterVec // by kind
	inflight       prometheus.GaugeFunc
	held           prometheus.GaugeFunc
	due            prometheus.Gauge
	oldestDue      prometheus.Gauge
	failing        prometheus.Gauge
	kafkaLag       prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, d *dispatcher) (*metrics, error) {
	const ns, sub = "gatehouse", "deliverer"
	m := &metrics{
		consumed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "events_consumed_total",
			Help: "Messages read from the events topic."}),
		malformed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "events_malformed_total",
			Help: "Messages on the events topic skipped because they are not valid events."}),
		fannedOut: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "deliveries_created_total",
			Help: "Deliveries created by fan-out (one per event and matching endpoint)."}),
		fastPath: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "deliveries_fast_path_total",
			Help: "New deliveries handed straight from fan-out to the workers, without waiting for the poller."}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "attempts_total",
			Help: "Delivery attempts by result: success, http_error, redirect, gone, timeout, network_error, refused (SSRF guard), no_secret, no_event, payload."},
			[]string{"result"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "deliveries_total",
			Help: "Deliveries reaching an outcome: succeeded, retrying (failed, another attempt scheduled), dead, parked (endpoint disabled), postponed (signing secrets unreadable, no attempt made)."},
			[]string{"outcome"}),
		attemptLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "attempt_duration_seconds",
			Help:    "Duration of delivery attempts, from request start to response read.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15, 30}}, []string{"result"}),
		firstAttempt: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "event_to_first_attempt_seconds",
			Help:    "From the event's Kafka timestamp to the start of its first delivery attempt (fast path only).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}}),
		leaseLost: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "leases_lost_total",
			Help: "Attempt results not applied because the delivery's lease had passed to another holder."}),
		polls: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "polls_total",
			Help: "Claims of due deliveries the poller has run (a count that stops growing means a stuck poller)."}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "dead_letters_total",
			Help: "Messages enqueued to the dead-letter topic."}),
		disabled: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "endpoints_disabled_total",
			Help: "Endpoints disabled by the deliverer, by reason: gone (410), failing (continuously failing too long)."}, []string{"reason"}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "alerts_total",
			Help: "Alerts raised, by kind."}, []string{"kind"}),
		inflight: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "attempts_in_flight",
			Help: "HTTP attempts running now."}, func() float64 { _, n := d.stats(); return float64(n) }),
		held: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "deliveries_held",
			Help: "Deliveries this process holds a lease on (queued, in flight, or result being written)."},
			func() float64 { n, _ := d.stats(); return float64(n) }),
		due: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "due_deliveries",
			Help: "Deliveries due for an attempt that no deliverer holds (queue lag), sampled."}),
		oldestDue: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "oldest_due_age_seconds",
			Help: "How long the oldest due, unheld delivery has been due (0 when none), sampled."}),
		failing: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "failing_endpoints",
			Help: "Enabled endpoints whose latest attempts failed (failing_since set), sampled."}),
		kafkaLag: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "kafka_lag_messages",
			Help: "Messages of the events topic the deliverers' consumer group has not committed yet (all partitions; the same in every instance), read from Kafka every StatsEvery."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.consumed, m.malformed, m.fannedOut, m.fastPath, m.attempts, m.deliveries,
			m.attemptLatency, m.firstAttempt, m.leaseLost, m.polls, m.deadLetters, m.disabled, m.alerts, m.inflight, m.held,
			m.due, m.oldestDue, m.failing, m.kafkaLag} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
