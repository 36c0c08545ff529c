package events

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// capture passes the response through to the client, except one that a
// rule wants: that one (status matched, body up to limit) is held back and
// copied, and reaches the client only when release is called, after its
// event is written. So a client that saw a response can count on its event:
// a gateway killed at any moment either never answered or had already
// written the event to the outbox's spool. What is held is the body a rule
// wants and no more than limit (a JSON object the event will carry), so
// holding costs no more memory than the copy did; once the body outgrows
// limit there will be no event, and what was held is sent at once and the
// rest streams through. Other responses stream untouched.
//
// A client that hangs up does not end the copy: the handler behind (the
// reverse proxy) sees writes succeed until the body is complete, because
// the backend has already acted and its event should not depend on
// whether the client stayed to read the answer.
type capture struct {
	*caddyhttp.ResponseWriterWrapper
	limit int64
	want  func(status int) bool

	status      int
	wroteHeader bool
	capturing   bool // holding the body back for an event
	overflow    bool // the body outgrew limit: no event
	clientErr   error
	buf         bytes.Buffer
}

func newCapture(w http.ResponseWriter, limit int64, want func(int) bool) *capture {
	return &capture{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, limit: limit, want: want}
}

func (c *capture) WriteHeader(status int) {
	if c.wroteHeader {
		return
	}
	// 1xx are interim responses (101 hands the connection over for good).
	if status >= 200 || status == http.StatusSwitchingProtocols {
		c.status, c.wroteHeader = status, true
		c.capturing = status >= 200 && c.want(status)
	}
	c.ResponseWriterWrapper.WriteHeader(status)
}

func (c *capture) Write(p []byte) (int, error) {
	if !c.wroteHeader {
		c.WriteHeader(http.StatusOK)
	}
	if c.capturing {
		if int64(c.buf.Len()+len(p)) <= c.limit {
			c.buf.Write(p)
			return len(p), nil
		}
		// No event: send what was held and stream the rest.
		c.capturing, c.overflow = false, true
		c.release()
		c.buf = bytes.Buffer{} // release the memory now
	}
	if c.clientErr != nil {
		return 0, c.clientErr
	}
	n, err := c.ResponseWriterWrapper.Write(p)
	if err != nil {
		c.clientErr = err
	}
	return n, err
}

// release sends the held body to the client. Errors are kept for later
// writes; the handler behind has finished, or goes on streaming.
func (c *capture) release() {
	if c.buf.Len() == 0 || c.clientErr != nil {
		return
	}
	if _, err := c.ResponseWriterWrapper.Write(c.buf.Bytes()); err != nil {
		c.clientErr = err
	}
}

// ReadFrom must be overridden: the embedded wrapper's would copy straight to
// the client, around the copy.
func (c *capture) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(writerOnly{c}, r)
}

// FlushError sends what was written so far (http.ResponseController); a
// flush before any write commits the implicit 200 first, as net/http does.
func (c *capture) FlushError() error {
	if !c.wroteHeader {
		c.WriteHeader(http.StatusOK)
	}
	if c.capturing {
		return nil // held until the event is written
	}
	return http.NewResponseController(c.ResponseWriterWrapper.ResponseWriter).Flush()
}

// Flush is FlushError for callers that type-assert http.Flusher.
func (c *capture) Flush() { _ = c.FlushError() }

// Hijack hands the connection over; what follows is not an HTTP response.
func (c *capture) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c.wroteHeader, c.capturing = true, false
	return http.NewResponseController(c.ResponseWriterWrapper.ResponseWriter).Hijack()
}

// writerOnly hides every method but Write, so io.Copy cannot go around it.
type writerOnly struct{ io.Writer }

var (
	_ http.ResponseWriter = (*capture)(nil)
	_ io.ReaderFrom       = (*capture)(nil)
	_ http.Hijacker       = (*capture)(nil)
	_ http.Flusher        = (*capture)(nil)
)
