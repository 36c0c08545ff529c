package idempotency

import (
	"net/http"
	"slices"
	"strings"

	"github.com/gatehouse/gatehouse/caddymodule/internal/holdback"
	"github.com/gatehouse/gatehouse/internal/apiversion"
)

// recorded is the held response as it will be stored and replayed; the
// headers are those the upstream set (see recordedHeader).
func recorded(hw *holdback.Writer) response {
	status := hw.Status
	if status == 0 {
		status = http.StatusOK // nothing was written: net/http would send an empty 200
	}
	return response{status: status, header: recordedHeader(hw.Header(), hw.Before()), body: hw.Body()}
}

// notRecorded are the response headers never stored. Hop-by-hop headers
// belong to one connection. Date, Request-Id and the idempotency headers
// describe the replay, not the original. Content-Length is recomputed.
// RateLimit and RateLimit-Policy describe the caller's budget at the moment
// of the retry; the rate limiter sits in front of this handler, so they are
// already excluded by the "before" comparison, and the names are listed in
// case one is configured behind it. Retry-After is kept: a rate limiter's
// comes only with its 429, which never reaches this handler, so one seen
// here is the upstream's own (a 429, or a 503 with it, is not recorded at
// all: see refusedBeforeActing). Set-Cookie is never stored: the API
// authenticates with keys, cookies may carry sessions, and session secrets
// must not sit in Redis for a day (DESIGN §9). Alt-Svc and Server are the
// gateway's own.
var notRecorded = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Date": true, "Content-Length": true, "Request-Id": true, "Original-Request-Id": true,
	"Idempotent-Replayed": true, "Set-Cookie": true, "Alt-Svc": true, "Server": true,
}

// recordedHeader returns the headers that belong to the upstream's response:
// those set or changed after the handler started (by the upstream and the
// handlers behind this one), minus notRecorded. Headers that handlers in
// front of this one set (Request-Id, RateLimit, CORS) are excluded because
// they set them again on the retry; Api-Version is kept all the same: the
// recorded body is in the original request's version, which a retry asking
// for another must be told.
func recordedHeader(final, before http.Header) http.Header {
	out := make(http.Header, len(final))
	for k, v := range final {
		if notRecorded[k] || strings.HasPrefix(k, "Ratelimit") || strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		if k == apiversion.Header {
			out[k] = v
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
