// Package ids makes the prefixed, sortable object IDs of the public API
// (cus_…, evt_…, req_…): a millisecond timestamp followed by random bits, in
// base62, so that IDs created later sort later and list cursors are cheap.
package ids

import (
	"crypto/rand"
	"encoding/binary"
	"strings"
	"time"
)

// Prefixes of every object type the platform exposes.
const (
	Org             = "org"
	User            = "user"
	Key             = "key"
	Customer        = "cus"
	Event           = "evt"
	WebhookEndpoint = "we"
	Delivery        = "whd"
	Attempt         = "wha"
	Request         = "req"
	Session         = "sess"
	Audit           = "aud"
	Invite          = "inv"
)

const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// New returns prefix + "_" + 22 base62 characters: 8 for the time in
// milliseconds (enough until year 8000) and 14 for 80 random bits.
func New(prefix string) string {
	return NewAt(prefix, time.Now())
}

// NewAt is New with an explicit time, for tests and back-filling.
func NewAt(prefix string, t time.Time) string {
	var b strings.Builder
	b.Grow(len(prefix) + 23)
	b.WriteString(prefix)
	b.WriteByte('_')
	writeBase62(&b, uint64(t.UnixMilli()), 8)
	var r [10]byte
	if _, err := rand.Read(r[:]); err != nil {
		panic("ids: crypto/rand failed: " + err.Error())
	}
	writeBase62(&b, binary.BigEndian.Uint64(r[:8]), 11)
	writeBase62(&b, uint64(binary.BigEndian.Uint16(r[8:])), 3)
	return b.String()
}

// Valid reports whether id has the given prefix and a well-formed body. It
// lets handlers answer 404 for garbage without a database round trip.
func Valid(id, prefix string) bool {
	body, ok := strings.CutPrefix(id, prefix+"_")
	if !ok || len(body) != 22 {
		return false
	}
	for i := 0; i < len(body); i++ {
		if strings.IndexByte(alphabet, body[i]) < 0 {
			return false
		}
	}
	return true
}

// writeBase62 writes v as exactly width base62 digits (big-endian, zero
// padded), truncating high digits that do not fit.
func writeBase62(b *strings.Builder, v uint64, width int) {
	var buf [16]byte
	for i := width - 1; i >= 0; i-- {
		buf[i] = alphabet[v%62]
		v /= 62
	}
	b.Write(buf[:width])
}
