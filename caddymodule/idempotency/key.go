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
func fingerprint(method, requestURI, contentType string, body []byte) string {
	return hashRequest(method, requestURI, multipartBoundary(contentType), body)
}

// fingerprints is fingerprint and, for a multipart body, the fingerprint
// an older gateway recorded for it (its raw bytes): a retry of that record
// with the same bytes must still replay. altFP is "" for other bodies,
// which are hashed once.
func fingerprints(method, requestURI, contentType string, body []byte) (fp, altFP string) {
	b := multipartBoundary(contentType)
	fp = hashRequest(method, requestURI, b, body)
	if b != "" {
		altFP = hashRequest(method, requestURI, "", body)
	}
	return fp, altFP
}

// multipartBoundary is the boundary of a multipart contentType, "" for
// any other.
func multipartBoundary(contentType string) string {
	contentType = strings.TrimSpace(contentType)
	if len(contentType) < 10 || !strings.EqualFold(contentType[:10], "multipart/") {
		return ""
	}
	if _, params, err := mime.ParseMediaType(contentType); err == nil {
		return params["boundary"]
	}
	return ""
}

// hashRequest is the hex SHA-256 of method, NUL, requestURI, NUL and body,
// with body's boundary (when not "") normalised as fingerprint says.
func hashRequest(method, requestURI, boundary string, body []byte) string {
	h := sha256.New()
	h.Write([]byte(method))
	h.Write([]byte{0})
	h.Write([]byte(requestURI))
	h.Write([]byte{0})
	if boundary != "" {
		h.Write([]byte("multipart\x00"))
		body = bytes.ReplaceAll(body, []byte("--"+boundary), []byte("--\x00boundary"))
	}
	h.Write(body)
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0]))
}
