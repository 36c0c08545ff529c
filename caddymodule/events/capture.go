package events

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// capture passes the response through to the client as it is written and
// keeps a copy of the body, up to limit, when the status is one a rule
// wants. Unlike a buffering recorder it never holds bytes back: the event
// is built after the response is complete, so nothing is gained by delaying
// the client.
//
// A client that hangs up does not end the copy: writes keep succeeding for
// the handler behind (the reverse proxy) until the body is complete or over
// the limit, because the backend has already acted and its event should not
// depend on whether the client stayed to read the answer.
type capture struct {
	*caddyhttp.ResponseWriterWrapper
	limit int64
	want  func(status int) bool

	status      int
	wroteHeader bool
	capturing   bool
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
		if int64(c.buf.Len()+len(p)) > c.limit {
			c.capturing, c.overflow = false, true
			c.buf = bytes.Buffer{} // release the memory now
		} else {
			c.buf.Write(p)
		}
	}
	if c.clientErr != nil {
		if c.capturing {
			return len(p), nil
		}
		return 0, c.clientErr
	}
	n, err := c.ResponseWriterWrapper.Write(p)
	if err != nil {
		c.clientErr = err
		if c.capturing {
			return len(p), nil
		}
	}
	return n, err
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
