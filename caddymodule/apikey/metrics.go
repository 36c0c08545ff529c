package apikey

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/caddymodule/internal/errorobject"
)

// Metrics are process-wide: key stores outlive config loads, and Caddy makes
// a new registry per load, so the collectors are registered into each one.
var (
	authResults = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "gatehouse", Name: "auth_requests_total",
		Help: "API key authentications by result (ok, missing, malformed, invalid, expired, ip_not_allowed, scope_missing, version_invalid, unavailable, throttled: too many unknown keys from one address).",
	}, []string{"result"})
	cacheLookups = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "gatehouse", Name: "key_cache_lookups_total",
		Help: "Key cache lookups by result: hit, stale (served while refreshing or while Postgres is down), negative_hit, miss.",
	}, []string{"result"})
	cacheInvalidations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "gatehouse", Name: "key_cache_invalidations_total",
		Help: "Key cache invalidations: key (one key, by notification) or flush (everything: '*' notification or LISTEN reconnect).",
	}, []string{"kind"})
	storeErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "gatehouse", Name: "key_store_errors_total",
		Help: "Failed key store operations against Postgres, by operation (lookup, refresh, listen, last_used, pin).",
	}, []string{"op"})
	listeners = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "gatehouse", Name: "key_store_listening",
		Help: "Key stores whose LISTEN connection for invalidations is up.",
	})
)

// Pre-resolved children keep label lookups off the hot path.
var (
	authOK, authMissing, authMalformed, authInvalid, authExpired = authResults.WithLabelValues("ok"),
		authResults.WithLabelValues("missing"), authResults.WithLabelValues("malformed"),
		authResults.WithLabelValues("invalid"), authResults.WithLabelValues("expired")
	authIPNotAllowed, authScopeMissing, authVersionInvalid, authUnavailable = authResults.WithLabelValues("ip_not_allowed"),
		authResults.WithLabelValues("scope_missing"), authResults.WithLabelValues("version_invalid"),
		authResults.WithLabelValues("unavailable")
	authThrottled = authResults.WithLabelValues("throttled")

	cacheHit, cacheStale, cacheNegativeHit, cacheMiss = cacheLookups.WithLabelValues("hit"),
		cacheLookups.WithLabelValues("stale"), cacheLookups.WithLabelValues("negative_hit"),
		cacheLookups.WithLabelValues("miss")
)

func registerMetrics(reg *prometheus.Registry) error {
	if err := errorobject.RegisterMetrics(reg); err != nil {
		return err
	}
	return errorobject.Register(reg, authResults, cacheLookups, cacheInvalidations, storeErrors, listeners)
}
