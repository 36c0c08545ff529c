package ratelimit

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the handler's Prometheus series. The collectors live for the
// process and are registered into each config's registry, so counts
// survive config reloads (as the other modules' and the reverse proxy's do).
type metrics struct {
	decisions   *prometheus.CounterVec
	consumed    *prometheus.CounterVec
	redisErrors prometheus.Counter
}

const metricsNamespace, metricsSubsystem = "caddy", "gatehouse"

var processMetrics = sync.OnceValue(func() *metrics {
	return &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name: "ratelimit_decisions_total",
			Help: "Rate limit and quota decisions by policy. outcome is allowed (the request was admitted), " +
				"limited (this policy refused it) or error (Redis was unavailable).",
		}, []string{"policy", "outcome"}),
		consumed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name: "quota_consumed_total",
			Help: "Requests counted against a quota.",
		}, []string{"policy"}),
		redisErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name: "ratelimit_redis_errors_total",
			Help: "Requests whose limits could not be checked because Redis failed or timed out.",
		}),
	}
})

func newMetrics(reg *prometheus.Registry) *metrics {
	m := *processMetrics()
	if reg == nil {
		return &m
	}
	m.decisions = register(reg, m.decisions)
	m.consumed = register(reg, m.consumed)
	m.redisErrors = register(reg, m.redisErrors)
	return &m
}

// register adds c to reg, or returns the equal collector already there.
func register[C prometheus.Collector](reg *prometheus.Registry, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		// Only a programming error (a clashing descriptor) gets here; an
		// unregistered collector still counts, it is just not exported.
	}
	return c
}
