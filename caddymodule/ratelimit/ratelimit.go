// Package ratelimit is the gateway's rate_limit handler: GCRA rate limits per
// API key, organisation, client IP or route, and request quotas per calendar
// hour, day or month, all kept in Redis so every gateway instance enforces
// the same limits exactly. Every limit of a request is decided — and only
// consumed when all of them allow — in one Redis round trip (see script.go).
// Responses carry the RateLimit-Policy and RateLimit fields of
// draft-ietf-httpapi-ratelimit-headers; refusals are returned as
// *apierror.Error (429 rate_limited or quota_exceeded, with Retry-After) for
// the request_id handler to render as the error object, like every other
// Gatehouse handler's.
//
// Per-organisation and per-key overrides (plans) are written by the control
// plane's limits package into a Redis hash that the same script reads, so
// they apply on the next request.
package ratelimit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/go-redis/redis_rate/v10"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/gatehouse/gatehouse/caddymodule/apikey"
	"github.com/gatehouse/gatehouse/caddymodule/ratelimit/keyspace"
	"github.com/gatehouse/gatehouse/caddymodule/redispool"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/config"
)

func init() {
	caddy.RegisterModule(Handler{})
	httpcaddyfile.RegisterHandlerDirective("rate_limit", parseCaddyfile)
	// rate_limit must run after api_key (its keys are the key's
	// placeholders) and before idempotency, but Caddy only orders plugins
	// relative to standard directives. api_key registers before basic_auth
	// and idempotency before invoke, so "before request_header" (after
	// basic_auth and forward_auth) lands between them whatever the init order.
	httpcaddyfile.RegisterDirectiveOrder("rate_limit", httpcaddyfile.Before, "request_header")
}

// Placeholders the api_key handler sets; limits are partitioned by them.
const (
	phOrg         = apikey.PlaceholderOrgID
	phKeyID       = apikey.PlaceholderKeyID
	phEnvironment = apikey.PlaceholderEnvironment
)

// Placeholders this handler sets for later handlers and log formats.
const (
	// PlaceholderOutcome is "allowed", "limited:<name>" (the limit that
	// refused the request) or "error" (Redis unavailable). Unset when no limit
	// applied.
	PlaceholderOutcome = "http.rate_limit.outcome"
	// PlaceholderPolicy names the limit closest to exhaustion (the one the
	// RateLimit field reports).
	PlaceholderPolicy = "http.rate_limit.policy"
	// PlaceholderRemaining is that limit's remaining quota.
	PlaceholderRemaining = "http.rate_limit.remaining"
)

// Quota periods.
const (
	PeriodMonth = keyspace.PeriodMonth
	PeriodDay   = keyspace.PeriodDay
	PeriodHour  = keyspace.PeriodHour
)

// Defaults.
const (
	DefaultTimeout      = 500 * time.Millisecond
	DefaultWarnInterval = 10 * time.Second
	// MinTimeout is the shortest timeout accepted: the Redis batcher does
	// not send a call with less than 1 ms left.
	MinTimeout = 10 * time.Millisecond
)

// Handler enforces rate limits and quotas. Policies and quotas whose key
// resolves empty (for example per-key limits on a route without
// authentication) or whose matchers do not match are skipped for the request.
type Handler struct {
	// Redis is the URL of the Redis server that holds limit state, e.g.
	// "redis://127.0.0.1:6379/0". Placeholders such as {env.REDIS_URL} are
	// expanded at load. Default: the REDIS_URL environment variable, else
	// redis://127.0.0.1:6379/0.
	Redis string `json:"redis,omitempty"`

	// FailClosed refuses requests with 503 api_error while Redis cannot be
	// reached. Default false: requests pass unchecked ("fail open"), a metric
	// counts them and a warning is logged at most once per WarnInterval.
	FailClosed bool `json:"fail_closed,omitempty"`

	// Timeout bounds the Redis round trip of one request, including waiting
	// for a pooled connection. Default 500ms; the shared client's own dial
	// (250ms) and read/write (100ms) timeouts usually end it sooner.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// WarnInterval is the least time between two warnings about Redis
	// failures. Default 10s.
	WarnInterval caddy.Duration `json:"warn_interval,omitempty"`

	// KeyPrefix starts every Redis key. Default: RATE_LIMIT_KEY_PREFIX, else
	// "gatehouse:". The control plane writes overrides under the prefix that
	// variable gives it: set the variable for both rather than this.
	KeyPrefix string `json:"key_prefix,omitempty"`

	// Policies are GCRA rate limits, evaluated in order.
	Policies []*Policy `json:"policies,omitempty"`

	// Quotas are request counts per calendar period (UTC).
	Quotas []*Quota `json:"quotas,omitempty"`

	redisURL string
	rdb      redispool.Client
	limits   []*limit
	metrics  *metrics
	logger   *zap.Logger
	// now is nil in production: the script then reads Redis TIME, so every
	// instance shares one clock. Tests inject a clock (see testClock).
	now  func() time.Time
	warn *warner
	// publishQuotas starts publishing the quotas for the dashboard on the
	// first request: a configuration only validated, or loaded by a test
	// that serves nothing, does not announce quotas that do not run.
	publishQuotas *sync.Once
	ctx           context.Context // the configuration's; done when it is unloaded
}

// warner rate-limits the warning about Redis failures.
type warner struct {
	lastWarn atomic.Int64 // unix nanoseconds of the last warning
	failures atomic.Int64 // Redis failures since the last warning
}

// Policy is a GCRA rate limit: Rate.Requests per Rate.Period on average,
// with up to Rate.Burst requests at once.
type Policy struct {
	// Name identifies the policy in headers, error messages, metrics, Redis
	// keys and control-plane overrides. Letters, digits, '.', '_' and '-'.
	Name string `json:"name"`

	// Key is the partition: a template of placeholders, e.g.
	// "{http.auth.api_key.key_id}" or "{http.vars.client_ip}". Each distinct
	// value gets its own limit. The policy is skipped when any placeholder in
	// it is empty or unknown at run time (a per-key limit before
	// authentication); a name that can never be set — a Caddyfile shorthand
	// in JSON, a name under http.auth.api_key. that api_key does not set — is
	// refused at load. State is also kept apart per environment and
	// per organisation (the Redis Cluster hash tag of the request), so a
	// per-IP policy counts an address per organisation for authenticated
	// requests and on its own for unauthenticated ones.
	Key string `json:"key"`

	// Rate applies to live keys and to unauthenticated requests.
	Rate Rate `json:"rate"`

	// SandboxRate applies to sandbox keys. Default: Rate.
	SandboxRate *Rate `json:"sandbox_rate,omitempty"`

	// MatchRaw restricts the policy to requests matching any of these
	// matcher sets (a per-route limit). Default: every request.
	MatchRaw caddyhttp.RawMatcherSets `json:"match,omitempty" caddy:"namespace=http.matchers"`

	match caddyhttp.MatcherSets
}

// Rate is the size of a GCRA limit.
type Rate struct {
	// Requests is the sustained number of requests per Period. Required,
	// positive.
	Requests int `json:"requests"`

	// Period is the window of Requests, a whole number of seconds (the
	// RateLimit headers cannot express less). Default 1s.
	Period caddy.Duration `json:"period,omitempty"`

	// Burst is how many requests may arrive at once. Default Requests.
	Burst int `json:"burst,omitempty"`
}

// Quota is a number of requests per calendar period (UTC), for example a
// plan's monthly allowance. It resets at the period boundary.
type Quota struct {
	// Name identifies the quota like a policy name; names are unique across
	// policies and quotas.
	Name string `json:"name"`

	// Key is the partition template, as for policies; typically the
	// organisation or the API key.
	Key string `json:"key"`

	// Limit is the number of requests per period for live keys and
	// unauthenticated requests. Required, positive.
	Limit int64 `json:"limit"`

	// SandboxLimit is the limit for sandbox keys. Default: Limit.
	SandboxLimit int64 `json:"sandbox_limit,omitempty"`

	// Period is "month" (calendar month, the default), "day" or "hour", in UTC.
	Period string `json:"period,omitempty"`

	// MatchRaw restricts the quota to matching requests. Default: every request.
	MatchRaw caddyhttp.RawMatcherSets `json:"match,omitempty" caddy:"namespace=http.matchers"`

	match caddyhttp.MatcherSets
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.rate_limit",
		New: func() caddy.Module { return new(Handler) },
	}
}

// environments index limit.args and friends.
const (
	live = iota
	sandbox
)

// limit is a provisioned policy or quota.
type limit struct {
	name   string
	quota  bool
	key    string
	period string // quotas: month, day or hour
	match  caddyhttp.MatcherSets
	// args is this limit's part of the script's ARGV, per environment,
	// formatted once so a request only appends them.
	args [2][5]any

	allowed, limited, errored, consumed prometheus.Counter
}

// testClock, when set (by tests only) before a config loads, is injected
// into every handler provisioned, and the script takes its time from it
// instead of Redis TIME so windows can be tested without sleeping.
var testClock func() time.Time

// Provision sets defaults, loads matchers and acquires the shared Redis client.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.now = testClock
	h.warn = new(warner)
	if h.Timeout == 0 {
		h.Timeout = caddy.Duration(DefaultTimeout)
	}
	if h.WarnInterval == 0 {
		h.WarnInterval = caddy.Duration(DefaultWarnInterval)
	}
	if h.KeyPrefix == "" {
		h.KeyPrefix = config.String(keyspace.PrefixVariable, keyspace.DefaultPrefix)
	}
	h.metrics = newMetrics(ctx.GetMetricsRegistry())

	// Refused before the matchers load: a null entry would panic, and
	// loading clears MatchRaw, which Validate could then no longer check.
	for i, p := range h.Policies {
		if p == nil {
			return fmt.Errorf("rate_limit: policy %d is null", i+1)
		}
		if err := checkMatch(p.MatchRaw); err != nil {
			return fmt.Errorf("policy %s: match: %w", p.Name, err)
		}
	}
	for i, q := range h.Quotas {
		if q == nil {
			return fmt.Errorf("rate_limit: quota %d is null", i+1)
		}
		if err := checkMatch(q.MatchRaw); err != nil {
			return fmt.Errorf("quota %s: match: %w", q.Name, err)
		}
	}
	for _, p := range h.Policies {
		mods, err := ctx.LoadModule(p, "MatchRaw")
		if err != nil {
			return fmt.Errorf("policy %s: loading matchers: %w", p.Name, err)
		}
		if err := p.match.FromInterface(mods); err != nil {
			return fmt.Errorf("policy %s: %w", p.Name, err)
		}
		liveRate := p.Rate.Limit()
		sandboxRate := liveRate
		if p.SandboxRate != nil {
			sandboxRate = p.SandboxRate.Limit()
		}
		l := &limit{name: p.Name, key: p.Key, match: p.match}
		l.args[live] = rateArgs(p.Name, p.Key, liveRate)
		l.args[sandbox] = rateArgs(p.Name, p.Key, sandboxRate)
		h.limits = append(h.limits, l)
	}
	for _, q := range h.Quotas {
		mods, err := ctx.LoadModule(q, "MatchRaw")
		if err != nil {
			return fmt.Errorf("quota %s: loading matchers: %w", q.Name, err)
		}
		if err := q.match.FromInterface(mods); err != nil {
			return fmt.Errorf("quota %s: %w", q.Name, err)
		}
		if q.Period == "" {
			q.Period = PeriodMonth
		}
		l := &limit{name: q.Name, quota: true, key: q.Key, period: q.Period, match: q.match}
		l.args[live] = quotaArgs(q.Name, q.Limit, q.Period)
		l.args[sandbox] = quotaArgs(q.Name, q.sandboxLimit(), q.Period)
		h.limits = append(h.limits, l)
	}
	for _, l := range h.limits {
		l.allowed = h.metrics.decisions.WithLabelValues(l.name, "allowed")
		l.limited = h.metrics.decisions.WithLabelValues(l.name, "limited")
		l.errored = h.metrics.decisions.WithLabelValues(l.name, "error")
		if l.quota {
			l.consumed = h.metrics.consumed.WithLabelValues(l.name)
		}
	}

	h.redisURL = caddy.NewReplacer().ReplaceAll(h.Redis, "")
	if h.redisURL == "" {
		h.redisURL = config.String("REDIS_URL", config.DefaultRedisURL)
	}
	rdb, err := redispool.Get(h.redisURL)
	if err != nil {
		return err
	}
	h.rdb = rdb
	h.ctx, h.publishQuotas = ctx, new(sync.Once)
	return nil
}

// sandboxLimit is the quota's limit for sandbox keys.
func (q *Quota) sandboxLimit() int64 {
	if q.SandboxLimit == 0 {
		return q.Limit
	}
	return q.SandboxLimit
}

// quotaSpecs describes the configured quotas for the dashboard.
func (h *Handler) quotaSpecs() []keyspace.QuotaSpec {
	var specs []keyspace.QuotaSpec
	for _, q := range h.Quotas {
		spec := keyspace.QuotaSpec{Name: q.Name, Live: q.Limit, Sandbox: q.sandboxLimit(), Period: q.Period,
			Per: keyspace.PerOther, Matched: len(q.match) > 0}
		switch q.Key {
		case "{" + phOrg + "}":
			spec.Per = keyspace.PerOrganization
		case "{" + phKeyID + "}":
			spec.Per = keyspace.PerAPIKey
		}
		specs = append(specs, spec)
	}
	return specs
}

// publish keeps specs in keyspace.Published, and the names of the
// handler's policies and quotas in keyspace.PublishedNames, from the
// handler's first request until the configuration is unloaded,
// republishing every keyspace.PublishEvery; the hashes expire when no
// gateway has published for keyspace.StaleAfter. A failure waits for the
// next turn; the request path already reports an unreachable Redis.
func (h *Handler) publish(ctx context.Context, specs []keyspace.QuotaSpec) {
	t := time.NewTicker(keyspace.PublishEvery)
	defer t.Stop()
	for {
		args := make([]any, 0, 2*len(specs))
		names := make([]any, 0, 2*len(h.limits))
		now := time.Now()
		for _, q := range specs {
			q.PublishedAt = now
			b, err := json.Marshal(q)
			if err != nil {
				panic(err) // plain strings, numbers and a time
			}
			args = append(args, q.Name, b)
		}
		for _, l := range h.limits {
			names = append(names, l.name, now.Unix())
		}
		pctx, cancel := context.WithTimeout(ctx, time.Duration(h.Timeout))
		_, err := h.rdb.TxPipelined(pctx, func(p redis.Pipeliner) error {
			for key, fields := range map[string][]any{keyspace.Published(h.KeyPrefix): args, keyspace.PublishedNames(h.KeyPrefix): names} {
				if len(fields) > 0 {
					p.HSet(pctx, key, fields...)
					p.Expire(pctx, key, keyspace.StaleAfter)
				}
			}
			return nil
		})
		cancel()
		if err != nil && ctx.Err() == nil {
			h.logger.Debug("publishing quotas for the dashboard failed; retrying later", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Limit is r with its defaults, as redis_rate describes a GCRA limit.
func (r Rate) Limit() redis_rate.Limit {
	l := redis_rate.Limit{Rate: r.Requests, Burst: r.Burst, Period: time.Duration(r.Period)}
	if l.Period == 0 {
		l.Period = time.Second
	}
	if l.Burst == 0 {
		l.Burst = l.Rate
	}
	return l
}

func rateArgs(name, key string, l redis_rate.Limit) [5]any {
	return [5]any{kind(key), name, strconv.Itoa(l.Rate), strconv.FormatInt(l.Period.Microseconds(), 10), strconv.Itoa(l.Burst)}
}

// quotaArgs is "Q": a key's own override applies to every quota, a quota
// counted per organisation included (the key's requests are checked
// against its own limit on the shared count, as the dashboard's meter says).
func quotaArgs(name string, n int64, period string) [5]any {
	return [5]any{"Q", name, strconv.FormatInt(n, 10), period[:1], "0"}
}

// kind is the script's letter for a GCRA policy: "R" when its key template
// counts per API key, so that a key's own override applies to it; "r" for
// one the organisation's keys share (per-org, per-ip), where only the
// organisation's override applies: two keys with different parameters on
// one state let bursts through.
func kind(key string) string {
	if strings.Contains(key, "{"+phKeyID+"}") {
		return "R"
	}
	return "r"
}

// Validate checks the configuration; the Caddyfile parser runs the same
// checks so mistakes are reported with their line.
func (h *Handler) Validate() error {
	if len(h.Policies)+len(h.Quotas) == 0 {
		return errors.New("rate_limit: no policy or quota configured")
	}
	if err := keyspace.ValidPrefix(h.KeyPrefix); err != nil {
		return fmt.Errorf("rate_limit: %w", err)
	}
	if h.Timeout < 0 || h.WarnInterval < 0 {
		return errors.New("rate_limit: timeout and warn_interval must not be negative")
	}
	if h.Timeout != 0 && time.Duration(h.Timeout) < MinTimeout {
		return fmt.Errorf("rate_limit: timeout %s is under %s: no Redis call would be sent in time, and every request would fail open or closed", time.Duration(h.Timeout), MinTimeout)
	}
	seen := map[string]bool{}
	for _, p := range h.Policies {
		if err := p.validate(); err != nil {
			return fmt.Errorf("rate_limit: %w", err)
		}
		if seen[p.Name] {
			return fmt.Errorf("rate_limit: duplicate policy or quota name %q", p.Name)
		}
		seen[p.Name] = true
	}
	for _, q := range h.Quotas {
		if err := q.validate(); err != nil {
			return fmt.Errorf("rate_limit: %w", err)
		}
		if seen[q.Name] {
			return fmt.Errorf("rate_limit: duplicate policy or quota name %q", q.Name)
		}
		seen[q.Name] = true
	}
	return nil
}

func validName(kind, name string) error {
	if !keyspace.ValidName(name) {
		return fmt.Errorf("%s name %q: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", kind, name)
	}
	return nil
}

// checkKey refuses a limit's key naming a placeholder that can never be
// set: a limit whose key is empty at run time does not apply (as a per-key
// limit before authentication), so such a typo would turn it off without a
// word. Caught: a name under http.auth.api_key. that api_key does not set,
// a Caddyfile shorthand ({client_ip}) in JSON, which only the Caddyfile
// adapter expands, and a { never closed, which makes the key one text for
// every request.
func checkKey(key string) error {
	for rest := key; ; {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			return nil
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			// Caddy would take it literally: every request would share
			// the limit.
			return fmt.Errorf("key: %q opens a placeholder with { that is never closed", key)
		}
		name := rest[open+1 : open+end]
		rest = rest[open+end+1:]
		first, _, _ := strings.Cut(name, ".")
		switch {
		case !strings.Contains(name, ".") || !slices.Contains(placeholderRoots, first):
			return fmt.Errorf("key: {%s} is no placeholder (Caddyfile shorthands such as {client_ip} are expanded only in a Caddyfile; in JSON write the full name, e.g. {http.vars.client_ip})", name)
		case strings.HasPrefix(name, "http.auth.api_key.") && !slices.Contains(apikey.Placeholders, name):
			return fmt.Errorf("key: api_key sets no placeholder {%s}; it sets %s", name, strings.Join(apikey.Placeholders, ", "))
		}
	}
}

// placeholderRoots are the first parts of the placeholders a key can use
// (the request's and Caddy's global ones).
var placeholderRoots = []string{"http", "env", "system", "time", "file"}

// checkMatch refuses an empty matcher set: it matches every request, so a
// `match` whose matchers were left out would apply a per-route limit to
// every route.
func checkMatch(sets caddyhttp.RawMatcherSets) error {
	for _, set := range sets {
		if len(set) == 0 {
			return errors.New("no matcher given: an empty match would apply to every request")
		}
	}
	return nil
}

func (p *Policy) validate() error {
	if err := validName("policy", p.Name); err != nil {
		return err
	}
	if p.Key == "" {
		return fmt.Errorf("policy %s: key is required (e.g. key {http.auth.api_key.key_id})", p.Name)
	}
	if err := checkKey(p.Key); err != nil {
		return fmt.Errorf("policy %s: %w", p.Name, err)
	}
	if err := p.Rate.validate(p.Name, "rate"); err != nil {
		return err
	}
	if p.SandboxRate != nil {
		if err := p.SandboxRate.validate(p.Name, "sandbox_rate"); err != nil {
			return err
		}
	}
	return nil
}

func (r Rate) validate(policy, what string) error {
	if r.Requests <= 0 {
		return fmt.Errorf("policy %s: %s must be a positive number of requests, got %d", policy, what, r.Requests)
	}
	if err := validPeriod(time.Duration(r.Period)); err != nil {
		return fmt.Errorf("policy %s: %s period: %w", policy, what, err)
	}
	if l := r.Limit(); l.Period/time.Duration(l.Rate) < time.Microsecond {
		return fmt.Errorf("policy %s: %s of %d per %s is over the most a policy can enforce, %d requests per second (one per microsecond)",
			policy, what, l.Rate, l.Period, MaxRate)
	}
	if r.Burst < 0 {
		return fmt.Errorf("policy %s: %s burst must be positive, got %d", policy, what, r.Burst)
	}
	l := r.Limit()
	if err := keyspace.CheckBounds(int64(l.Rate), int64(l.Period/time.Second), int64(l.Burst)); err != nil {
		be := err.(*keyspace.BoundError)
		part := map[string]string{"quota": what + " requests", "window": what + " period", "burst": what + " burst"}[be.Field]
		return fmt.Errorf("policy %s: %s: %s", policy, part, be.Reason)
	}
	return nil
}

// validPeriod accepts zero (the default, 1s) and whole seconds.
func validPeriod(d time.Duration) error {
	switch {
	case d < 0:
		return fmt.Errorf("%s is negative", d)
	case d%time.Second != 0:
		return fmt.Errorf("%s is not a whole number of seconds (RateLimit headers cannot express sub-second windows)", d)
	}
	return nil
}

func (q *Quota) validate() error {
	if err := validName("quota", q.Name); err != nil {
		return err
	}
	if q.Key == "" {
		return fmt.Errorf("quota %s: key is required (e.g. key {http.auth.api_key.org_id})", q.Name)
	}
	if err := checkKey(q.Key); err != nil {
		return fmt.Errorf("quota %s: %w", q.Name, err)
	}
	if q.Limit <= 0 {
		return fmt.Errorf("quota %s: limit must be a positive number of requests, got %d", q.Name, q.Limit)
	}
	if q.Limit > keyspace.MaxCount || q.SandboxLimit > keyspace.MaxCount {
		return fmt.Errorf("quota %s: %d is over the most a limit can count, %d",
			q.Name, max(q.Limit, q.SandboxLimit), int64(keyspace.MaxCount))
	}
	if q.SandboxLimit < 0 {
		return fmt.Errorf("quota %s: sandbox_limit must be positive, got %d", q.Name, q.SandboxLimit)
	}
	switch q.Period {
	case "", PeriodMonth, PeriodDay, PeriodHour:
	default:
		return fmt.Errorf("quota %s: unknown period %q; use month, day or hour", q.Name, q.Period)
	}
	return nil
}

// Cleanup releases the shared Redis client.
func (h *Handler) Cleanup() error {
	if h.rdb.Client != nil {
		redispool.Release(h.redisURL)
	}
	return nil
}

// request is one request's applicable limits and the script's input.
type request struct {
	limits []*limit
	keys   []string
	args   []any
	env    int
}

// decision is one limit's outcome. For quotas, Limit.Rate and Limit.Burst
// are the quota and Limit.Period the current calendar window.
type decision struct {
	limit *limit
	redis_rate.Result
}

func (d decision) allowed() bool { return d.Allowed > 0 }

// outcome is the script's answer for a whole request.
type outcome struct {
	now       time.Time
	admitted  bool
	decisions []decision
}

// ServeHTTP decides every applicable limit in one round trip, adds the
// RateLimit fields and either passes the request on or refuses it.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	h.publishQuotas.Do(func() { go h.publish(h.ctx, h.quotaSpecs()) })
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	req, err := h.prepare(r, repl)
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	if len(req.limits) == 0 {
		return next.ServeHTTP(w, r)
	}

	out, err := h.decide(r.Context(), req)
	if err != nil {
		return h.unavailable(w, r, next, repl, req, err)
	}

	c := closest(out.decisions)
	setHeaders(w.Header(), out.decisions, c)
	repl.Set(PlaceholderPolicy, out.decisions[c].limit.name)
	repl.Set(PlaceholderRemaining, out.decisions[c].Remaining)

	if !out.admitted {
		for _, d := range out.decisions {
			if !d.allowed() {
				d.limit.limited.Inc()
			}
		}
		d := out.decisions[c] // a refused limit, the one that frees up last
		repl.Set(PlaceholderOutcome, "limited:"+d.limit.name)
		// request_id renders it (with Retry-After) as the error object.
		return caddyhttp.Error(http.StatusTooManyRequests, refusal(d, out.now))
	}
	for _, d := range out.decisions {
		d.limit.allowed.Inc()
		if d.limit.quota {
			d.limit.consumed.Inc()
		}
	}
	repl.Set(PlaceholderOutcome, "allowed")
	return next.ServeHTTP(w, r)
}

// prepare selects the limits that apply to r and builds the script's keys
// and arguments.
func (h *Handler) prepare(r *http.Request, repl *caddy.Replacer) (request, error) {
	org, _ := repl.GetString(phOrg)
	keyID, _ := repl.GetString(phKeyID)
	envName, _ := repl.GetString(phEnvironment)
	req := request{env: live}
	if envName == keyspace.Sandbox {
		req.env = sandbox
	}
	clientIP, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	tag := keyspace.Tag(org, clientIP)
	env := keyspace.Live
	if req.env == sandbox {
		env = keyspace.Sandbox
	}

	for _, l := range h.limits {
		if len(l.match) > 0 {
			ok, err := l.match.AnyMatchWithError(r)
			if err != nil {
				return request{}, fmt.Errorf("matching %s: %w", l.name, err)
			}
			if !ok {
				continue
			}
		}
		value, err := repl.ReplaceOrErr(l.key, true, true)
		if err != nil || value == "" {
			continue // e.g. a per-key limit before authentication
		}
		if req.keys == nil {
			req.keys = make([]string, 1, len(h.limits)+1)
			req.keys[0] = keyspace.Overrides(h.KeyPrefix, tag)
			req.args = make([]any, 5, 5+5*len(h.limits))
		}
		if l.quota {
			req.keys = append(req.keys, keyspace.Counter(h.KeyPrefix, tag, env, l.name, value))
		} else {
			req.keys = append(req.keys, keyspace.Bucket(h.KeyPrefix, tag, env, l.name, value))
		}
		req.args = append(req.args, l.args[req.env][:]...)
		req.limits = append(req.limits, l)
	}
	if len(req.limits) == 0 {
		return req, nil
	}

	req.args[0] = ""
	if h.now != nil {
		req.args[0] = strconv.FormatInt(h.now().UnixMicro(), 10)
	}
	req.args[1] = strconv.Itoa(cost)
	req.args[2] = "" // overrides belong to organisations
	if org != "" {
		req.args[2] = env + ":"
	}
	req.args[3] = keyID
	req.args[4] = "1"
	return req, nil
}

// decide runs the script. Identical requests waiting for Redis together
// (one client hammering one key) share one run of it: the script decides
// n of them as n runs in a row would, and this request is the index-th.
func (h *Handler) decide(ctx context.Context, req request) (outcome, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(h.Timeout))
	defer cancel()
	cmd, index := h.rdb.Scripts.EvalShaShared(ctx, limitsScript.Hash(), req.keys,
		func(n int) []any {
			if n == 1 {
				return req.args
			}
			args := slices.Clone(req.args)
			args[4] = strconv.Itoa(n)
			return args
		})
	reply, err := cmd.Text()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// Redis restarted or its scripts were flushed: load it, alone.
		reply, err = limitsScript.Eval(ctx, h.rdb.Scripts, req.keys, req.args...).Text()
		index = 0
	}
	if err != nil {
		return outcome{}, err
	}
	var buf [2 + 2*7*8]int64
	v, err := parseInts(reply, buf[:0])
	if err != nil {
		return outcome{}, fmt.Errorf("rate limit script reply: %w", err)
	}
	return parseOutcome(v, req.limits, index)
}

// parseOutcome reads the script's reply for the index-th of the requests
// it decided (see script.go): the m-th admitted request's values, adjusted
// for an earlier one, or the refused request's.
func parseOutcome(v []int64, limits []*limit, index int) (outcome, error) {
	if len(v) < 2 {
		return outcome{}, fmt.Errorf("rate limit script returned %d values", len(v))
	}
	m := int(v[1])
	blocks := 0
	if m > 0 {
		blocks++
	}
	if index >= m {
		blocks++
	}
	if index < 0 || len(v) < 2+7*len(limits)*blocks {
		return outcome{}, fmt.Errorf("rate limit script returned %d values for %d limits, request %d of %d admitted",
			len(v), len(limits), index, m)
	}
	block := v[2:]
	later := 0 // admitted requests after this one
	if index < m {
		later = m - 1 - index
	} else if m > 0 {
		block = block[7*len(limits):]
	}
	out := outcome{
		now:       time.UnixMicro(v[0]).UTC(),
		admitted:  index < m,
		decisions: make([]decision, len(limits)),
	}
	for i, l := range limits {
		x := block[7*i : 7*i+7]
		d := decision{limit: l}
		d.Allowed = int(x[0])
		d.Remaining = int(x[1])
		d.ResetAfter = time.Duration(x[2]) * time.Microsecond
		d.RetryAfter = -1
		if d.Allowed == 0 {
			d.RetryAfter = time.Duration(x[3]) * time.Microsecond
		}
		d.Limit = redis_rate.Limit{Rate: int(x[4]), Period: time.Duration(x[5]) * time.Second, Burst: int(x[6])}
		if later > 0 {
			// Each later admission took one request's room from what the
			// m-th saw, and a GCRA policy's reset one emission interval.
			d.Remaining += later * cost
			if !l.quota {
				d.ResetAfter -= time.Duration(later*cost) * emissionInterval(d.Limit)
			}
		}
		out.decisions[i] = d
	}
	return out, nil
}

// emissionInterval is the script's: period ÷ rate in whole microseconds,
// rounded down, at least one.
func emissionInterval(l redis_rate.Limit) time.Duration {
	return max(time.Microsecond, (l.Period / time.Duration(l.Rate)).Truncate(time.Microsecond))
}

// MaxRate is the highest rate a GCRA policy can enforce, per second: the
// script keeps emission intervals in whole microseconds. An override above
// it (the control plane cannot tell a policy from a quota) counts as it.
const MaxRate = 1_000_000

// cost is what one request consumes of every limit.
const cost = 1

// parseInts appends the space-separated integers of s to dst.
func parseInts(s string, dst []int64) ([]int64, error) {
	for len(s) > 0 {
		i := strings.IndexByte(s, ' ')
		if i < 0 {
			i = len(s)
		}
		n, err := strconv.ParseInt(s[:i], 10, 64)
		if err != nil {
			return nil, err
		}
		dst = append(dst, n)
		s = s[min(i+1, len(s)):]
	}
	return dst, nil
}

// unavailable handles a failed round trip: fail open (default) or closed.
func (h *Handler) unavailable(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler,
	repl *caddy.Replacer, req request, err error) error {
	if r.Context().Err() != nil {
		// The client went away; that is no Redis failure.
		return r.Context().Err()
	}
	h.metrics.redisErrors.Inc()
	for _, l := range req.limits {
		l.errored.Inc()
	}
	h.warnRedis(err)
	repl.Set(PlaceholderOutcome, "error")
	if h.FailClosed {
		e := apierror.Unavailable("rate_limit_unavailable",
			"Rate limits cannot be checked right now, so the request was not processed. Retry later.")
		e.RetryAfter = 1
		return caddyhttp.Error(e.Status, e)
	}
	return next.ServeHTTP(w, r)
}

// warn logs a Redis failure at most once per WarnInterval, with the number
// of failures since the previous warning, so an outage cannot flood the log.
func (h *Handler) warnRedis(err error) {
	h.warn.failures.Add(1)
	now := time.Now().UnixNano()
	last := h.warn.lastWarn.Load()
	if last != 0 && now-last < int64(h.WarnInterval) {
		return
	}
	if !h.warn.lastWarn.CompareAndSwap(last, now) {
		return
	}
	mode := "letting requests through unchecked (fail_open)"
	if h.FailClosed {
		mode = "refusing requests with 503 (fail_closed)"
	}
	h.logger.Warn("rate limits unavailable: redis failed; "+mode,
		zap.Error(err),
		zap.Int64("failures", h.warn.failures.Swap(0)),
		zap.Duration("next_warning_after", time.Duration(h.WarnInterval)))
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
