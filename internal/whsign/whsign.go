// Package whsign signs and verifies webhooks the Standard Webhooks way
// (https://www.standardwebhooks.com, DESIGN §8): three headers, webhook-id,
// webhook-timestamp (unix seconds) and webhook-signature, the last holding
// space-separated "v1,<base64 HMAC-SHA256>" signatures of "id.timestamp.body"
// keyed with the base64-decoded part of a "whsec_…" secret. During a secret
// rotation a request carries one signature per unexpired secret, so
// receivers holding either secret accept it.
//
// The deliverer signs with Sign; Verify is what a receiver (our tests, the
// docs, customers' Go code) runs.
package whsign

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Header names (lower case, as the specification spells them).
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// SecretPrefix starts every secret.
const SecretPrefix = "whsec_"

// DefaultTolerance is how far a timestamp may be from the receiver's clock.
const DefaultTolerance = 5 * time.Minute

// Errors returned by Verify and ParseSecret.
var (
	ErrInvalidSecret  = errors.New("whsign: secret is not whsec_ followed by base64")
	ErrMissingHeaders = errors.New("whsign: missing webhook-id, webhook-timestamp or webhook-signature header")
	ErrBadTimestamp   = errors.New("whsign: webhook-timestamp is not unix seconds")
	ErrTooOld         = errors.New("whsign: timestamp too old")
	ErrTooNew         = errors.New("whsign: timestamp too new")
	ErrNoMatch        = errors.New("whsign: no matching signature")
)

// NewSecret returns a fresh secret: "whsec_" and 32 random bytes in base64.
func NewSecret() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("whsign: crypto/rand failed: " + err.Error())
	}
	return SecretPrefix + base64.StdEncoding.EncodeToString(b[:])
}

// ParseSecret returns the HMAC key of a secret. The prefix is optional, as in
// the reference libraries.
func ParseSecret(secret string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, SecretPrefix))
	if err != nil || len(key) == 0 {
		return nil, ErrInvalidSecret
	}
	return key, nil
}

// Sign returns the webhook-signature header value for body, one "v1,…"
// signature per secret, in the order given. Secrets that do not parse are
// skipped; callers that must not send unsigned requests check them with
// ParseSecret first (or use SignKeys).
func Sign(secrets []string, id string, ts time.Time, body []byte) string {
	keys := make([][]byte, 0, len(secrets))
	for _, s := range secrets {
		if k, err := ParseSecret(s); err == nil {
			keys = append(keys, k)
		}
	}
	return SignKeys(keys, id, ts, body)
}

// SignKeys is Sign with already decoded keys (the deliverer caches them).
func SignKeys(keys [][]byte, id string, ts time.Time, body []byte) string {
	tsStr := strconv.FormatInt(ts.Unix(), 10)
	var b strings.Builder
	b.Grow(len(keys) * 48)
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("v1,")
		b.WriteString(base64.StdEncoding.EncodeToString(mac(k, id, tsStr, body)))
	}
	return b.String()
}

// Headers sets the three signing headers on h.
func Headers(h http.Header, keys [][]byte, id string, ts time.Time, body []byte) {
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(HeaderSignature, SignKeys(keys, id, ts, body))
}

func mac(key []byte, id, ts string, body []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(id))
	h.Write([]byte{'.'})
	h.Write([]byte(ts))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// Verify checks that headers carry a v1 signature of body made with secret,
// and that the timestamp is within tolerance of now (tolerance <= 0 means
// DefaultTolerance). Signatures of other versions are ignored, so a receiver
// keeps working when a sender adds a new scheme. Comparison is constant-time.
func Verify(secret string, headers http.Header, body []byte, tolerance time.Duration, now time.Time) error {
	key, err := ParseSecret(secret)
	if err != nil {
		return err
	}
	id := headers.Get(HeaderID)
	tsStr := headers.Get(HeaderTimestamp)
	sigs := headers.Get(HeaderSignature)
	if id == "" || tsStr == "" || sigs == "" {
		return ErrMissingHeaders
	}
	if tsStr[0] < '0' || tsStr[0] > '9' {
		return ErrBadTimestamp // ParseInt would take a sign
	}
	sec, err := strconv.ParseInt(tsStr, 10, 64)
	if err != nil {
		return ErrBadTimestamp
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	ts := time.Unix(sec, 0)
	if now.Sub(ts) > tolerance {
		return ErrTooOld
	}
	if ts.Sub(now) > tolerance {
		return ErrTooNew
	}
	want := mac(key, id, tsStr, body)
	for _, vs := range strings.Split(sigs, " ") {
		version, sig, ok := strings.Cut(vs, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err != nil {
			continue
		}
		if hmac.Equal(got, want) {
			return nil
		}
	}
	return ErrNoMatch
}
