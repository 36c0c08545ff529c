package requestid

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/standard"

	"github.com/gatehouse/gatehouse/caddymodule/internal/caddytest"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

// bodyLimit is request_body's max_size in these tests.
const bodyLimit = 1000

// drainLimit is how much of an unread request body net/http reads after
// the handler to keep the connection (maxPostHandlerReadBytes).
const drainLimit = 256 << 10

// proxy runs request_id, request_body (bodyLimit) and reverse_proxy to an
// upstream that counts the requests whose query says smuggled.
func proxy(t *testing.T) (addr string, smuggled *atomic.Int64) {
	t.Helper()
	smuggled = new(atomic.Int64)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Query().Get("smuggled") != "" {
			smuggled.Add(1)
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(up.Close)
	addr = testenv.FreeAddr(t)
	caddytest.Run(t, addr, map[string]any{"handle": []any{
		map[string]any{"handler": "request_id"},
		map[string]any{"handler": "request_body", "max_size": bodyLimit},
		map[string]any{"handler": "reverse_proxy", "upstreams": []any{map[string]any{"dial": up.Listener.Addr().String()}}},
	}})
	return addr, smuggled
}

// exchange writes raw on one connection and reads the responses that come
// back until the connection ends (or two have come).
func exchange(t *testing.T, addr, raw string) (statuses []int) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	go func() { _, _ = io.WriteString(c, raw) }()
	br := bufio.NewReader(c)
	for len(statuses) < 2 {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			break
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		statuses = append(statuses, resp.StatusCode)
	}
	return statuses
}

// A body over the limit is refused, and what is left of it is never read as
// the next request on the connection. Caddy wraps the body for its read
// idle timeout, which hides from net/http that reverse_proxy closed it
// before its end: without request_id's guard the connection was kept, the
// rest of the refused body parsed as requests, and one hidden past the
// limit and net/http's drain executed (request smuggling behind any proxy
// that shares connections between clients).
func TestTheRestOfARefusedBodyIsNeverARequest(t *testing.T) {
	addr, smuggled := proxy(t)
	hidden := "GET /v1/customers?smuggled=1 HTTP/1.1\r\nHost: x\r\n\r\n"
	body := strings.Repeat("a", bodyLimit+1+drainLimit) + hidden + strings.Repeat("a", 64<<10)
	for name, raw := range map[string]string{
		"chunked":        fmt.Sprintf("POST /v1/customers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(body), body),
		"content-length": fmt.Sprintf("POST /v1/customers HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body),
	} {
		t.Run(name, func(t *testing.T) {
			before := smuggled.Load()
			got := exchange(t, addr, raw)
			if len(got) != 1 || got[0] != http.StatusRequestEntityTooLarge {
				t.Errorf("answers %v on one connection, want only the 413", got)
			}
			if n := smuggled.Load() - before; n != 0 {
				t.Fatalf("the upstream executed a request that only travelled inside a refused body (%d times)", n)
			}
		})
	}

	// A body a little over the limit is read to its end by net/http, so
	// the connection stays usable for the client's next request.
	small := strings.Repeat("a", bodyLimit+10<<10)
	raw := fmt.Sprintf("POST /v1/customers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(small), small) +
		"GET /v1/customers HTTP/1.1\r\nHost: x\r\n\r\n"
	if got := exchange(t, addr, raw); len(got) != 2 || got[0] != http.StatusRequestEntityTooLarge || got[1] != http.StatusOK {
		t.Errorf("a slightly oversized body then a request: answers %v, want [413 200]", got)
	}
}
