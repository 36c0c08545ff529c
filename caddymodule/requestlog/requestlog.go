// Package requestlog is the request_log handler (http.handlers.request_log):
// one redacted record per request through the gateway — who called, what,
// the outcome and its error code, timings, allowlisted headers and, when the
// organisation turned debugging on, capped bodies — sent to Kafka topic
// gateway.request-logs.v1 (DESIGN §7) for the control plane's ingester.
//
// It sits right after request_id, before authentication, so that refusals
// (401, 403, 429) are logged like everything else. Nothing secret leaves the
// gateway: headers pass an allowlist, credentials and keys are masked
// (internal/redact). The request path never waits on Kafka: records go to a
// shared outbox that spools to disk while Kafka is down.
//
// The error type and code of a failed request come from, in order: an error
// the handler chain returned (mapped by errorobject.From, exactly as
// request_id then renders it); the {http.api_error.type} and
// {http.api_error.code} placeholders that errorobject.Write sets for the
// gateway's own refusals; else the response's error object
// ({"error":{"type":…,"code":…}}), read from at most its first 4 KiB,
// gzip or zstd encoded or not. Modules that answer errors need do nothing
// more than use errorobject.Write.
package requestlog

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/klauspost/compress/zstd"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/gatehouse/gatehouse/caddymodule/internal/errorobject"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/outbox"
	"github.com/gatehouse/gatehouse/internal/redact"
	"github.com/gatehouse/gatehouse/internal/wire"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Placeholders this handler reads, set by the modules after it in the
// chain. Any of them may be missing; the record then leaves the field empty.
const (
	PlaceholderRequestID   = "http.request_id"
	PlaceholderOrgID       = "http.auth.api_key.org_id"
	PlaceholderKeyID       = "http.auth.api_key.key_id"
	PlaceholderLivemode    = "http.auth.api_key.livemode" // "true" or "false"
	PlaceholderAPIVersion  = "http.api_version"
	PlaceholderBodyCapture = "http.auth.api_key.body_capture" // "true" when the organisation enabled it for this environment
	PlaceholderAuthRefused = "http.auth.api_key.refused"      // "true" when api_key identified the key, then refused
	PlaceholderRateLimit   = "http.rate_limit.outcome"
	PlaceholderIdemKey     = "http.idempotency.key"
	PlaceholderIdemReplay  = "http.idempotency.replayed" // "true" or "false"
	PlaceholderUpstream    = "http.reverse_proxy.upstream.latency"
)

// Defaults of the configuration.
const (
	DefaultMaxBodyCapture = 8 << 10
	// MaxMaxBodyCapture bounds max_body_capture: records travel through
	// Kafka and sit in Postgres, and 1 MB is the API's body limit anyway.
	MaxMaxBodyCapture = 1 << 20
	// errorPeek is how much of an error response is kept to read its error
	// object's type and code.
	errorPeek = 4 << 10
	// anonymous is the Kafka key of requests without an organisation.
	anonymous = "anonymous"
)

// Handler logs requests. Its exported fields are its JSON configuration.
type Handler struct {
	// Brokers are the Kafka bootstrap brokers as host:port. An entry may
	// hold several, comma-separated, so that {env.KAFKA_BROKERS} works;
	// placeholders are expanded when the config loads. Default: the
	// KAFKA_BROKERS environment variable, else 127.0.0.1:9092.
	Brokers []string `json:"brokers,omitempty"`
	// Topic receives the records. Default gateway.request-logs.v1.
	Topic string `json:"topic,omitempty"`
	// SpoolDir is where records wait on disk while Kafka cannot take them
	// (one subdirectory per set of brokers; what another set's holds, after
	// a restart with other brokers, is sent to the new ones once they take
	// a record). Default {env.DATA_DIR}/spool/request-logs,
	// or <temp dir>/gatehouse/spool/request-logs when DATA_DIR is unset.
	// Each gateway process needs its own.
	SpoolDir string `json:"spool_dir,omitempty"`
	// SpoolLimit is the spool's size limit in bytes; past it records are
	// dropped and counted. Default 1 GiB.
	SpoolLimit int64 `json:"spool_limit,omitempty"`
	// MemoryLimit is how many records wait in memory before going to the
	// spool. Default 20000.
	MemoryLimit int `json:"memory_limit,omitempty"`
	// RedactQuery names query parameters whose values are redacted, in
	// addition to redact.DefaultQueryParams (api_key, key, token, secret,
	// password, access_token).
	RedactQuery []string `json:"redact_query,omitempty"`
	// RedactFields names body fields whose values are redacted, in addition
	// to redact.DefaultFields (password, secret, token, api_key, card_number,
	// cvc, ssn, …). Names match case-insensitively, ignoring _ and -, as
	// substrings.
	RedactFields []string `json:"redact_fields,omitempty"`
	// Headers are request and response headers kept, in addition to
	// redact.DefaultHeaders. Authorization, Cookie, Set-Cookie and the
	// other redact.SecretHeaders are always masked.
	Headers []string `json:"headers,omitempty"`
	// Routes are route templates such as /v1/customers/{id}; a request's
	// route is the most specific template matching its path, else the path
	// with id-looking segments replaced by {id}.
	Routes []string `json:"routes,omitempty"`
	// MaxBodyCapture is how many bytes of each body are kept when the
	// organisation enabled body capture ({http.auth.api_key.body_capture}
	// is "true"). Default 8 KiB, at most 1 MiB.
	MaxBodyCapture int `json:"max_body_capture,omitempty"`
	// OmitUpstreamErrorMessages leaves out the message of an error object
	// the upstream wrote (its type, code and param are still kept), for a
	// backend that may put customer data in its messages. The gateway's
	// own messages are always kept.
	OmitUpstreamErrorMessages bool `json:"omit_upstream_error_messages,omitempty"`

	redactor  *redact.Redactor
	templates []template
	brokers   []string
	topic     string
	spoolDir  string
	producer  *sharedProducer
	released  bool
	logger    *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.request_log",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets defaults, registers the metrics and acquires the shared
// producer.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	repl := caddy.NewReplacer()
	h.brokers = nil
	for _, b := range h.Brokers {
		h.brokers = append(h.brokers, repl.ReplaceAll(b, ""))
	}
	if h.brokers = config.BrokerSet(h.brokers...); len(h.brokers) == 0 {
		// Like every other process of the platform (internal/config).
		h.brokers = config.KafkaBrokers()
	}
	h.topic = repl.ReplaceAll(h.Topic, "")
	if h.topic == "" {
		h.topic = wire.TopicRequestLogs
	}
	h.spoolDir = repl.ReplaceAll(h.SpoolDir, "")
	if h.spoolDir == "" {
		if dir := os.Getenv("DATA_DIR"); dir != "" {
			h.spoolDir = filepath.Join(dir, "spool", "request-logs")
		} else {
			h.spoolDir = filepath.Join(os.TempDir(), "gatehouse", "spool", "request-logs")
		}
	}
	// One spelling per directory ("x/", "./x", "x"): handlers sharing a
	// spool must share its producer, as one process may hold it.
	dir, err := filepath.Abs(h.spoolDir)
	if err != nil {
		return fmt.Errorf("request_log: spool_dir: %w", err)
	}
	h.spoolDir = dir
	if h.MaxBodyCapture == 0 {
		h.MaxBodyCapture = DefaultMaxBodyCapture
	}
	h.templates = nil
	for _, r := range h.Routes {
		t, err := parseTemplate(r)
		if err != nil {
			return fmt.Errorf("request_log: %w", err)
		}
		h.templates = append(h.templates, t)
	}
	h.redactor = redact.New(redact.Config{Headers: h.Headers, QueryParams: h.RedactQuery, Fields: h.RedactFields})
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("request_log: registering metrics: %w", err)
	}
	p, err := acquireProducer(h.brokers, h.spoolDir, h.MemoryLimit, h.SpoolLimit, h.logger)
	if err != nil {
		return fmt.Errorf("request_log: opening the spool in %s: %w", h.spoolDir, err)
	}
	h.producer = p
	return nil
}

// Validate checks the configuration.
func (h *Handler) Validate() error {
	switch {
	case h.MaxBodyCapture < 0 || h.MaxBodyCapture > MaxMaxBodyCapture:
		return fmt.Errorf("request_log: max_body_capture must be between 0 and %d bytes", MaxMaxBodyCapture)
	case h.MemoryLimit < 0:
		return errors.New("request_log: memory_limit must not be negative")
	case h.SpoolLimit < 0:
		return errors.New("request_log: spool_limit must not be negative")
	}
	if topic := cmp.Or(h.topic, h.Topic); topic != "" { // expanded once provisioned
		if err := wire.CheckTopic(topic); err != nil {
			return fmt.Errorf("request_log: %w", err)
		}
	}
	return nil
}

// Cleanup releases the shared producer; the last handler to let go stops
// it, and whatever Kafka has not taken stays in the spool.
func (h *Handler) Cleanup() error {
	// Caddy cleans up an old config while its requests may still be in
	// flight (a reload does not wait for them), so the producer stays set:
	// only the pool reference is released, once.
	if h.producer == nil || h.released {
		return nil
	}
	h.released = true
	return releaseProducer(h.brokers, h.spoolDir)
}

// exchange is what is kept of the request as it arrived, before the
// handlers after this one change it (rewrites, header stripping).
type exchange struct {
	start          time.Time
	method         string
	requestURI     string
	path           string
	userAgent      string
	idemKey        string
	contentType    string
	contentLength  int64
	requestHeaders map[string]string
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	ex := exchange{
		start: time.Now(), method: r.Method, requestURI: r.RequestURI, path: r.URL.EscapedPath(),
		userAgent: r.Header.Get("User-Agent"), idemKey: r.Header.Get("Idempotency-Key"),
		contentType: r.Header.Get("Content-Type"), contentLength: r.ContentLength,
		requestHeaders: h.redactor.Headers(r.Header),
	}
	if ex.requestURI == "" {
		ex.requestURI = r.URL.RequestURI()
	}
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	var body *bodyTee
	if r.Body != nil && r.Body != http.NoBody {
		body = &bodyTee{ReadCloser: r.Body, repl: repl, max: h.MaxBodyCapture}
		r.Body = body
	}
	rec := &recorder{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, repl: repl, maxBody: h.MaxBodyCapture}

	finished := false
	defer func() {
		if !finished { // a handler panicked; log the 500 the server will answer
			h.emit(r, repl, &ex, rec, body, errPanicked)
		}
	}()
	err := next.ServeHTTP(rec, r)
	finished = true
	h.emit(r, repl, &ex, rec, body, err)
	return err
}

var errPanicked = errors.New("handler panicked")

// emit builds the record and queues it; it never blocks on Kafka.
func (h *Handler) emit(r *http.Request, repl *caddy.Replacer, ex *exchange, rec *recorder, body *bodyTee, err error) {
	duration := time.Since(ex.start)
	get := func(key string) string {
		if repl == nil {
			return ""
		}
		s, _ := repl.GetString(key)
		return s
	}
	l := wire.RequestLog{
		V:              1,
		RequestID:      get(PlaceholderRequestID),
		Time:           ex.start.UnixMicro(),
		OrganizationID: redact.Text(get(PlaceholderOrgID), 64),
		Livemode:       get(PlaceholderLivemode) == "true",
		APIKeyID:       redact.Text(get(PlaceholderKeyID), 64),
		Method:         redact.Text(ex.method, 32),
		Path:           h.redactor.Path(ex.requestURI),
		DurationUS:     duration.Microseconds(),
		BytesOut:       rec.bytes,
		UserAgent:      redact.Text(h.redactor.String(ex.userAgent), redact.MaxUserAgent),
		APIVersion:     redact.Text(get(PlaceholderAPIVersion), 32),
		RateLimit:      redact.Text(get(PlaceholderRateLimit), 128),
		RequestHeaders: ex.requestHeaders,
	}
	if l.RequestID == "" {
		l.RequestID = rec.Header().Get("Request-Id")
	}
	if !ids.Valid(l.RequestID, ids.Request) {
		// Without request_id before it, the record still needs a time-ordered id.
		l.RequestID = ids.NewAt(ids.Request, ex.start)
	}
	if l.APIVersion == "" {
		l.APIVersion = redact.Text(rec.Header().Get("Api-Version"), 32)
	}
	routeStr, configured := route(h.templates, ex.path)
	if !configured {
		routeStr = h.redactor.Path(routeStr)
	}
	l.Route = routeStr

	idem := get(PlaceholderIdemKey)
	if idem == "" {
		idem = ex.idemKey
	}
	l.IdempotencyKey = redact.Text(h.redactor.String(idem), 255)
	l.Replayed = get(PlaceholderIdemReplay) == "true" || rec.Header().Get("Idempotent-Replayed") == "true"
	if repl != nil {
		if v, ok := repl.Get(PlaceholderUpstream); ok {
			if d, ok := v.(time.Duration); ok {
				l.UpstreamUS = d.Microseconds()
			}
		}
	}
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		l.ClientIP = redact.Text(ip, 64)
	} else if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		l.ClientIP = redact.Text(host, 64)
	}
	l.BytesIn = ex.contentLength
	if n := body.count(); n > 0 || l.BytesIn < 0 {
		l.BytesIn = n
	}

	// The outcome. An error returned by the chain is rendered by request_id,
	// before this handler, exactly as errorobject.ForRequest maps it.
	l.Status = rec.status
	var eo apierror.Error // what the error object said; fields the response left out stay empty
	gatewayErr := false
	switch {
	case rec.wroteHeader:
	case err == nil:
		l.Status = http.StatusOK // nothing written: net/http answers 200
	case r.Context().Err() != nil || isClientClosed(err):
		l.Status = errorobject.StatusClientClosed
	case errors.Is(err, errPanicked):
		eo, gatewayErr = *apierror.Internal(), true
		l.Status = eo.Status
	default:
		eo, gatewayErr = *errorobject.ForRequest(r, err), true
		l.Status = eo.Status
	}
	if l.Status >= 400 && eo.Code == "" {
		// A refusal of one of our modules records its error object here.
		if code := get(errorobject.PlaceholderCode); code != "" {
			eo = apierror.Error{Type: apierror.Type(get(errorobject.PlaceholderType)), Code: code,
				Message: get(errorobject.PlaceholderMessage), Param: get(errorobject.PlaceholderParam)}
			gatewayErr = true
		} else {
			eo = rec.errorObject()
			if h.OmitUpstreamErrorMessages {
				eo.Message = ""
			}
		}
	}
	l.ErrorType, l.ErrorCode = redact.Text(string(eo.Type), 64), redact.Text(eo.Code, 64)
	l.AuthRefused = get(PlaceholderAuthRefused) == "true"
	// The message and param are the API's own diagnostics, which every
	// client sees; they are kept without body capture, cleaned of keys and
	// card numbers like any other string.
	l.ErrorMessage = redact.Text(h.redactor.String(eo.Message), redact.MaxErrorMessage)
	l.ErrorParam = redact.Text(h.redactor.String(eo.Param), redact.MaxErrorParam)
	l.ResponseHeaders = h.redactor.Headers(rec.Header())

	if get(PlaceholderBodyCapture) == "true" {
		if buf, truncated := body.captured(); len(buf) > 0 {
			l.RequestBody = h.redactor.Body(ex.contentType, buf, truncated, h.MaxBodyCapture)
		}
		if buf, truncated := rec.decoded(); len(buf) > 0 {
			l.ResponseBody = h.redactor.Body(rec.Header().Get("Content-Type"), buf, truncated, h.MaxBodyCapture)
		}
	}

	key := l.OrganizationID
	if key == "" {
		key = anonymous
	}
	value, merr := json.Marshal(l)
	// A record must fit in one Kafka message (outbox.MaxMessageBytes; a
	// larger one would be dropped whole). Only captured bodies can outgrow
	// it: two of up to max_body_capture, up to six bytes each once
	// JSON-escaped. Halve the larger until the record fits.
	for merr == nil && len(key)+len(value) > outbox.MaxMessageBytes && (l.RequestBody != "" || l.ResponseBody != "") {
		b := &l.RequestBody
		if len(l.ResponseBody) > len(*b) {
			b = &l.ResponseBody
		}
		*b = redact.Block(*b, len(*b)/2)
		value, merr = json.Marshal(l)
	}
	if merr != nil {
		h.logger.Error("encoding request log", zap.Error(merr))
		return
	}
	h.producer.Enqueue(outbox.Message{Topic: h.topic, Key: []byte(key), Value: value})

	label := derivedRoutes.label(l.Route, configured, l.Status)
	requestsTotal.WithLabelValues(label, statusClass(l.Status)).Inc()
	requestDuration.WithLabelValues(label).Observe(duration.Seconds())
	if gatewayErr && (l.Status == http.StatusUnauthorized || l.Status == http.StatusForbidden) {
		authFailures.WithLabelValues(l.ErrorCode).Inc()
	}
	if l.Status == http.StatusTooManyRequests {
		rateLimited.Inc()
	}
	if c := h.logger.Check(zapcore.DebugLevel, "request logged"); c != nil {
		c.Write(zap.String("request_id", l.RequestID), zap.Int("status", l.Status), zap.String("route", l.Route),
			zap.String("error_code", l.ErrorCode), zap.Int("bytes", len(value)))
	}
}

func isClientClosed(err error) bool {
	he, ok := errors.AsType[caddyhttp.HandlerError](err)
	return ok && he.StatusCode == errorobject.StatusClientClosed
}

// bodyTee counts the request body as the handlers after this one read it,
// and keeps its first bytes when the organisation enabled body capture.
// Whether it did is only known once authentication ran, which is before
// anyone reads the body, so the first Read decides. The transport may still
// be reading when the response is done, hence the lock.
type bodyTee struct {
	io.ReadCloser
	repl *caddy.Replacer
	max  int

	mu      sync.Mutex
	decided bool
	capture bool
	buf     []byte
	n       int64
	eof     bool
}

func (b *bodyTee) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.decided {
		b.decided = true
		b.capture = captureEnabled(b.repl)
	}
	b.n += int64(n)
	if b.capture && len(b.buf) <= b.max {
		b.buf = append(b.buf, p[:min(n, b.max+1-len(b.buf))]...)
	}
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *bodyTee) count() int64 {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// captured is the kept start of the body and whether the body went on.
func (b *bodyTee) captured() ([]byte, bool) {
	if b == nil {
		return nil, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buf) > b.max {
		return b.buf[:b.max], true
	}
	return b.buf, !b.eof
}

func captureEnabled(repl *caddy.Replacer) bool {
	if repl == nil {
		return false
	}
	v, _ := repl.GetString(PlaceholderBodyCapture)
	return v == "true"
}

// recorder notes the status and size of the response, and keeps its first
// bytes when they are needed: the body when capture is on, the error
// object of an error response otherwise.
type recorder struct {
	*caddyhttp.ResponseWriterWrapper
	repl    *caddy.Replacer
	maxBody int

	wroteHeader bool
	status      int
	bytes       int64
	limit       int // bytes to keep; 0 keeps nothing
	buf         []byte
}

func (rec *recorder) WriteHeader(status int) {
	// 1xx are interim, except 101 after which the connection changes hands.
	if !rec.wroteHeader && (status >= 200 || status == http.StatusSwitchingProtocols) {
		rec.started(status)
	}
	rec.ResponseWriter.WriteHeader(status)
}

func (rec *recorder) started(status int) {
	rec.wroteHeader, rec.status = true, status
	if captureEnabled(rec.repl) {
		rec.limit = rec.maxBody
	}
	if status >= 400 && rec.limit < errorPeek && isJSON(rec.Header().Get("Content-Type")) {
		rec.limit = errorPeek
	}
}

func (rec *recorder) Write(b []byte) (int, error) {
	if !rec.wroteHeader {
		rec.started(http.StatusOK)
	}
	rec.keep(b)
	n, err := rec.ResponseWriter.Write(b)
	rec.bytes += int64(n)
	return n, err
}

func (rec *recorder) keep(b []byte) {
	if rec.limit == 0 {
		return
	}
	if room := rec.limit + 1 - len(rec.buf); room > 0 && len(b) > 0 {
		rec.buf = append(rec.buf, b[:min(len(b), room)]...)
	}
}

// ReadFrom keeps the underlying writer's sendfile/splice path when nothing
// needs to be kept of the body.
func (rec *recorder) ReadFrom(r io.Reader) (int64, error) {
	if !rec.wroteHeader {
		rec.started(http.StatusOK)
	}
	if rec.limit > 0 {
		return io.Copy(writerOnly{rec}, r)
	}
	n, err := rec.ResponseWriterWrapper.ReadFrom(r)
	rec.bytes += n
	return n, err
}

// FlushError flushes the underlying writer (http.ResponseController);
// a flush before any write sends a 200.
func (rec *recorder) FlushError() error {
	if !rec.wroteHeader {
		rec.started(http.StatusOK)
	}
	return http.NewResponseController(rec.ResponseWriter).Flush()
}

// writerOnly hides ReadFrom so that io.Copy goes through Write.
type writerOnly struct{ io.Writer }

// decoded is the kept start of the response body, decompressed if the
// response was, and whether the body went on.
func (rec *recorder) decoded() ([]byte, bool) {
	buf, truncated := rec.buf, false
	if len(buf) > rec.limit {
		buf, truncated = buf[:rec.limit], true
	}
	enc := strings.ToLower(strings.TrimSpace(rec.Header().Get("Content-Encoding")))
	if enc == "" || enc == "identity" || len(buf) == 0 {
		return buf, truncated
	}
	var zr io.Reader
	switch enc {
	case "gzip", "x-gzip":
		r, err := gzip.NewReader(bytes.NewReader(buf))
		if err != nil {
			return nil, false
		}
		zr = r
	case "zstd":
		r, err := zstd.NewReader(bytes.NewReader(buf), zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, false
		}
		defer r.Close()
		zr = r
	default:
		return nil, false // br and others: not kept
	}
	// A cut-off stream decodes up to the cut; keep what came out.
	out, err := io.ReadAll(io.LimitReader(zr, int64(rec.limit)+1))
	if len(out) > rec.limit {
		return out[:rec.limit], true
	}
	return out, truncated || err != nil
}

// errorObject reads the type, code, message and param of an error object
// response ({"error": {"type": …, "code": …, "message": …}}), as upstreams
// using apierror answer.
func (rec *recorder) errorObject() apierror.Error {
	if !isJSON(rec.Header().Get("Content-Type")) {
		return apierror.Error{}
	}
	buf, _ := rec.decoded()
	// Only type and code must be strings: an upstream's message or param of
	// another shape (a list of params, say) is left out, not the error.
	var eo struct {
		Error struct {
			Type           apierror.Type
			Code           string
			Message, Param json.RawMessage
		} `json:"error"`
	}
	if json.Unmarshal(buf, &eo) != nil {
		return apierror.Error{}
	}
	e := apierror.Error{Type: eo.Error.Type, Code: eo.Error.Code}
	_ = json.Unmarshal(eo.Error.Message, &e.Message)
	_ = json.Unmarshal(eo.Error.Param, &e.Param)
	return e
}

func isJSON(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ http.ResponseWriter         = (*recorder)(nil)
	_ io.ReaderFrom               = (*recorder)(nil)
)
