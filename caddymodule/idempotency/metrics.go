package idempotency

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/caddymodule/internal/errorobject"
)

// Outcomes of a keyed request; each one counts exactly one.
const (
	outcomeExecuted    = "executed"    // locked the key and ran the upstream
	outcomeReplayed    = "replayed"    // answered with the recorded response
	outcomeInUse       = "in_use"      // 409: the first request is still running
	outcomeReused      = "reused"      // 422: same key, different request
	outcomeTooLarge    = "too_large"   // 422: the original response was not stored
	outcomeNoStore     = "no_store"    // 422: the original response said no-store
	outcomeUnavailable = "unavailable" // 503: Redis could not be asked
	outcomeInvalid     = "invalid"     // 400/413: bad key or body, refused before Redis
)

// Results of recording an executed request's outcome.
const (
	recordStored       = "stored"        // the response is recorded for replay
	recordTooLarge     = "too_large"     // marked too_large (oversized or streamed)
	recordNoStore      = "no_store"      // marked no_store: the response said Cache-Control: no-store
	recordGatewayError = "gateway_error" // the upstream may have run but gave no usable answer; the error is recorded
	recordReleased     = "released"      // the upstream was never reached; the lock was released
	recordRefused      = "refused"       // the upstream refused it (429, 503 with Retry-After); not recorded, the lock was released
	recordLockLost     = "lock_lost"     // the lock expired before completion; nothing written
	recordRedisError   = "redis_error"   // Redis failed; the lock will expire
)

// recordResults are every result of records_total.
var recordResults = []string{recordStored, recordTooLarge, recordNoStore, recordGatewayError, recordReleased,
	recordRefused, recordLockLost, recordRedisError}

// The collectors live for the process and are registered into each config's
// registry, so counts survive config reloads (the reverse proxy's pattern).
var metrics = struct {
	once     sync.Once
	requests *prometheus.CounterVec
	records  *prometheus.CounterVec
}{}

func registerMetrics(reg *prometheus.Registry) error {
	const ns, sub = "caddy", "gatehouse_idempotency"
	metrics.once.Do(func() {
		metrics.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "total",
			Help: "Requests carrying an Idempotency-Key, by outcome.",
		}, []string{"outcome"})
		metrics.records = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "records_total",
			Help: "Results of recording the outcome of an executed keyed request.",
		}, []string{"result"})
		// Pre-create every series so dashboards see zeros, not gaps.
		for _, o := range []string{outcomeExecuted, outcomeReplayed, outcomeInUse, outcomeReused,
			outcomeTooLarge, outcomeNoStore, outcomeUnavailable, outcomeInvalid} {
			metrics.requests.WithLabelValues(o)
		}
		for _, r := range recordResults {
			metrics.records.WithLabelValues(r)
		}
	})
	// This handler writes the gateway-error object itself (see gatewayError).
	if err := errorobject.RegisterMetrics(reg); err != nil {
		return err
	}
	return errorobject.Register(reg, metrics.requests, metrics.records)
}
