package requestlog

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/caddymodule/internal/errorobject"
)

// The collectors are package-level so that counts carry across config
// reloads; each new config's registry gets them registered again.
var (
	requestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "gatehouse", Name: "requests_total",
		Help: "Requests seen by request_log, by route template and status class (2xx, 4xx, …).",
	}, []string{"route", "status_class"})
	requestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caddy", Subsystem: "gatehouse", Name: "request_duration_seconds",
		Help:    "Time from request_log receiving a request to the end of the response, by route template.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"route"})
	authFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "gatehouse", Name: "auth_failures_total",
		Help: "Requests the gateway itself refused with 401 or 403, by error code.",
	}, []string{"code"})
	rateLimited = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "gatehouse", Name: "rate_limited_total",
		Help: "Requests answered 429 (rate limit or quota).",
	})
	spoolBytes = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "gatehouse", Name: "requestlog_spool_bytes",
		Help: "Bytes of request logs waiting in the on-disk spool for Kafka.",
	}, func() float64 { return float64(outboxStats().SpoolBytes) })
	spooledTotal = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "gatehouse", Name: "requestlog_spooled_total",
		Help: "Request logs written to the on-disk spool because Kafka was slow or down (since the gateway started).",
	}, func() float64 { return float64(outboxStats().Spooled) })
	droppedTotal = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "gatehouse", Name: "requestlog_dropped_total",
		Help: "Request logs dropped because the spool was full (since the gateway started).",
	}, func() float64 { return float64(outboxStats().Dropped) })
	sentTotal = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "gatehouse", Name: "requestlog_sent_total",
		Help: "Request logs Kafka acknowledged (since the gateway started).",
	}, func() float64 { return float64(outboxStats().Sent) })
)

func registerMetrics(reg *prometheus.Registry) error {
	return errorobject.Register(reg, requestsTotal, requestDuration, authFailures, rateLimited,
		spoolBytes, spooledTotal, droppedTotal, sentTotal)
}

var statusClasses = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

func statusClass(status int) string {
	if c := status / 100; c >= 1 && c <= 5 {
		return statusClasses[c-1]
	}
	return strconv.Itoa(status)
}

// routeLabels bounds the route label of the metrics: configured templates
// are always their own label; a derived route gets one from its first
// answer under 400, until maxDerived exist; everything else — every 404,
// and a route answered only with errors so far (a scanner's 401s on made-up
// paths) — is "other". A client cannot grow the label set without limit,
// nor use it up without a key.
type routeLabels struct {
	seen sync.Map // string → struct{}
	n    atomic.Int64
}

const maxDerived = 200

func (l *routeLabels) label(route string, configured bool, status int) string {
	switch {
	case configured:
		return route
	case status == 404 || route == "":
		return "other"
	}
	if _, ok := l.seen.Load(route); ok {
		return route
	}
	if status >= 400 || l.n.Load() >= maxDerived {
		return "other"
	}
	if _, loaded := l.seen.LoadOrStore(route, struct{}{}); !loaded {
		l.n.Add(1)
	}
	return route
}

var derivedRoutes routeLabels
