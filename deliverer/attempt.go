package deliverer

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/gatehouse/gatehouse/controlplane/events"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/ssrf"
	"github.com/gatehouse/gatehouse/internal/whsign"
)

// UserAgent identifies deliveries.
const UserAgent = "Gatehouse-Webhooks/1"

// Response handling bounds.
const (
	snippetLimit = 4 << 10  // stored with the attempt
	drainLimit   = 64 << 10 // read past the snippet so the connection can be reused
)

type resultKind int

const (
	resAttempted resultKind = iota // an attempt was made (or failed before sending) and is recorded
	resParked                      // the endpoint is disabled: no attempt, no schedule
	resRelease                     // shutting down mid-attempt: give the lease back, record nothing
	resPostponed                   // the signing secrets could not be read: no attempt, tried again at next
)

// postponeDelay is how long a delivery waits when its signing secrets could
// not be read (Postgres failing): a database hiccup costs it no attempt, so
// a delivery on its last one is not dead-lettered unsent.
const postponeDelay = 5 * time.Second

// result is what happened to one held delivery.
type result struct {
	j         *job
	kind      resultKind
	attemptID string
	at        time.Time // attempt start, on the worker's clock
	code      int       // HTTP status; 0 when none
	latency   time.Duration
	snippet   string
	errText   string
	class     string // metrics label
	ok        bool
	gone      bool      // 410: disable the endpoint
	status    string    // the delivery's new status
	next      time.Time // next attempt when status is failed and a retry is scheduled
	scheduled bool      // next is set
}

// maxResponseHeaderBytes bounds the headers of a receiver's answer.
const maxResponseHeaderBytes = 64 << 10

// newClient is the delivery HTTP client: every connection passes the SSRF
// guard at dial time, no proxy, and no redirects (a 3xx is the answer).
func newClient(p ssrf.Policy, perEndpoint int) *http.Client {
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           ssrf.Dialer(p).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   4 * perEndpoint, // several endpoints may share a host
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
		// A receiver's headers are read, never kept: Go's default bound
		// is 10 MB per response, times every attempt in flight.
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// attempt makes one delivery attempt and decides the delivery's next state.
// ctx ends only when the process gives up on in-flight attempts at
// shutdown; the per-attempt timeout is applied here.
func (w *Worker) attempt(ctx context.Context, j *job) *result {
	now := w.now()
	r := &result{j: j, at: now, attemptID: ids.NewAt(ids.Attempt, now)}
	ep, exists, err := w.eps.current(ctx, j)
	switch {
	case ctx.Err() != nil:
		r.kind = resRelease
		return r
	case !exists:
		// Deleted with its deliveries: nothing is left to record.
		r.kind = resRelease
		return r
	case err != nil:
		// The last state known is used: a database hiccup should not cost
		// the delivery an attempt, and its result waits for the database
		// anyway.
		w.warnEndpointRead(err)
	}
	j.ep = ep
	if j.ep.Status != "enabled" && !j.d.Manual {
		// A disabled endpoint gets no scheduled attempts; a manual retry
		// is the user's explicit request and goes through. The delivery is
		// parked as failed, without a next attempt, which is what the
		// control plane's recovery picks up once the endpoint is enabled
		// again.
		r.kind, r.status = resParked, "failed"
		return r
	}
	if j.ev == nil {
		r.errText = fmt.Sprintf("event %s no longer exists", j.d.EventID)
		r.class = "no_event"
		r.status = "dead"
		return r
	}
	if j.fast && j.d.Attempts == 0 && !j.eventTime.IsZero() {
		w.m.firstAttempt.Observe(time.Since(j.eventTime).Seconds())
	}
	body, err := events.PayloadFor(*j.ev, j.ep.APIVersion)
	if err != nil {
		r.errText, r.class = err.Error(), "payload"
		w.decide(r)
		return r
	}
	keys, err := w.secrets.keys(ctx, j.d.EndpointID, j.ep, now)
	if err != nil {
		if ctx.Err() != nil {
			r.kind = resRelease
			return r
		}
		if errors.Is(err, errSecretsUnreadable) {
			w.warnEndpointRead(err)
			r.kind, r.next, r.scheduled = resPostponed, now.Add(postponeDelay), true
			return r
		}
		r.errText, r.class = "cannot sign: "+err.Error(), "no_secret"
		w.decide(r)
		return r
	}

	actx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, j.ep.URL, bytes.NewReader(body))
	if err != nil {
		r.errText, r.class = "invalid endpoint url: "+err.Error(), "network_error"
		w.decide(r)
		return r
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", UserAgent)
	whsign.Headers(req.Header, keys, j.d.ID, now, body)

	start := time.Now()
	resp, err := w.client.Do(req)
	if err == nil {
		// A 101 answer's body is the raw connection, which the client no
		// longer ties to actx: close it when the attempt's time is up.
		defer context.AfterFunc(actx, func() { resp.Body.Close() })()
		var snip []byte
		snip, err = io.ReadAll(io.LimitReader(resp.Body, snippetLimit))
		if err == nil {
			_, _ = io.CopyN(io.Discard, resp.Body, drainLimit)
		}
		resp.Body.Close()
		r.code = resp.StatusCode
		r.snippet = cleanText(snip)
		if err != nil && ctx.Err() == nil {
			// Status known, body cut short: the status decides, the error
			// is noted.
			r.errText = "reading response: " + describeErr(err, w.cfg.Timeout)
		}
		err = nil
		r.latency = time.Since(start)
		w.classify(r, resp)
	} else {
		r.latency = time.Since(start)
		if ctx.Err() != nil {
			r.kind = resRelease
			return r
		}
		r.class, r.errText = classifyErr(err, w.cfg.Timeout)
	}
	w.m.attemptLatency.WithLabelValues(r.class).Observe(r.latency.Seconds())
	if r.latency > time.Second {
		if ce := w.log.Check(zap.DebugLevel, "slow attempt"); ce != nil {
			ce.Write(zap.String("delivery_id", j.d.ID), zap.Duration("latency", r.latency), zap.String("result", r.class), zap.String("error", r.errText))
		}
	}
	w.decide(r)
	return r
}

// warnEndpointRead logs a failed read of an endpoint or its secrets before
// an attempt, at most every 10 s: in an outage every attempt fails the same
// way.
func (w *Worker) warnEndpointRead(err error) {
	now := time.Now().UnixNano()
	last := w.epWarned.Load()
	if now-last > int64(10*time.Second) && w.epWarned.CompareAndSwap(last, now) {
		w.log.Warn("reading the endpoint before an attempt failed; an endpoint read goes on with what was last read, a secrets read postpones the attempt", zap.Error(err))
	}
}

// classify interprets a response.
func (w *Worker) classify(r *result, resp *http.Response) {
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		r.ok, r.class = true, "success"
	case c == http.StatusGone:
		r.gone, r.class = true, "gone"
		r.errText = "410 Gone: the endpoint was disabled"
	case c >= 300 && c < 400:
		r.class = "redirect"
		loc := clip(cleanText([]byte(resp.Header.Get("Location"))), 200)
		r.errText = fmt.Sprintf("redirects are not followed (%d to %q)", c, loc)
	default:
		r.class = "http_error"
		if c == http.StatusTooManyRequests || c == http.StatusServiceUnavailable {
			if d, ok := retryAfter(resp.Header.Get("Retry-After"), r.at); ok {
				r.next, r.scheduled = r.at.Add(max(d, time.Second)), true
			}
		}
	}
}

// decide sets the delivery's next status from an attempt's outcome.
func (w *Worker) decide(r *result) {
	r.kind = resAttempted
	j := r.j
	switch {
	case r.ok:
		r.status = "succeeded"
		r.scheduled = false
		return
	case r.status == "dead":
		return
	case j.d.Delivered:
		// A failed resend of an event the endpoint has received: it
		// stays delivered, and the schedule does not start over (days of
		// retries, then a dead letter, for an event already there).
		r.status, r.scheduled = "succeeded", false
		return
	case r.gone:
		// Parked with the endpoint: no retry until someone re-enables it
		// and recovers its deliveries.
		r.status, r.scheduled = "failed", false
		return
	}
	sched := w.cfg.SandboxSchedule
	if j.d.Livemode {
		sched = w.cfg.LiveSchedule
	}
	// The schedule counts only its own attempts: a failed manual one
	// neither uses up a retry nor moves the wait along the schedule (one
	// before any scheduled attempt waits as the first retry does).
	made := j.d.Attempts - j.d.ManualAttempts
	if !j.d.Manual {
		made++
	}
	d, ok := sched.Next(max(made, 1))
	if !ok {
		r.status, r.scheduled = "dead", false
		return
	}
	r.status = "failed"
	// Retry-After, when given, can only push the retry later: a receiver
	// asking for a second or two (a maintenance page, a rate limiter) must
	// not use up the schedule's days of attempts within seconds.
	if next := r.at.Add(d); !r.scheduled || next.After(r.next) {
		r.next, r.scheduled = next, true
	}
}

// classifyErr names a transport error for metrics and the attempt record.
func classifyErr(err error, timeout time.Duration) (class, text string) {
	switch {
	case errors.Is(err, ssrf.ErrForbidden):
		// The guard's own words: the dial error around them names the
		// address the platform's resolver gave.
		if op, ok := errors.AsType[*net.OpError](err); ok {
			err = op.Err
		}
		return "refused", "refused: " + describeErr(err, timeout)
	case isTimeout(err):
		return "timeout", fmt.Sprintf("timed out after %s", timeout)
	default:
		return "network_error", describeErr(err, timeout)
	}
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// describeErr is err without the "Post \"url\":" wrapper the client adds,
// and a failed lookup without the DNS server net.DNSError names (the
// platform's internal resolver): the text is shown to the endpoint's owner.
func describeErr(err error, timeout time.Duration) string {
	if isTimeout(err) {
		return fmt.Sprintf("timed out after %s", timeout)
	}
	if de, ok := errors.AsType[*net.DNSError](err); ok {
		return cleanText([]byte("lookup " + de.Name + ": " + de.Err))
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	// Go's client quotes up to 64 KiB of a malformed answer in its error.
	return clip(cleanText([]byte(err.Error())), 1<<10)
}

// clip bounds s, valid UTF-8 text a receiver controls, to n bytes.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// cleanText makes b storable as Postgres text: valid UTF-8, no NUL.
func cleanText(b []byte) string {
	s := string(b)
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return strings.ReplaceAll(s, "\x00", "")
}
