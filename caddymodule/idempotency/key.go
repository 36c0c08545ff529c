package idempotency

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"mime"
	"strings"

	"github.com/gatehouse/gatehouse/internal/apierror"
)

// HeaderKey is the request header that carries the idempotency key.
const HeaderKey = "Idempotency-Key"

// MaxKeyLength is the longest key accepted, in bytes (Stripe's limit).
const MaxKeyLength = 255

// ParseKey validates the values of every Idempotency-Key header of a request
// and returns the key. A key is 1 to 255 printable ASCII characters (0x20 to
// 0x7E), taken verbatim as Stripe does: a structured-field string as the IETF
// draft writes it ("\"8e03…\"") keeps its quotes and is simply a different,
// equally valid key. The HTTP server has already trimmed surrounding
// whitespace, so an all-blank key arrives empty and is refused. Sending the
// header twice is refused rather than picking one, because an intermediary
// that merged or split headers would otherwise silently change the key.
//
// The error is a 400 invalid_request_error, code idempotency_key_invalid,
// with param "Idempotency-Key".
func ParseKey(values []string) (string, error) {
	switch {
	case len(values) == 0:
		return "", invalidKey("The Idempotency-Key header is missing.")
	case len(values) > 1:
		return "", invalidKey("Send the Idempotency-Key header once; this request has %d of them.", len(values))
	}
	key := values[0]
	if key == "" {
		return "", invalidKey("The Idempotency-Key header is empty; send 1 to %d printable ASCII characters, for example a V4 UUID.", MaxKeyLength)
	}
	if len(key) > MaxKeyLength {
		return "", invalidKey("The Idempotency-Key header is %d characters long; the maximum is %d.", len(key), MaxKeyLength)
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c < 0x20 || c > 0x7e {
			return "", invalidKey("The Idempotency-Key header may only contain printable ASCII characters; byte %d is 0x%02x.", i, c)
		}
	}
	return key, nil
}

func invalidKey(format string, args ...any) *apierror.Error {
	return apierror.InvalidRequest("idempotency_key_invalid", HeaderKey, fmt.Sprintf(format, args...))
}

// fingerprint identifies "the same request" for a key: SHA-256 over the
// method, the path with its query, and the body. The NUL separators make the
// encoding unambiguous because neither a method nor a request URI can contain
// NUL. Headers are deliberately left out: clients legitimately vary them
// between retries (User-Agent, tracing headers, a rolled API key). A
// multipart body (contentType multipart/… with a boundary) is hashed with
// its boundary replaced by a fixed one: curl -F, Go's mime/multipart and
// Python's requests draw a new random boundary for every attempt, so the
// same upload retried differs in framing only. Other bodies hash as they
// are, as before multipart was recognised.
// fingerprints is the request's fingerprint and, for a multipart body, the
// one recorded for it before multipart was recognised (its raw bytes), which
// a record made by an older gateway holds: its retry with the same bytes
// must still replay. altFP is "" for other bodies.
func fingerprints(method, requestURI, contentType string, body []byte) (fp, altFP string) {
	fp = fingerprint(method, requestURI, contentType, body)
	if raw := fingerprint(method, requestURI, "", body); raw != fp {
		altFP = raw
	}
	return fp, altFP
}

func fingerprint(method, requestURI, contentType string, body []byte) string {
	h := sha256.New()
	h.Write([]byte(method))
	h.Write([]byte{0})
	h.Write([]byte(requestURI))
	h.Write([]byte{0})
	if mt, params, err := mime.ParseMediaType(contentType); err == nil && strings.HasPrefix(mt, "multipart/") && params["boundary"] != "" {
		h.Write([]byte("multipart\x00"))
		body = bytes.ReplaceAll(body, []byte("--"+params["boundary"]), []byte("--\x00boundary"))
	}
	h.Write(body)
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0]))
}
