// Package events is the gateway's `emit_events` handler
// (http.handlers.emit_events): it turns the responses of a backend that
// knows nothing of events into platform events (DESIGN §7, §8), without
// changing the backend or the response.
//
// Rules name a method, a path pattern, the successful statuses and the event
// type, e.g. POST /v1/customers 2xx → customer.created. For a request that a
// rule could match, the handler keeps the response body (up to
// max_response_size) and once the response is complete produces a
// wire.Event whose data.object is the response JSON, with the
// organisation, environment, API version, request id and idempotency key
// from the placeholders of the api_key, request_id and idempotency
// handlers. Events go to an outbox shared by every handler with the same
// spool directory, in write-through mode: each is written to the spool
// file before the response that announced it is released to the client
// (holdback holds it until then; responses no rule wants stream
// untouched). So a client that saw a success can count on its event and
// webhooks even if the gateway is killed the next instant; the cost is a
// write(2) per event, and a request never waits for Kafka. If the backend's
// response breaks off, nothing held is sent: the client sees the request
// fail, not a success without an event.
//
// No event is produced for: a response outside the rule's statuses, an
// idempotent replay ({http.idempotency.replayed} or the response header
// Idempotent-Replayed: true — the original request already produced it), a
// body larger than max_response_size or a stream (server-sent events), a
// body that is not a JSON object
// (compressed with anything but gzip, empty, an array…), or a request
// without an authenticated organisation. Each such skip is counted in
// caddy_gatehouse_events_skipped_total{reason}; the misconfigurations are
// logged as warnings. Produced events are counted in
// caddy_gatehouse_events_emitted_total{type}; the outbox behind them in
// caddy_gatehouse_events_{sent,spooled,dropped}_total and
// caddy_gatehouse_events_spool_bytes.
//
// The handler must run inside api_key, request_id and idempotency (so that
// their placeholders are set and replays never reach it) and wrap the
// reverse_proxy.
package events

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/gatehouse/gatehouse/caddymodule/internal/holdback"
	"github.com/gatehouse/gatehouse/internal/apiversion"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/outbox"
	"github.com/gatehouse/gatehouse/internal/redact"
	"github.com/gatehouse/gatehouse/internal/wire"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Defaults and limits of the configuration.
const (
	// DefaultMaxResponseSize matches the largest data POST /v1/events
	// accepts, so events from either source have the same bounds.
	DefaultMaxResponseSize = 256 << 10

	// DefaultFinishTimeout is how long a request a rule could announce
	// keeps running after its client hung up.
	DefaultFinishTimeout = 30 * time.Second

	// MaxResponseSizeLimit keeps an event (data plus its envelope) under
	// Kafka's default message.max.bytes of 1 MiB: a message the broker
	// refuses would stall the outbox behind it.
	MaxResponseSizeLimit = 1_000_000
	maxTypeLen           = 100
)

// Placeholders read on the request path, set by the other Gatehouse handlers.
const (
	placeholderOrg            = "http.auth.api_key.org_id"
	placeholderLivemode       = "http.auth.api_key.livemode"
	placeholderAPIVersion     = "http.api_version"
	placeholderRequestID      = "http.request_id"
	placeholderIdempotencyKey = "http.idempotency.key"
	placeholderReplayed       = "http.idempotency.replayed"
	headerReplayed            = "Idempotent-Replayed"
)

// Handler emits events for matching responses.
type Handler struct {
	// Brokers are the Kafka bootstrap addresses (host:port). Each entry may
	// be a placeholder such as {env.KAFKA_BROKERS} and may hold several
	// comma-separated addresses. Default: the KAFKA_BROKERS environment
	// variable, else 127.0.0.1:9092.
	Brokers []string `json:"brokers,omitempty"`

	// SpoolDir is where events wait on disk while Kafka is unreachable.
	// Placeholders are expanded. It must not be shared with another
	// module's producer (request_log has its own). Handlers with the same
	// spool directory share one producer, which survives config reloads.
	// Default: $DATA_DIR/spool/events, or <Caddy data dir>/gatehouse/spool/events
	// when DATA_DIR is unset.
	SpoolDir string `json:"spool_dir,omitempty"`

	// Topic receives the events; placeholders are expanded when the config
	// loads (e.g. {env.KAFKA_TOPIC_EVENTS}). Default: platform.events.v1.
	Topic string `json:"topic,omitempty"`

	// MaxResponseSize is the largest response body, in bytes, that can
	// become an event; a larger one passes to the client untouched and
	// produces no event. Default 256 KiB (262144), at most 1 MB (1000000).
	MaxResponseSize int64 `json:"max_response_size,omitempty"`

	// FinishTimeout is how long a request a rule could announce keeps
	// running after its client hung up. The backend may already be
	// creating the customer; cancelling its request then would lose the
	// answer, and so the event, of work the backend did. 0 means the
	// default, 30s; a deadline set before this handler (idempotency's)
	// still holds.
	FinishTimeout caddy.Duration `json:"finish_timeout,omitempty"`

	// Rules say which responses become which events. The first rule whose
	// method, path and status match the request decides; at least one is
	// required.
	Rules []Rule `json:"rules,omitempty"`

	rules    []rule
	producer *outbox.Producer
	poolKey  string
	topic    string // Topic expanded
	logger   *zap.Logger
	now      func() time.Time
}

// Rule maps successful responses of one route to an event type.
type Rule struct {
	// Method is the request method in upper case: POST, PUT, PATCH, DELETE
	// or GET.
	Method string `json:"method"`

	// Path is the path pattern: literal segments and {name} segments, each
	// of which matches exactly one non-empty segment, e.g.
	// /v1/customers/{id}. It is matched against the path as it reaches this
	// handler (after any rewrite before it), as Caddy's path matchers match:
	// cleaned (//, a trailing /, . and .. segments) and literal segments
	// without regard to case.
	Path string `json:"path"`

	// Status selects the responses: "2xx" (any success) or one success
	// code such as "201". Events come only from successful responses.
	// Default "2xx".
	Status string `json:"status,omitempty"`

	// Type is the event type: lower-case dotted words such as
	// customer.created (letters and '_', at least one '.', at most 100
	// characters), as POST /v1/events requires.
	Type string `json:"type"`
}

// rule is a validated Rule, ready to match.
type rule struct {
	Rule
	segments []string // "" for a {name} wildcard
	status   int      // 0 for any 2xx
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.emit_events",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision compiles the rules, fills the defaults and acquires the shared
// producer, which starts sending at once.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.now = time.Now
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("emit_events: registering metrics: %w", err)
	}
	h.topic = caddy.NewReplacer().ReplaceAll(h.Topic, "")
	if h.topic == "" {
		h.topic = wire.TopicEvents
	}
	if h.MaxResponseSize == 0 {
		h.MaxResponseSize = DefaultMaxResponseSize
	}
	if h.FinishTimeout == 0 {
		h.FinishTimeout = caddy.Duration(DefaultFinishTimeout)
	}
	h.rules = h.rules[:0]
	for i, r := range h.Rules {
		cr, err := compileRule(r)
		if err != nil {
			return fmt.Errorf("emit_events: rule %d: %w", i+1, err)
		}
		h.rules = append(h.rules, cr)
	}

	repl := caddy.NewReplacer()
	var brokers []string
	for _, b := range h.Brokers {
		brokers = append(brokers, repl.ReplaceAll(b, ""))
	}
	brokers = config.BrokerSet(brokers...)
	if len(h.Brokers) == 0 {
		brokers = config.KafkaBrokers()
	}
	if len(brokers) == 0 {
		return fmt.Errorf("emit_events: brokers %v expand to no address", h.Brokers)
	}
	dir := repl.ReplaceAll(h.SpoolDir, "")
	if dir == "" {
		base := os.Getenv("DATA_DIR")
		if base == "" {
			base = filepath.Join(caddy.AppDataDir(), "gatehouse")
		}
		dir = filepath.Join(base, "spool", "events")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("emit_events: spool_dir: %w", err)
	}
	p, err := acquireProducer(dir, brokers, h.logger)
	if err != nil {
		return fmt.Errorf("emit_events: %w", err)
	}
	h.producer, h.poolKey = p, dir
	return nil
}

// Validate checks the configuration.
func (h *Handler) Validate() error {
	if len(h.Rules) == 0 {
		return errors.New("emit_events: no rules; add at least one `on <METHOD> <path> [<status>] <type>`")
	}
	if h.MaxResponseSize < 0 || h.MaxResponseSize > MaxResponseSizeLimit {
		return fmt.Errorf("emit_events: max_response_size must be between 1 and %d bytes (Kafka's default message limit is 1 MiB), got %d",
			MaxResponseSizeLimit, h.MaxResponseSize)
	}
	if h.FinishTimeout < 0 {
		return fmt.Errorf("emit_events: finish_timeout must not be negative, got %v", time.Duration(h.FinishTimeout))
	}

	var earlier []rule
	for i, r := range h.Rules {
		cr, err := compileRule(r)
		if err != nil {
			return fmt.Errorf("emit_events: rule %d: %w", i+1, err)
		}
		for j, er := range earlier {
			switch {
			case er.key() == cr.key():
				return fmt.Errorf("emit_events: rule %d (%s %s %s) repeats rule %d: the first would always win",
					i+1, r.Method, r.Path, cr.statusText(), j+1)
			case er.covers(cr):
				return fmt.Errorf("emit_events: rule %d (%s %s %s) can never apply: rule %d (%s %s %s) comes first and matches every response it would",
					i+1, r.Method, r.Path, cr.statusText(), j+1, er.Method, er.Path, er.statusText())
			}
		}
		earlier = append(earlier, cr)
	}
	if topic := cmp.Or(h.topic, h.Topic); topic != "" { // expanded once provisioned
		if err := wire.CheckTopic(topic); err != nil {
			return fmt.Errorf("emit_events: %w", err)
		}
	}
	return nil
}

// Cleanup releases the shared producer; the last user stops it, which
// spools whatever Kafka did not take yet.
func (h *Handler) Cleanup() error {
	if h.poolKey == "" {
		return nil
	}
	key := h.poolKey
	h.poolKey = "" // Caddy may call Cleanup again after a failed Validate
	_, err := producers.Delete(key)
	return err
}

// ServeHTTP passes the request on and, when a rule may apply, holds the
// response back to turn it into an event once it is complete.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	candidates := h.candidates(r)
	if len(candidates) == 0 || r.Context().Err() != nil {
		// (A client gone before the backend was asked starts no work.)
		return next.ServeHTTP(w, r)
	}
	ctx, done := outliveClient(r.Context(), time.Duration(h.FinishTimeout))
	defer done()
	r = r.WithContext(ctx)
	// The response a rule wants is held until its event is written: a
	// client that saw a success can count on its event.
	buf := holdback.GetBuffer()
	defer holdback.PutBuffer(buf) // after the release: the event copied what it needs
	hw := holdback.New(w, buf, h.MaxResponseSize, func(status int) bool {
		return slices.ContainsFunc(candidates, func(cr *rule) bool { return cr.matchStatus(status) })
	})
	panicked, stack, err := holdback.Serve(next, hw, r)
	switch {
	case panicked == http.ErrAbortHandler && !hw.Streamed:
		// The backend broke off a response still held: nothing of it
		// reached the client, which gets the 502 of a failed proxying
		// instead of a dropped connection. Nothing to announce.
		hw.Drop()
		return caddyhttp.Error(http.StatusBadGateway, errBrokenOff)
	case panicked != nil:
		if stack != nil { // a bug behind this handler: where it happened, not here
			h.logger.Error("panic behind emit_events", zap.Any("panic", panicked), zap.ByteString("stack", stack))
		}
		panic(panicked) // under way to the client (or a bug): abort it, as the proxy intended
	case err != nil:
		// The request failed: nothing to announce, and nothing held is
		// sent, so the error handler's answer is the only one.
		hw.Drop()
		return err
	}
	status := hw.Status
	if status == 0 {
		status = http.StatusOK // nothing written: net/http sends an empty 200
	}
	for _, cr := range candidates {
		if cr.matchStatus(status) {
			h.emit(w, r, hw, cr)
			break
		}
	}
	hw.Release()
	return nil
}

var errBrokenOff = errors.New("the upstream broke off its response")

// outliveClient returns a context for a request's way to the backend that
// is not cancelled when the client hangs up, only grace later. It keeps a
// deadline parent already has. done must be called when the request is
// finished.
func outliveClient(parent context.Context, grace time.Duration) (ctx context.Context, done func()) {
	var cancel context.CancelFunc
	if dl, ok := parent.Deadline(); ok {
		ctx, cancel = context.WithDeadline(context.WithoutCancel(parent), dl)
	} else {
		ctx, cancel = context.WithCancel(context.WithoutCancel(parent))
	}
	stop := context.AfterFunc(parent, func() {
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-t.C:
			cancel()
		case <-ctx.Done():
		}
	})
	return ctx, func() { stop(); cancel() }
}

// candidates are the rules whose method and path match r, in order.
func (h *Handler) candidates(r *http.Request) []*rule {
	var out []*rule
	var segs []string
	for i := range h.rules {
		cr := &h.rules[i]
		if cr.Method != r.Method {
			continue
		}
		if segs == nil {
			segs = pathSegments(r.URL)
		}
		if cr.matchPath(segs) {
			out = append(out, cr)
		}
	}
	return out
}

// emit builds and queues the event for a completed, matching response.
func (h *Handler) emit(w http.ResponseWriter, r *http.Request, hw *holdback.Writer, cr *rule) {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl == nil {
		repl = caddy.NewReplacer()
	}
	get := func(key string) string {
		v, _ := repl.GetString(key)
		return v
	}
	requestID := get(placeholderRequestID)
	if get(placeholderReplayed) == "true" || w.Header().Get(headerReplayed) == "true" {
		skipped(reasonReplayed)
		return
	}
	warn := func(reason, msg string, fields ...zap.Field) {
		skipped(reason)
		if ce := h.logger.Check(zapcore.WarnLevel, msg); ce != nil {
			ce.Write(append(fields, zap.String("event_type", cr.Type), zap.String("request_id", requestID),
				zap.String("method", r.Method), zap.String("path", redact.LogPath(r)))...)
		}
	}
	org := get(placeholderOrg)
	live := get(placeholderLivemode)
	if org == "" || (live != "true" && live != "false") {
		warn(reasonNoIdentity, "no event: the request has no authenticated organisation; put emit_events after api_key")
		return
	}
	if hw.Streamed {
		warn(reasonTooLarge, "no event: response body larger than max_response_size, or a stream",
			zap.Int64("max_response_size", h.MaxResponseSize))
		return
	}
	body, err := decoded(hw.Header(), hw.Body(), h.MaxResponseSize)
	if err != nil {
		reason := reasonNotJSON
		if errors.Is(err, errTooLarge) {
			reason = reasonTooLarge
		} else if errors.Is(err, errEncoding) {
			reason = reasonEncoding
		}
		warn(reason, "no event: "+err.Error())
		return
	}
	var obj bytes.Buffer
	if err := json.Compact(&obj, body); err != nil || obj.Len() == 0 || obj.Bytes()[0] != '{' {
		warn(reasonNotJSON, "no event: the response body is not a JSON object",
			zap.String("content_type", w.Header().Get("Content-Type")))
		return
	}
	// What the event ingester and the deliverer would refuse as malformed
	// is refused here, where it is counted and logged, rather than emitted
	// and silently dropped downstream.
	if !utf8.Valid(obj.Bytes()) {
		warn(reasonNotStored, "no event: the response body is not valid UTF-8")
		return
	}
	if err := wire.CheckJSONB(obj.Bytes()); err != nil {
		warn(reasonNotStored, "no event: the platform cannot store the response body", zap.Error(err))
		return
	}
	version := get(placeholderAPIVersion)
	if version == "" {
		version = w.Header().Get(apiversion.Header)
	}
	if version == "" {
		version = apiversion.Latest()
	}
	now := h.now()
	ev := wire.Event{
		V: 1, ID: ids.NewAt(ids.Event, now), OrganizationID: org, Livemode: live == "true",
		Type: cr.Type, Created: now.Unix(), APIVersion: version,
		Data:      json.RawMessage(`{"object":` + obj.String() + `}`),
		RequestID: requestID, IdempotencyKey: get(placeholderIdempotencyKey),
	}
	value, err := encodeEvent(ev)
	if err != nil {
		warn(reasonNotJSON, "no event: encoding it failed", zap.Error(err))
		return
	}
	h.producer.Enqueue(outbox.Message{Topic: h.topic, Key: []byte(org), Value: value})
	metrics.emitted.WithLabelValues(cr.Type).Inc()
	if ce := h.logger.Check(zapcore.DebugLevel, "event emitted"); ce != nil {
		ce.Write(zap.String("event_id", ev.ID), zap.String("event_type", ev.Type), zap.String("request_id", requestID))
	}
}

// encodeEvent is json.Marshal without HTML escaping: escaping would turn
// each <, > or & of the response into six bytes, and the message could
// outgrow what Kafka accepts.
func encodeEvent(ev wire.Event) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(ev); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// Errors of decoded.
var (
	errTooLarge = errors.New("the decompressed response body is larger than max_response_size")
	errEncoding = errors.New("the response body has a Content-Encoding other than gzip")
)

// decoded is a held body without its content encoding.
func decoded(header http.Header, body []byte, limit int64) ([]byte, error) {
	switch enc := strings.ToLower(strings.TrimSpace(header.Get("Content-Encoding"))); enc {
	case "", "identity":
		return body, nil
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("the gzip response body is corrupt: %w", err)
		}
		out, err := io.ReadAll(io.LimitReader(zr, limit+1))
		if err != nil {
			return nil, fmt.Errorf("the gzip response body is corrupt: %w", err)
		}
		if int64(len(out)) > limit {
			return nil, errTooLarge
		}
		return out, nil
	default:
		return nil, fmt.Errorf("%w (%s)", errEncoding, enc)
	}
}

// typePattern is the event type grammar of controlplane/events.ValidType;
// the two must agree, or the gateway would emit events the control plane
// refuses to store.
var typePattern = regexp.MustCompile(`^[a-z_]+(\.[a-z_]+)+$`)

var (
	wildcardPattern = regexp.MustCompile(`^\{[a-z_][a-z0-9_]*\}$`)
	ruleMethods     = []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodGet}
)

// compileRule validates r; its errors are the messages a user sees.
// covers reports whether every response b matches is matched by r too:
// the same method, each of r's segments a wildcard or b's, and r's status
// any 2xx or b's.
func (r rule) covers(b rule) bool {
	if r.Method != b.Method || len(r.segments) != len(b.segments) || r.status != 0 && r.status != b.status {
		return false
	}
	for i, s := range r.segments {
		if s != "" && !strings.EqualFold(s, b.segments[i]) {
			return false
		}
	}
	return true
}

func compileRule(r Rule) (rule, error) {
	cr := rule{Rule: r}
	if !slices.Contains(ruleMethods, r.Method) {
		return cr, fmt.Errorf("method %q: use one of %s (upper case)", r.Method, strings.Join(ruleMethods, ", "))
	}
	if !strings.HasPrefix(r.Path, "/") {
		return cr, fmt.Errorf("path %q must start with /", r.Path)
	}
	names := map[string]bool{}
	for _, seg := range strings.Split(strings.TrimPrefix(r.Path, "/"), "/") {
		switch {
		case seg == "":
			return cr, fmt.Errorf("path %q has an empty segment (a doubled or trailing /)", r.Path)
		case seg == "." || seg == "..":
			return cr, fmt.Errorf("path %q has a %s segment: requests are matched cleaned, so it could never match", r.Path, seg)
		case strings.ContainsAny(seg, "{}"):
			if !wildcardPattern.MatchString(seg) {
				return cr, fmt.Errorf("path %q: segment %q must be a whole {name} (lower case letters, digits, _), or contain no braces", r.Path, seg)
			}
			if names[seg] {
				return cr, fmt.Errorf("path %q names %s twice", r.Path, seg)
			}
			names[seg] = true
			cr.segments = append(cr.segments, "")
		case strings.ContainsAny(seg, "*?#% "):
			return cr, fmt.Errorf("path %q: segment %q may not contain *, ?, #, %% or spaces; use {name} for a variable segment", r.Path, seg)
		default:
			cr.segments = append(cr.segments, seg)
		}
	}
	switch s := r.Status; {
	case s == "" || s == "2xx":
	default:
		n, err := strconv.Atoi(s)
		if err != nil || len(s) != 3 {
			return cr, fmt.Errorf("status %q: use 2xx or a success code such as 201", s)
		}
		if n < 200 || n > 299 {
			return cr, fmt.Errorf("status %d is not a success: events come only from 2xx responses", n)
		}
		if n == http.StatusNoContent || n == http.StatusResetContent {
			return cr, fmt.Errorf("status %d has no body, and an event is made from a JSON object body: the rule could never apply", n)
		}
		cr.status = n
	}
	if len(r.Type) > maxTypeLen || !typePattern.MatchString(r.Type) {
		return cr, fmt.Errorf("event type %q: use lower-case dotted words such as customer.created (letters and _, at least one '.', at most %d characters)", r.Type, maxTypeLen)
	}
	return cr, nil
}

// pathSegments splits u's path into its segments, each unescaped on its
// own as Go's ServeMux and most routers match them: /v1/%63ustomers reaches
// the backend's /v1/customers route and must match its rule, while an
// escaped slash (cus%2F1) stays within its segment. The path is cleaned as
// Caddy's path matchers clean it, which let //v1/customers, /v1/customers/
// and /v1/./customers through to a backend that may route them as
// /v1/customers: empty and . segments go, .. removes the one before; an
// escaped dot (%2E%2E) is a segment's name, as it is to such a backend.
// (Events come only from 2xx answers, so a backend that refuses such a
// path announces nothing.)
func pathSegments(u *url.URL) []string {
	segs := strings.Split(strings.TrimPrefix(u.EscapedPath(), "/"), "/")
	out := segs[:0]
	for _, s := range segs {
		switch s {
		case "", ".":
			continue
		case "..":
			out = out[:max(len(out)-1, 0)]
			continue
		}
		if strings.IndexByte(s, '%') >= 0 {
			if un, err := url.PathUnescape(s); err == nil {
				s = un
			}
		}
		out = append(out, s)
	}
	return out
}

func (cr *rule) matchPath(segs []string) bool {
	if len(segs) != len(cr.segments) {
		return false
	}
	for i, s := range cr.segments {
		if s == "" {
			if segs[i] == "" {
				return false
			}
		} else if !strings.EqualFold(segs[i], s) {
			return false
		}
	}
	return true
}

func (cr *rule) matchStatus(status int) bool {
	if cr.status == 0 {
		return status >= 200 && status <= 299
	}
	return status == cr.status
}

func (cr *rule) statusText() string {
	if cr.status == 0 {
		return "2xx"
	}
	return strconv.Itoa(cr.status)
}

// key identifies what a rule matches, so that duplicates are found whatever
// the wildcards are called.
func (cr *rule) key() string {
	return cr.Method + " /" + strings.Join(cr.segments, "/") + " " + cr.statusText()
}

// producers holds one outbox per spool directory: two producers on one
// directory would corrupt it, and a shared one survives config reloads.
var producers = caddy.NewUsagePool()

type sharedProducer struct {
	brokers string
	p       *outbox.Producer
	sender  *outbox.KafkaSender
	cancel  context.CancelFunc
	done    chan struct{}
}

// Destruct stops sending; Run spools what Kafka has not taken.
func (s *sharedProducer) Destruct() error {
	s.cancel()
	<-s.done
	outboxes.Remove(s.p)
	return s.sender.Close()
}

func acquireProducer(dir string, brokers []string, log *zap.Logger) (*outbox.Producer, error) {
	joined := strings.Join(brokers, ",")
	v, loaded, err := producers.LoadOrNew(dir, func() (caddy.Destructor, error) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("creating spool_dir: %w", err)
		}
		sender := outbox.NewKafkaSender(brokers)
		p, err := outbox.New(outbox.Config{Dir: dir, WriteThrough: true, Logger: log.Named("outbox")}, sender)
		if err != nil {
			_ = sender.Close()
			return nil, fmt.Errorf("opening spool %s: %w", dir, err)
		}
		outboxes.Add(p)
		ctx, cancel := context.WithCancel(context.Background())
		s := &sharedProducer{brokers: joined, p: p, sender: sender, cancel: cancel, done: make(chan struct{})}
		go func() {
			defer close(s.done)
			_ = p.Run(ctx)
		}()
		return s, nil
	})
	if err != nil {
		return nil, err
	}
	s := v.(*sharedProducer)
	if loaded && s.brokers != joined {
		_, _ = producers.Delete(dir)
		return nil, fmt.Errorf("spool_dir %s is already used with brokers %s; give handlers with other brokers their own spool_dir "+
			"(a reload cannot move a running spool to other brokers: restart the gateway to change them)", dir, s.brokers)
	}
	return s.p, nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddy.Destructor            = (*sharedProducer)(nil)
)
