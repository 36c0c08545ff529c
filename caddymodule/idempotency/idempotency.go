// Package idempotency is the gateway's `idempotency` handler
// (http.handlers.idempotency): a client may retry any POST with the same
// Idempotency-Key and the backend behind the gateway — which knows nothing
// of idempotency — executes it at most once per key. It follows Stripe's
// idempotent requests and the IETF draft draft-ietf-httpapi-idempotency-key-header:
//
//   - First request with a key: the key is locked in Redis, the request goes
//     upstream, and the complete response (any status, 5xx included, as
//     Stripe does) is recorded before the client receives it. Except
//     refusals: a 429, or a 503 with Retry-After, says by HTTP convention
//     that the backend did not act on the request and when to try again, so
//     it is passed on unrecorded and the lock released; the retry executes.
//     And secrets: a 2xx response marked Cache-Control: no-store (a signing
//     secret shown once) is passed on but only its status is kept; retries
//     get 422 idempotency_response_unavailable and are not executed again.
//   - Retry after completion: the recorded status, headers and body are sent
//     again with `Idempotent-Replayed: true`; the retry has its own Request-Id
//     and names the original in `Original-Request-Id`.
//   - Retry while the first is running: 409 idempotency_key_in_use with
//     `Retry-After: 1`.
//   - Same key, different request (method, path+query or body): 422
//     idempotency_key_reused. The IETF draft's status; Stripe answers 400.
//   - Requests without the header pass straight through: no Redis call.
//
// Keys are scoped per organisation and environment (the api_key handler's
// placeholders), so the handler must come after api_key and rate_limit: a
// request they refuse (401/403/429) never reaches it and records nothing.
//
// # Failure semantics
//
// The guarantee is "at most once per key", so every ambiguous case errs on
// the side of not executing again:
//
//   - Redis unreachable when a keyed request arrives: 503
//     idempotency_unavailable; the request is not executed unprotected.
//     When the lock call went out but its answer did not come in time, it
//     may have taken the lock, or may still take it: the handler releases
//     it with the request's own token, from the background until Redis
//     answers, and a late lock call finds the release's tombstone and takes
//     nothing (store.go). Retries get 409 until the release lands, then
//     execute.
//   - The upstream could not be reached at all (the reverse proxy's dial
//     error, a TLS handshake that failed before any connection was handed
//     to the request, "no upstreams available", or a 4xx error from a
//     handler behind this one): the request provably never reached the
//     backend, so the lock is released and the error passed on; a retry
//     executes.
//   - The upstream may have received the request but produced no complete
//     response (response-header timeout, connection reset, a body cut short,
//     a panic behind this handler): the outcome is unknown. The gateway
//     records and answers a 502 upstream_unavailable / 504 upstream_timeout
//     error object saying so, and every retry with the key gets that error
//     replayed — never a second execution. Releasing the lock, or letting it
//     expire, would trade a possible double execution for convenience.
//   - The execution of a keyed request is detached from the client: a
//     client that hangs up does not cancel the upstream call, so its retry
//     finds the real outcome (409 until then). The upstream call is bounded
//     instead, so that the lock cannot expire while this gateway still
//     waits: it is cancelled a margin before lock_ttl (10% of it, at least
//     1s, at most half), counted from before the lock call (Redis starts
//     the lock's clock somewhere between sending and answering), which is
//     the timeout case above. lock_ttl therefore caps how long the upstream
//     may take for a keyed request. A lock whose answer took half or more
//     of that time runs nothing: the request gets 503
//     idempotency_unavailable and the lock is released.
//   - A response larger than max_response_size, or a stream, is passed
//     through to the first client as it comes and not stored; the key is
//     marked too_large and retries get 422 idempotency_response_unavailable.
//   - Known edge: if Redis fails while recording (after the upstream ran), or
//     the gateway dies mid-request, the client still gets its response (in
//     the first case) but nothing is recorded. The lock is not released —
//     the upstream ran — and expires after lock_ttl: retries until then get
//     409, a retry after that executes again. Both are logged and counted
//     in caddy_gatehouse_idempotency_records_total.
//
// # Placeholders and metrics
//
// {http.idempotency.key}, {http.idempotency.replayed} ("true"/"false") and
// {http.idempotency.original_request_id} (set on replays and on refusals
// that refer to the original) are set for keyed requests, for the request
// log. caddy_gatehouse_idempotency_total{outcome} counts keyed requests by
// outcome (executed, replayed, in_use, reused, too_large, no_store,
// unavailable, invalid).
package idempotency

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/gatehouse/gatehouse/caddymodule/internal/errorobject"
	"github.com/gatehouse/gatehouse/caddymodule/internal/holdback"
	"github.com/gatehouse/gatehouse/caddymodule/redispool"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/redact"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Defaults of the configuration.
const (
	DefaultTTL             = 24 * time.Hour
	DefaultLockTTL         = 60 * time.Second
	DefaultMaxResponseSize = 1_000_000 // 1 MB, as `max_response_size 1MB` means in a Caddyfile
	DefaultMaxRequestSize  = 1_000_000
	DefaultKeyPrefix       = "gatehouse:idempotency:"
)

// Bounds of the Redis calls on the request path. A lookup is one small
// round trip (plus a dial, at worst); recording may carry a 1 MB body.
const (
	lookupTimeout = 500 * time.Millisecond
	recordTimeout = 2 * time.Second

	// MinLockTTL is the shortest lock_ttl accepted.
	MinLockTTL = 100 * time.Millisecond
)

// Response headers the handler sets.
const (
	headerReplayed          = "Idempotent-Replayed"
	headerOriginalRequestID = "Original-Request-Id"
	headerRequestID         = "Request-Id"
)

// Placeholders from the api_key handler that scope keys.
const (
	placeholderOrg      = "http.auth.api_key.org_id"
	placeholderLivemode = "http.auth.api_key.livemode"
)

// Handler makes retries of non-idempotent requests safe. See the package
// documentation for the semantics.
type Handler struct {
	// Redis URL (redis:// or rediss://) of the records. Placeholders such as
	// {env.REDIS_URL} are replaced at provisioning. Default: the REDIS_URL
	// environment variable, else redis://127.0.0.1:6379/0.
	Redis string `json:"redis,omitempty"`

	// How long a completed request's record is kept and replayed. Default 24h.
	// After it, the key is forgotten and may execute again (as at Stripe).
	TTL caddy.Duration `json:"ttl,omitempty"`

	// How long an in-flight lock lives if its gateway dies before recording
	// the outcome; also the upper bound of a keyed request's upstream call,
	// which is cancelled a margin before it (10%, at least 1s; see the
	// package documentation), so set it well above the slowest legitimate
	// upstream response. Default 60s, or ttl when that is shorter.
	LockTTL caddy.Duration `json:"lock_ttl,omitempty"`

	// Largest response body, in bytes, that is recorded. Larger responses are
	// streamed to the first client and not stored. Default 1 MB (1,000,000).
	MaxResponseSize int64 `json:"max_response_size,omitempty"`

	// Largest request body, in bytes, accepted with a key (the body is read
	// whole to fingerprint it). Larger bodies get 413 body_too_large. A
	// `request_body max_size` in front of this handler applies first.
	// Default 1 MB (1,000,000).
	MaxRequestSize int64 `json:"max_request_size,omitempty"`

	// HTTP methods the key applies to; on others the header is ignored.
	// Safe methods (GET, HEAD, OPTIONS, TRACE) and CONNECT are refused.
	// Default ["POST"].
	Methods []string `json:"methods,omitempty"`

	// Scope for requests without the api_key placeholders (no
	// {http.auth.api_key.org_id}), e.g. a single-tenant route without keys:
	// a fixed name (placeholders are refused). Every such caller then
	// shares one key space, so use it only where that is true. When empty (the default), a keyed request without an
	// organisation is refused with a 500 and an error log: it means this
	// handler was placed before api_key, and executing unscoped could replay
	// one tenant's response to another.
	FallbackScope string `json:"fallback_scope,omitempty"`

	// Prefix of the Redis keys. Default "gatehouse:idempotency:".
	KeyPrefix string `json:"key_prefix,omitempty"`

	redisURL    string
	store       *store
	methods     []string
	execTimeout time.Duration
	logger      *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.idempotency",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets defaults and takes the shared Redis client.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.setDefaults()

	h.redisURL = caddy.NewReplacer().ReplaceAll(h.Redis, "")
	if h.redisURL == "" {
		h.redisURL = config.String("REDIS_URL", config.DefaultRedisURL)
	}
	client, err := redispool.Get(h.redisURL)
	if err != nil {
		h.redisURL = ""
		return fmt.Errorf("idempotency: %w", err)
	}
	h.store = &store{client: client.Scripts, direct: client.Scripts.Always(), prefix: h.KeyPrefix}

	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("idempotency: registering metrics: %w", err)
	}
	return nil
}

// setDefaults fills what the configuration left out. An unset lock_ttl is
// the default or ttl when that is shorter: a lock must not outlive its
// record.
func (h *Handler) setDefaults() {
	if h.TTL == 0 {
		h.TTL = caddy.Duration(DefaultTTL)
	}
	if h.LockTTL == 0 {
		h.LockTTL = min(caddy.Duration(DefaultLockTTL), h.TTL)
	}
	if h.MaxResponseSize == 0 {
		h.MaxResponseSize = DefaultMaxResponseSize
	}
	if h.MaxRequestSize == 0 {
		h.MaxRequestSize = DefaultMaxRequestSize
	}
	if len(h.Methods) == 0 {
		h.Methods = []string{http.MethodPost}
	}
	if h.KeyPrefix == "" {
		h.KeyPrefix = DefaultKeyPrefix
	}
	h.methods = make([]string, len(h.Methods))
	for i, m := range h.Methods {
		h.methods[i] = strings.ToUpper(m)
	}
	h.execTimeout = execTimeout(time.Duration(h.LockTTL))
}

// Validate checks the configuration.
func (h *Handler) Validate() error {
	if h.TTL < 0 {
		return fmt.Errorf("idempotency: ttl must be positive, got %s", time.Duration(h.TTL))
	}
	if h.LockTTL < 0 {
		return fmt.Errorf("idempotency: lock_ttl must be positive, got %s", time.Duration(h.LockTTL))
	}
	if time.Duration(h.LockTTL) < MinLockTTL {
		return fmt.Errorf("idempotency: lock_ttl (%s) must be at least %s (ttl too, when lock_ttl is not set): a keyed request's upstream call gets half of lock_ttl or more, which must leave room for the lock call itself",
			time.Duration(h.LockTTL), MinLockTTL)
	}
	if h.LockTTL > h.TTL {
		return fmt.Errorf("idempotency: lock_ttl (%s) must not exceed ttl (%s)", time.Duration(h.LockTTL), time.Duration(h.TTL))
	}
	if h.MaxResponseSize < 0 || h.MaxRequestSize < 0 {
		return errors.New("idempotency: max_response_size and max_request_size must be positive")
	}
	for _, m := range h.methods {
		if err := checkMethod(m); err != nil {
			return fmt.Errorf("idempotency: %w", err)
		}
	}
	if strings.ContainsAny(h.FallbackScope, "{}") {
		// Taken literally: a placeholder there would give every caller one
		// shared key space while the operator expected one per client.
		return fmt.Errorf("idempotency: fallback_scope is a fixed name, not a template (got %q); it is one key space shared by every caller without an organisation", h.FallbackScope)
	}
	return nil
}

// execTimeout bounds the upstream call of a keyed request so that its
// outcome is recorded before the lock expires: lock_ttl minus a margin for
// recording of 10% of it, at least a second, at most half of it.
func execTimeout(lockTTL time.Duration) time.Duration {
	margin := max(lockTTL/10, min(time.Second, lockTTL/2))
	return lockTTL - margin
}

// checkMethod refuses methods a key makes no sense for: safe methods are
// idempotent already, and replaying a stored GET would serve stale data.
func checkMethod(m string) error {
	if m == "" || strings.ContainsFunc(m, func(r rune) bool { return r < 'A' || r > 'Z' }) {
		return fmt.Errorf("method %q is not an HTTP method name", m)
	}
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodConnect:
		return fmt.Errorf("method %s is idempotent by definition or cannot carry a replayable response; use POST, PATCH, PUT or DELETE", m)
	}
	return nil
}

// Cleanup releases the shared Redis client.
func (h *Handler) Cleanup() error {
	if h.redisURL != "" {
		redispool.Release(h.redisURL)
	}
	return nil
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	values := r.Header.Values(HeaderKey)
	if len(values) == 0 || !h.applies(r.Method) {
		// Not a request this handler dedupes, but Go's transport would
		// take one carrying either header (X-Idempotency-Key, which some
		// SDKs send) for one the backend does, and might resend it.
		if len(values) > 0 || len(r.Header["X-Idempotency-Key"]) > 0 {
			r = r.WithContext(r.Context()) // a copy: the handlers in front see the header as sent
			r.Header = hideFromTransportRetries(r.Header)
		}
		return next.ServeHTTP(w, r)
	}
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)

	key, err := ParseKey(values)
	if err != nil {
		countOutcome(outcomeInvalid)
		return refuse(err)
	}
	repl.Set("http.idempotency.key", key)
	repl.Set("http.idempotency.replayed", "false")
	repl.Set("http.idempotency.original_request_id", "")

	scope, ok := h.scope(repl)
	if !ok {
		h.logger.Error("keyed request without an organisation: place idempotency after api_key, or set fallback_scope",
			zap.String("path", redact.LogPath(r)))
		return refuse(apierror.Internal())
	}
	body, err := readBody(r, h.MaxRequestSize)
	if err != nil {
		countOutcome(outcomeInvalid)
		return err
	}

	// Redis calls use a context the client cannot cancel (a lock taken but
	// not acknowledged because the client left would otherwise linger), with
	// a deadline of their own: a dead Redis must cost a keyed request a
	// bounded wait, not the client's dial retries.
	ctx := context.WithoutCancel(r.Context())
	beginCtx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	ex := &execution{
		rkey:      h.KeyPrefix + scope + ":" + key,
		token:     newToken(),
		requestID: requestID(w, repl),
		body:      body,
	}
	// The lock's lifetime starts in Redis, after this moment: an execution
	// bounded from here ends before the lock expires, however long the lock
	// call's answer took to come back.
	ex.deadline = time.Now().Add(h.execTimeout)
	fp, altFP := fingerprints(r.Method, r.URL.RequestURI(), r.Header.Get("Content-Type"), body)
	found, err := h.store.begin(beginCtx, ex.rkey, ex.token, fp, altFP, ex.requestID, time.Duration(h.LockTTL))
	if err != nil {
		countOutcome(outcomeUnavailable)
		h.logger.Warn("idempotency store unavailable; refusing keyed request", zap.Error(err))
		if mayHaveLocked(err) {
			// Not in the client's way: its 503 says "retry later", and a
			// Redis that did not answer this call may not answer the next.
			h.releaseLater(ex, "")
		}
		return refuse(apierror.Unavailable("idempotency_unavailable",
			"Idempotency keys cannot be checked right now, so this request was not executed. Retry later with the same Idempotency-Key."))
	}

	if found.requestID != "" && found.state != stateAcquired {
		repl.Set("http.idempotency.original_request_id", found.requestID)
	}
	switch found.state {
	case stateAcquired:
		if time.Until(ex.deadline) < h.execTimeout/2 {
			// The lock call's answer took half or more of the time the lock
			// leaves for an execution (only with a lock_ttl near lookup
			// times): too little may be left to even send the request, and a
			// timeout then would be recorded as an outcome nobody knows.
			countOutcome(outcomeUnavailable)
			h.release(ctx, ex, "") // nothing executed: no record to count
			return refuse(apierror.Unavailable("idempotency_unavailable",
				"The idempotency store answered too slowly to run this request safely, so it was not executed. Retry later with the same Idempotency-Key."))
		}
		countOutcome(outcomeExecuted)
		return h.execute(ctx, w, r, next, ex)
	case stateDone:
		countOutcome(outcomeReplayed)
		repl.Set("http.idempotency.replayed", "true")
		return replay(w, found)
	case stateLocked:
		countOutcome(outcomeInUse)
		e := apierror.New(http.StatusConflict, apierror.TypeIdempotency, "idempotency_key_in_use",
			fmt.Sprintf("A request with the Idempotency-Key '%s' is still being processed. Retry after a second with the same key to get its result.", key))
		e.RetryAfter = 1
		return refuse(e)
	case stateTooLarge:
		countOutcome(outcomeTooLarge)
		return notKept(w, key, found, "was too large or streamed", "")
	case stateNoStore:
		countOutcome(outcomeNoStore)
		return notKept(w, key, found, "carried a secret (Cache-Control: no-store)", "; read the object it created instead")
	default: // stateMismatch
		countOutcome(outcomeReused)
		return refuse(apierror.New(http.StatusUnprocessableEntity, apierror.TypeIdempotency, "idempotency_key_reused",
			fmt.Sprintf("The Idempotency-Key '%s' was already used for a different request (method, path or body). A key can only be retried with the same request; use a new key for a new request.", key)))
	}
}

// notKept refuses a retry whose original executed but left no response to
// replay, saying why (its response ...) and what to do instead.
func notKept(w http.ResponseWriter, key string, found lookup, why, instead string) error {
	setOriginal(w, found.requestID)
	return refuse(apierror.New(http.StatusUnprocessableEntity, apierror.TypeIdempotency, "idempotency_response_unavailable",
		fmt.Sprintf("The request with the Idempotency-Key '%s' was executed (%s), but its response %s, so it was not stored and cannot be replayed. It was not executed again%s.",
			key, describeOriginal(found), why, instead)))
}

// execution is one keyed request that holds the lock.
type execution struct {
	rkey      string // the Redis key
	token     string // owner token of the lock
	requestID string
	body      []byte
	deadline  time.Time // of the upstream call: lock_ttl less a margin, from before the lock call
}

// execute runs the request upstream under the lock and records its outcome.
func (h *Handler) execute(ctx context.Context, w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, ex *execution) error {
	restoreBody(r, ex.body)
	// Detached from the client (a retry must find the real outcome) but
	// bounded so that the lock cannot expire while this gateway still waits.
	execCtx, cancel := context.WithDeadline(context.WithoutCancel(r.Context()), ex.deadline)
	defer cancel()
	var connected atomic.Bool
	r = guardTransportRetries(r.WithContext(execCtx), &connected)
	r.Header = hideFromTransportRetries(r.Header)
	// A replay goes to whichever client retries, with whatever
	// Accept-Encoding it sends: the record must be in no content coding.
	// Without the client's Accept-Encoding, reverse_proxy's transport asks
	// for gzip itself and decodes the answer (an `encode` directive in
	// front compresses again for each client).
	delete(r.Header, "Accept-Encoding")

	buf := holdback.GetBuffer()
	defer holdback.PutBuffer(buf)
	rb := holdback.New(w, buf, h.MaxResponseSize, nil)
	// A response too large to hold streams to the client as it comes, and
	// is recorded as such before its first byte goes out: a client that
	// then stops reading blocks this handler in its writes, and must not
	// keep the outcome unrecorded until the lock expires (a retry would
	// execute again).
	rb.OnStream = func(status int) {
		if refusedBeforeActing(response{status: status, header: w.Header()}) {
			h.release(ctx, ex, recordRefused) // passed on as it comes; the retry executes
			return
		}
		h.complete(ctx, ex, stateTooLarge, response{status: status}, recordTooLarge)
	}

	panicked, stack, err := holdback.Serve(next, rb, r)
	if panicked != nil && err == nil {
		err = fmt.Errorf("panic behind the idempotency handler: %v", panicked)
	}

	switch {
	case err != nil && !rb.WroteHeader() && (neverReachedUpstream(err) || !connected.Load() && tlsHandshakeFailed(err)):
		h.release(ctx, ex, recordReleased)
		return err

	case rb.Streamed: // recorded by OnStream as it started
		if panicked != nil {
			panic(panicked) // the client's stream must be aborted, as the proxy intended
		}
		return err

	case err != nil:
		resp := gatewayError(r, err, ex.requestID)
		h.complete(ctx, ex, stateDone, resp, recordGatewayError)
		rb.Drop() // drop what the upstream set before it failed
		if c := h.logger.Check(zapcore.WarnLevel, "upstream may have executed a keyed request without a complete answer; recorded the error for its retries"); c != nil {
			c.Write(zap.Int("status", resp.status), zap.Error(err))
		}
		writeResponse(w, resp)
		if stack != nil {
			// Not re-panicked: net/http would drop the connection under
			// the 502 just written, and the first client would get nothing
			// where every retry gets this answer.
			h.logger.Error("panic behind the idempotency handler; answered with the recorded error",
				zap.String("request_id", ex.requestID), zap.Any("panic", panicked), zap.ByteString("stack", stack))
		}
		return nil

	default:
		resp := recorded(rb)
		switch {
		case refusedBeforeActing(resp):
			h.release(ctx, ex, recordRefused)
		case resp.status >= 200 && resp.status < 300 && noStore(resp):
			h.complete(ctx, ex, stateNoStore, response{status: resp.status}, recordNoStore)
		default:
			h.complete(ctx, ex, stateDone, resp, recordStored)
		}
		writeResponse(w, resp)
		return nil
	}
}

// hideFromTransportRetries returns a copy of h that Go's HTTP transport
// (reverse_proxy's) will not resend by itself. The transport takes a POST
// carrying Idempotency-Key (or X-Idempotency-Key) for one the backend
// deduplicates, and sends it again when a reused connection fails before
// the response starts — after the backend may have acted on it, the case
// this handler records as unknown instead of executing twice. The
// transport looks the header up by its canonical name only, so the values
// move to the lower-case name: the upstream still receives them, since
// field names are case-insensitive (and HTTP/2 lower-cases them anyway).
// Retries the transport knows to be safe (nothing was written) still
// happen. The copy leaves the header the handlers in front of this one
// see untouched.
func hideFromTransportRetries(h http.Header) http.Header {
	h = h.Clone()
	for _, k := range []string{HeaderKey, "X-Idempotency-Key"} {
		if v, ok := h[k]; ok {
			delete(h, k)
			h[strings.ToLower(k)] = v
		}
	}
	return h
}

// errNotResent stops Go's transport from resending a keyed request whose
// first attempt was written whole: the backend may have acted on it.
var errNotResent = errors.New("not resending a keyed request the upstream may have acted on")

// guardTransportRetries makes Go's transport unable to resend r's body once
// an attempt wrote the request whole. hideFromTransportRetries alone does
// not last: reverse_proxy rebuilds the header with canonical names whenever
// it has header operations (any header_up, and the Host it sets for every
// HTTPS upstream), and the transport then takes the request for one the
// backend deduplicates. A resend rewinds the body with GetBody, which here
// refuses after a whole write; a retry after nothing was written (safe)
// still gets the body. A request without a body has nothing to rewind, so
// only the lower-case header name protects it. connected is set once the
// transport has a connection to write on: it dials and completes a TLS
// handshake before that.
func guardTransportRetries(r *http.Request, connected *atomic.Bool) *http.Request {
	var written atomic.Bool
	if getBody := r.GetBody; getBody != nil {
		r.GetBody = func() (io.ReadCloser, error) {
			if written.Load() {
				return nil, errNotResent
			}
			return getBody()
		}
	}
	trace := &httptrace.ClientTrace{
		GotConn: func(httptrace.GotConnInfo) { connected.Store(true) },
		WroteRequest: func(i httptrace.WroteRequestInfo) {
			if i.Err == nil {
				written.Store(true)
			}
		},
	}
	return r.WithContext(httptrace.WithClientTrace(r.Context(), trace))
}

// tlsHandshakeFailed reports whether err is a TLS handshake with the
// upstream that failed: its certificate refused (expired, another name, an
// unknown authority), an alert, or no TLS at all. Together with no
// connection obtained (guardTransportRetries), nothing of the request was
// sent, so its retry may execute — the certificate may be fixed by then.
func tlsHandshakeFailed(err error) bool {
	var (
		verify    *tls.CertificateVerificationError
		alert     tls.AlertError
		header    tls.RecordHeaderError
		authority x509.UnknownAuthorityError
		host      x509.HostnameError
		invalid   x509.CertificateInvalidError
	)
	return errors.As(err, &verify) || errors.As(err, &alert) || errors.As(err, &header) ||
		errors.As(err, &authority) || errors.As(err, &host) || errors.As(err, &invalid) ||
		strings.Contains(err.Error(), "TLS handshake timeout")
}

// refusedBeforeActing reports whether the upstream's response says, by HTTP
// convention, that it did not act on the request and it may be retried:
// 429 Too Many Requests, or 503 with Retry-After (RFC 9110 §15.6.4). Such a
// response is not recorded; replaying it would answer "retry later" to
// every retry for ttl. Any other 5xx may come after the work was done, and
// is recorded.
func refusedBeforeActing(resp response) bool {
	return resp.status == http.StatusTooManyRequests ||
		resp.status == http.StatusServiceUnavailable && resp.header.Get("Retry-After") != ""
}

// noStore reports whether the upstream forbade storing its response
// (Cache-Control: no-store, RFC 9111 §5.2.2.5). On a success it carries a
// secret shown once, such as a new webhook signing secret, which must not
// sit in Redis for ttl: the request counts as executed — a retry is not run
// again — but only its status is kept, and a retry gets 422 saying so.
// Error objects are often no-store too (internal/apierror marks them all)
// and carry no secret: they are recorded as any other response.
func noStore(resp response) bool {
	for _, v := range resp.header.Values("Cache-Control") {
		for d := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(d), "no-store") {
				return true
			}
		}
	}
	return false
}

// complete records the outcome. Failure is logged and counted; the client
// still gets its response. The lock is kept even when recording fails
// without an answer: the upstream ran, and releasing would let a retry run
// it again.
func (h *Handler) complete(ctx context.Context, ex *execution, state string, resp response, result string) {
	ctx, cancel := context.WithTimeout(ctx, recordTimeout)
	defer cancel()
	err := h.store.complete(ctx, ex.rkey, ex.token, state, time.Duration(h.TTL), resp)
	switch {
	case err == nil:
		countRecord(result)
	case errors.Is(err, errLockLost):
		countRecord(recordLockLost)
		h.logger.Warn("idempotency lock expired before the outcome was recorded; a retry may execute again",
			zap.String("request_id", ex.requestID), zap.Duration("lock_ttl", time.Duration(h.LockTTL)))
	default:
		countRecord(recordRedisError)
		h.logger.Error("recording idempotent response failed; a retry after lock_ttl may execute again",
			zap.String("request_id", ex.requestID), zap.Duration("lock_ttl", time.Duration(h.LockTTL)), zap.Error(err))
	}
}

// release drops the lock of a request that did not execute (it never
// reached the upstream, or the upstream refused it), so that a retry runs.
// Should Redis not answer, the release goes on in the background.
func (h *Handler) release(ctx context.Context, ex *execution, result string) {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	if err := h.store.release(ctx, ex.rkey, ex.token, time.Duration(h.LockTTL)); err != nil {
		h.logger.Warn("releasing idempotency lock failed; retrying in the background",
			zap.String("request_id", ex.requestID), zap.Error(err))
		h.releaseLater(ex, result)
		return
	}
	if result != "" {
		countRecord(result)
	}
}

// Releases in the background: at most maxPendingReleases at a time, tried
// until Redis answers one, first after releaseRetry and then twice as long
// each time up to redispool.IOTimeout, for at most lock_ttl (by then the
// lock has expired, and a lock call still on its way that long is beyond
// what a tombstone covers). Few are ever pending: once Redis has missed
// three batches, the circuit breaker refuses lock calls before they are
// sent, and those need no release.
const (
	maxPendingReleases = 1024
	releaseRetry       = 100 * time.Millisecond
)

var pendingReleases = make(chan struct{}, maxPendingReleases)

// releaseLater releases ex's lock from the background. Every attempt is safe
// to repeat and safe in any order with the lock call (see store.go's
// tombstones), so attempts that time out are simply tried again. result is
// counted when the release lands ("" for none); giving up counts a
// redis_error.
func (h *Handler) releaseLater(ex *execution, result string) {
	select {
	case pendingReleases <- struct{}{}:
	default:
		h.gaveUpReleasing(ex, result, errors.New("too many releases pending"))
		return
	}
	lockTTL := time.Duration(h.LockTTL)
	ex = &execution{rkey: ex.rkey, token: ex.token, requestID: ex.requestID} // not the body
	go func() {
		defer func() { <-pendingReleases }()
		deadline := time.Now().Add(lockTTL)
		wait := releaseRetry
		for {
			ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
			err := h.store.release(ctx, ex.rkey, ex.token, lockTTL)
			cancel()
			if err == nil {
				if result != "" {
					countRecord(result)
				}
				return
			}
			if time.Now().Add(wait).After(deadline) {
				h.gaveUpReleasing(ex, result, err)
				return
			}
			time.Sleep(wait)
			wait = min(2*wait, redispool.IOTimeout)
		}
	}()
}

func (h *Handler) gaveUpReleasing(ex *execution, result string, err error) {
	if result != "" {
		countRecord(recordRedisError)
	}
	h.logger.Error("releasing idempotency lock failed; retries get 409 until lock_ttl",
		zap.String("request_id", ex.requestID), zap.Duration("lock_ttl", time.Duration(h.LockTTL)), zap.Error(err))
}

// mayHaveLocked reports whether a failed lock call may have taken the lock
// nonetheless: unless it was never sent (the circuit breaker refused it, or
// no connection could be made) or Redis answered with an error, its script
// may have run — or may still run.
func mayHaveLocked(err error) bool {
	var rerr redis.Error
	var oerr *net.OpError
	switch {
	case errors.Is(err, redispool.ErrCircuitOpen), errors.As(err, &rerr):
		return false
	case errors.As(err, &oerr) && oerr.Op == "dial":
		return false
	}
	return true
}

// neverReachedUpstream reports whether err proves that the request was not
// sent to the backend: the reverse proxy could not connect (it only returns
// a DialError when no connection was established), it had no upstream, or a
// handler behind this one refused the request itself (a 4xx).
func neverReachedUpstream(err error) bool {
	var dial reverseproxy.DialError
	if errors.As(err, &dial) {
		return true
	}
	var he caddyhttp.HandlerError
	if errors.As(err, &he) {
		if he.StatusCode == http.StatusServiceUnavailable && he.Err != nil && strings.Contains(he.Err.Error(), "no upstreams available") {
			return true
		}
		// The upstream had closed the pooled connection before the request
		// was handed to it (net/http's errServerClosedIdle), so it never
		// read it. The transport no longer resends such a request itself
		// (hideFromTransportRetries); the client's retry with the key does.
		if he.Err != nil && strings.Contains(he.Err.Error(), "http: server closed idle connection") {
			return true
		}
		if he.StatusCode >= 400 && he.StatusCode < 500 && he.StatusCode != 499 {
			return true
		}
	}
	var ae *apierror.Error
	return errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500
}

// gatewayError is the recorded answer when the upstream may have executed
// but gave no complete response; r carries the execution's context. It is
// rendered here rather than returned as an error because the bytes the
// first client gets must be the bytes every retry gets.
func gatewayError(r *http.Request, err error, requestID string) response {
	e := apierror.New(http.StatusBadGateway, apierror.TypeAPI, "upstream_unavailable",
		"The service behind the gateway may have received this request, but no complete response came back. Its outcome is unknown, so this Idempotency-Key will keep returning this error instead of executing the request again. Check whether the operation took effect before retrying with a new key.")
	var he caddyhttp.HandlerError
	var ae *apierror.Error
	switch {
	case errors.As(err, &ae) && ae.Status >= 500:
		e = ae
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &he) && he.StatusCode == http.StatusGatewayTimeout) ||
		// The execution's own bound, hit while the body came: reverse_proxy
		// then aborts with a panic that does not say why.
		errors.Is(r.Context().Err(), context.DeadlineExceeded):
		e.Status, e.Code = http.StatusGatewayTimeout, "upstream_timeout"
		e.Message = "The service behind the gateway received this request but did not answer in time. Its outcome is unknown, so this Idempotency-Key will keep returning this error instead of executing the request again. Check whether the operation took effect before retrying with a new key."
	}
	rec := &headerRecorder{header: http.Header{headerRequestID: {requestID}}}
	errorobject.Write(rec, r, e)
	delete(rec.header, headerRequestID)
	return response{status: rec.status, header: rec.header, body: rec.body.Bytes()}
}

// headerRecorder captures what errorobject.Write renders.
type headerRecorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *headerRecorder) Header() http.Header         { return r.header }
func (r *headerRecorder) WriteHeader(status int)      { r.status = status }
func (r *headerRecorder) Write(p []byte) (int, error) { return r.body.Write(p) }

// writeResponse sends a recorded response on w, over whatever headers the
// handlers in front of this one set.
func writeResponse(w http.ResponseWriter, resp response) {
	h := w.Header()
	for k, v := range resp.header {
		h[k] = v
	}
	if bodyAllowed(resp.status) {
		h.Set("Content-Length", strconv.Itoa(len(resp.body)))
	} else {
		h.Del("Content-Length")
	}
	w.WriteHeader(resp.status)
	if bodyAllowed(resp.status) {
		_, _ = w.Write(resp.body)
	}
}

// replay answers a retry with the recorded response.
func replay(w http.ResponseWriter, found lookup) error {
	w.Header().Set(headerReplayed, "true")
	setOriginal(w, found.requestID)
	writeResponse(w, found.resp)
	return nil
}

func setOriginal(w http.ResponseWriter, requestID string) {
	if requestID != "" {
		w.Header().Set(headerOriginalRequestID, requestID)
	}
}

func describeOriginal(found lookup) string {
	s := "status " + strconv.Itoa(found.resp.status)
	if found.requestID != "" {
		s = "request " + found.requestID + ", " + s
	}
	return s
}

// applies reports whether keys are honoured for method.
func (h *Handler) applies(method string) bool {
	for _, m := range h.methods {
		if m == method {
			return true
		}
	}
	return false
}

// scope is the key space of the caller: organisation and environment, so
// one tenant's key can never replay another's response, and sandbox and
// live never mix (DESIGN §9).
func (h *Handler) scope(repl *caddy.Replacer) (string, bool) {
	if org, _ := repl.GetString(placeholderOrg); org != "" {
		env := "test"
		if live, _ := repl.GetString(placeholderLivemode); live == "true" {
			env = "live"
		} else if live != "false" && live != "" {
			env = live
		}
		return org + ":" + env, true
	}
	if h.FallbackScope != "" {
		return "fallback:" + h.FallbackScope, true
	}
	return "", false
}

// requestID is the id the request_id handler gave this request.
func requestID(w http.ResponseWriter, repl *caddy.Replacer) string {
	if id := w.Header().Get(headerRequestID); id != "" {
		return id
	}
	id, _ := repl.GetString("http.request_id")
	return id
}

// readBody reads the whole request body (it is part of the fingerprint),
// bounded by limit. A nil result means there was no body to read.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	tooLarge := refuse(apierror.New(http.StatusRequestEntityTooLarge, apierror.TypeInvalidRequest, "body_too_large",
		fmt.Sprintf("The request body is larger than the %d bytes accepted with an Idempotency-Key.", limit)))
	if r.ContentLength > limit {
		return nil, tooLarge
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	n, err := buf.ReadFrom(io.LimitReader(r.Body, limit+1))
	if err != nil {
		var mbe *http.MaxBytesError
		var he caddyhttp.HandlerError
		if errors.As(err, &mbe) || (errors.As(err, &he) && he.StatusCode == http.StatusRequestEntityTooLarge) {
			return nil, refuse(apierror.New(http.StatusRequestEntityTooLarge, apierror.TypeInvalidRequest, "body_too_large",
				"The request body is larger than this endpoint accepts."))
		}
		return nil, refuse(apierror.InvalidRequest("body_invalid", "", "The request body could not be read."))
	}
	if n > limit {
		return nil, tooLarge
	}
	if n == 0 {
		return []byte{}, nil // read, and empty: still to be restored
	}
	return buf.Bytes(), nil
}

// restoreBody gives the upstream the body that was read, with a known
// length: a chunked request is forwarded with Content-Length.
func restoreBody(r *http.Request, body []byte) {
	if body == nil {
		return
	}
	r.ContentLength = int64(len(body))
	r.TransferEncoding = nil
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	r.Body, _ = r.GetBody()
	if len(body) == 0 {
		r.Body = http.NoBody
	}
}

// refuse wraps an error object so Caddy knows its status (logs, handle_errors)
// and the request_id handler can still render it with errors.As.
func refuse(err error) error {
	return caddyhttp.Error(apierror.From(err).Status, err)
}

func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func countOutcome(o string) { metrics.requests.WithLabelValues(o).Inc() }
func countRecord(r string)  { metrics.records.WithLabelValues(r).Inc() }

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
