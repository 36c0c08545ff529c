package idempotency

import (
	"bufio"
	"bytes"
	"io"
	"mime"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// responseBuffer holds the upstream's response back from the client until it
// is complete, so that it can be recorded before the client sees it — a
// retry that arrives after the client got its answer then always finds the
// record. It is caddyhttp.NewResponseRecorder's idea with one difference
// that recorder cannot express: the decision to buffer is revisited on every
// write. A response that grows past the limit, or turns out to be a stream
// (text/event-stream, a protocol switch, a hijacked connection), is flushed
// and from then on passed straight through: the first client still gets all
// of it, it is simply not stored.
//
// The header map is the underlying writer's, as with Caddy's recorder.
type responseBuffer struct {
	*caddyhttp.ResponseWriterWrapper
	buf   *bytes.Buffer
	limit int64

	status      int
	wroteHeader bool
	// streamed means the response is going to the client as it is written;
	// nothing of it can be recorded.
	streamed bool
}

func newResponseBuffer(w http.ResponseWriter, buf *bytes.Buffer, limit int64) *responseBuffer {
	return &responseBuffer{
		ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w},
		buf:                   buf,
		limit:                 limit,
	}
}

func (rb *responseBuffer) WriteHeader(status int) {
	if rb.wroteHeader {
		return
	}
	if status >= 100 && status <= 199 {
		// Informational responses are not the answer; they go out at once.
		// A protocol switch hands the connection over for good.
		if status == http.StatusSwitchingProtocols {
			rb.status, rb.wroteHeader, rb.streamed = status, true, true
		}
		rb.ResponseWriterWrapper.WriteHeader(status)
		return
	}
	rb.status, rb.wroteHeader = status, true
	if rb.isStream() {
		rb.stream()
	}
}

// isStream reports, from the headers alone, that the response will not fit
// or must not be held back.
func (rb *responseBuffer) isStream() bool {
	h := rb.Header()
	if cl, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64); err == nil && cl > rb.limit {
		return true
	}
	if ct, _, err := mime.ParseMediaType(h.Get("Content-Type")); err == nil && ct == "text/event-stream" {
		return true
	}
	return caddyhttp.IsIncremental(h)
}

// stream switches to pass-through, sending what was buffered so far.
func (rb *responseBuffer) stream() {
	rb.streamed = true
	rb.ResponseWriterWrapper.WriteHeader(rb.status)
	if rb.buf.Len() > 0 {
		_, _ = rb.ResponseWriterWrapper.Write(rb.buf.Bytes())
		rb.buf.Reset()
	}
}

func (rb *responseBuffer) Write(p []byte) (int, error) {
	if !rb.wroteHeader {
		rb.WriteHeader(http.StatusOK)
	}
	if !rb.streamed && int64(rb.buf.Len())+int64(len(p)) > rb.limit {
		rb.stream()
	}
	if rb.streamed {
		return rb.ResponseWriterWrapper.Write(p)
	}
	return rb.buf.Write(p)
}

// ReadFrom must be overridden: the embedded wrapper's would copy straight to
// the client, around the buffer.
func (rb *responseBuffer) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(writerOnly{rb}, r)
}

// FlushError keeps flushes from pushing a held-back response out early
// (Caddy issue #6144 is the same trap for its recorder).
func (rb *responseBuffer) FlushError() error {
	if !rb.streamed {
		return nil
	}
	return http.NewResponseController(rb.ResponseWriterWrapper.ResponseWriter).Flush()
}

// Flush is FlushError for callers that type-assert http.Flusher.
func (rb *responseBuffer) Flush() { _ = rb.FlushError() }

// Hijack hands the connection to the caller; whatever happens on it next is
// not an HTTP response that could be recorded.
func (rb *responseBuffer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	rb.wroteHeader, rb.streamed = true, true
	return http.NewResponseController(rb.ResponseWriterWrapper.ResponseWriter).Hijack()
}

// recorded is the buffered response as it will be stored and replayed.
// before is a copy of the response headers taken before the upstream ran;
// see recordedHeader.
func (rb *responseBuffer) recorded(before http.Header) response {
	status := rb.status
	if status == 0 {
		status = http.StatusOK // nothing was written: net/http would send an empty 200
	}
	return response{status: status, header: recordedHeader(rb.Header(), before), body: rb.buf.Bytes()}
}

// notRecorded are the response headers never stored. Hop-by-hop headers
// belong to one connection. Date, Request-Id and the idempotency headers
// describe the replay, not the original. Content-Length is recomputed.
// RateLimit and RateLimit-Policy describe the caller's budget at the moment
// of the retry; the rate limiter sits in front of this handler, so they are
// already excluded by the "before" comparison, and the names are listed in
// case one is configured behind it. Retry-After is kept: a rate limiter's
// comes only with its 429, which never reaches this handler, so one seen
// here is the upstream's own (a 503 asking for patience). Set-Cookie is never
// stored: the API authenticates with keys, cookies may carry sessions, and
// session secrets must not sit in Redis for a day (DESIGN §9). Alt-Svc and
// Server are the gateway's own.
var notRecorded = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Date": true, "Content-Length": true, "Request-Id": true, "Original-Request-Id": true,
	"Idempotent-Replayed": true, "Set-Cookie": true, "Alt-Svc": true, "Server": true,
}

// recordedHeader returns the headers that belong to the upstream's response:
// those set or changed after the handler started (by the upstream and the
// handlers behind this one), minus notRecorded. Headers that handlers in
// front of this one set (Request-Id, RateLimit, Api-Version, CORS) are
// excluded because they set them again on the retry.
func recordedHeader(final, before http.Header) http.Header {
	out := make(http.Header, len(final))
	for k, v := range final {
		if notRecorded[k] || strings.HasPrefix(k, "Ratelimit") || strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		if bv, ok := before[k]; ok && slices.Equal(bv, v) {
			continue
		}
		out[k] = v
	}
	return out
}

// bodyAllowed reports whether a response with status may carry a body (and
// so a Content-Length), RFC 9110 §6.4.1.
func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

type writerOnly struct{ io.Writer }

// bufPool recycles response buffers; see putBuffer.
var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// putBuffer returns buf to the pool unless it grew large: one huge response
// should not pin megabytes per pooled buffer.
func putBuffer(buf *bytes.Buffer) {
	if buf.Cap() > 256<<10 {
		return
	}
	buf.Reset()
	bufPool.Put(buf)
}
