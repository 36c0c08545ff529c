// Package holdback holds a response back from the client until it is
// complete, so that the handler which wrapped the writer can act on it
// before the client sees it: idempotency records it (a retry that arrives
// after the client got its answer always finds the record), emit_events
// writes its event (a client that saw a success can count on the event).
//
// It is caddyhttp.NewResponseRecorder's idea with one difference that
// recorder cannot express: the decision to hold is revisited on every
// write. A response that grows past the limit, or turns out to be a stream
// (text/event-stream, incremental delivery, a protocol switch, a hijacked
// connection), is sent as far as it was held and from then on passed
// straight through: the client still gets all of it, the handler simply
// does not get it whole.
package holdback

import (
	"bufio"
	"bytes"
	"io"
	"mime"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Writer holds the response written to it. The header map is the
// underlying writer's, as with Caddy's recorder.
type Writer struct {
	*caddyhttp.ResponseWriterWrapper
	buf    *bytes.Buffer
	limit  int64
	want   func(status int) bool
	before http.Header

	// Status is the final status written, 0 while none was.
	Status      int
	wroteHeader bool
	// Streamed means the response is going to the client as it is
	// written: the handler does not get it whole.
	Streamed bool
	// OnStream, if set, is called once as the response starts to stream,
	// before anything of it reaches the client, with its status (0 for a
	// hijacked connection): what the handler must do about a response it
	// will not get whole is best done then, while a client that stops
	// reading cannot yet block this writer.
	OnStream func(status int)
	dropped  bool
}

// New returns a Writer that holds a response of at most limit bytes in buf.
// want, if not nil, chooses the final statuses worth holding; a response
// with any other goes straight through.
func New(w http.ResponseWriter, buf *bytes.Buffer, limit int64, want func(status int) bool) *Writer {
	return &Writer{
		ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w},
		buf:                   buf,
		limit:                 limit,
		want:                  want,
		before:                w.Header().Clone(),
	}
}

// Serve calls next and turns a panic into a value, so that the handler
// holding the response can answer or record before the panic goes on;
// stack is where it happened, unless it was http.ErrAbortHandler:
// reverse_proxy's deliberate abort when the upstream broke off its
// response, not a bug. While the response is still held, nothing of it
// reached the client, which can get an error object instead of a dropped
// connection.
func Serve(next caddyhttp.Handler, w http.ResponseWriter, r *http.Request) (panicked any, stack []byte, err error) {
	defer func() {
		if panicked = recover(); panicked != nil && panicked != http.ErrAbortHandler {
			stack = debug.Stack()
		}
	}()
	return nil, nil, next.ServeHTTP(w, r)
}

// Before is a copy of the response headers taken when the Writer was made:
// what the handlers in front of the wrapped one had set.
func (hw *Writer) Before() http.Header { return hw.before }

// Drop forgets a held response, headers included: the header map is
// Before again, so an answer sent in its place (an error object) carries
// nothing of it, and Release sends nothing. It does nothing once the
// response streams.
func (hw *Writer) Drop() {
	if hw.Streamed {
		return
	}
	hw.dropped = true
	h := hw.Header()
	for k := range h {
		if _, ok := hw.before[k]; !ok {
			delete(h, k)
		}
	}
	for k, v := range hw.before {
		h[k] = v
	}
	hw.buf.Reset()
}

// WroteHeader reports whether a final status (or a protocol switch) was
// written.
func (hw *Writer) WroteHeader() bool { return hw.wroteHeader }

// Body is what was held: the whole body, unless Streamed.
func (hw *Writer) Body() []byte { return hw.buf.Bytes() }

// Held reports whether a complete response is waiting to be released.
func (hw *Writer) Held() bool { return hw.wroteHeader && !hw.Streamed && !hw.dropped }

func (hw *Writer) WriteHeader(status int) {
	if hw.wroteHeader {
		return
	}
	if status >= 100 && status <= 199 {
		// Informational responses are not the answer; they go out at once.
		// A protocol switch hands the connection over for good.
		if status == http.StatusSwitchingProtocols {
			hw.Status, hw.wroteHeader = status, true
			hw.streaming()
		}
		hw.ResponseWriterWrapper.WriteHeader(status)
		return
	}
	hw.Status, hw.wroteHeader = status, true
	if (hw.want != nil && !hw.want(status)) || hw.isStream() {
		hw.Release()
	}
}

// isStream reports, from the headers alone, that the response will not fit
// or must not be held back.
func (hw *Writer) isStream() bool {
	h := hw.Header()
	if cl, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64); err == nil && cl > hw.limit {
		return true
	}
	if ct, _, err := mime.ParseMediaType(h.Get("Content-Type")); err == nil && ct == "text/event-stream" {
		return true
	}
	return caddyhttp.IsIncremental(h)
}

// Release sends what is held and passes the rest straight through. It does
// nothing before a status was written (net/http then answers 200 itself),
// once the response streams, or after Drop.
func (hw *Writer) Release() {
	if !hw.wroteHeader || hw.Streamed || hw.dropped {
		return
	}
	hw.streaming()
	hw.ResponseWriterWrapper.WriteHeader(hw.Status)
	if hw.buf.Len() > 0 {
		_, _ = hw.ResponseWriterWrapper.Write(hw.buf.Bytes())
		hw.buf.Reset()
	}
}

func (hw *Writer) Write(p []byte) (int, error) {
	if !hw.wroteHeader {
		hw.WriteHeader(http.StatusOK)
	}
	if !hw.Streamed && int64(hw.buf.Len())+int64(len(p)) > hw.limit {
		hw.Release()
	}
	if hw.Streamed {
		return hw.ResponseWriterWrapper.Write(p)
	}
	return hw.buf.Write(p)
}

// ReadFrom must be overridden: the embedded wrapper's would copy straight to
// the client, around the buffer.
func (hw *Writer) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(writerOnly{hw}, r)
}

// streaming marks the response streamed, telling OnStream the first time.
func (hw *Writer) streaming() {
	if hw.Streamed {
		return
	}
	hw.Streamed = true
	if hw.OnStream != nil {
		hw.OnStream(hw.Status)
	}
}

// FlushError keeps flushes from pushing a held-back response out early
// (Caddy issue #6144 is the same trap for its recorder).
func (hw *Writer) FlushError() error {
	if !hw.Streamed {
		return nil
	}
	return http.NewResponseController(hw.ResponseWriterWrapper.ResponseWriter).Flush()
}

// Flush is FlushError for callers that type-assert http.Flusher.
func (hw *Writer) Flush() { _ = hw.FlushError() }

// Hijack hands the connection to the caller; whatever happens on it next is
// not an HTTP response that could be held.
func (hw *Writer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hw.wroteHeader = true
	hw.streaming()
	return http.NewResponseController(hw.ResponseWriterWrapper.ResponseWriter).Hijack()
}

// bufPool recycles the buffers responses are held in; see PutBuffer.
var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// GetBuffer returns an empty buffer to hold a response in.
func GetBuffer() *bytes.Buffer { return bufPool.Get().(*bytes.Buffer) }

// PutBuffer recycles buf once nothing refers to its bytes, unless it grew
// large: one huge response should not pin megabytes per pooled buffer.
func PutBuffer(buf *bytes.Buffer) {
	if buf.Cap() > 256<<10 {
		return
	}
	buf.Reset()
	bufPool.Put(buf)
}

// writerOnly hides every method but Write, so io.Copy cannot go around it.
type writerOnly struct{ io.Writer }

var (
	_ http.ResponseWriter = (*Writer)(nil)
	_ io.ReaderFrom       = (*Writer)(nil)
	_ http.Hijacker       = (*Writer)(nil)
	_ http.Flusher        = (*Writer)(nil)
)
