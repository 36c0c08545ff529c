// Package apikey defines the API key format (DESIGN §5): sk_test_, sk_live_,
// rk_test_ and rk_live_ keys with 214 bits of randomness and a CRC-32
// checksum, so that a mistyped or truncated key is refused without any
// lookup. Only the SHA-256 hash of a key is ever stored.
package apikey

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"hash/crc32"
	"math/big"
	"strings"
)

// Kind is secret (full access) or restricted (scoped).
type Kind string

// Environment is sandbox or live; data of the two never mixes.
type Environment string

// Key kinds and environments.
const (
	Secret     Kind = "secret"
	Restricted Kind = "restricted"

	Sandbox Environment = "sandbox"
	Live    Environment = "live"
)

const (
	alphabet  = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	randLen   = 36 // 36 base62 digits = 214 bits
	sumLen    = 6  // CRC-32 in base62
	prefixLen = 8  // "sk_test_" and the others are all 8 bytes
	// Len is the length of every well-formed key.
	Len = prefixLen + randLen + sumLen
)

// Scopes a restricted key can hold. Secret keys hold all of them.
var Scopes = []string{
	"customers:read", "customers:write",
	"events:read", "events:write",
	"webhooks:read", "webhooks:write",
	"logs:read", "usage:read",
}

// ValidScope reports whether s is one of Scopes.
func ValidScope(s string) bool {
	for _, x := range Scopes {
		if x == s {
			return true
		}
	}
	return false
}

// Errors of Parse. They are distinct so the gateway can tell a developer
// precisely what is wrong with the key they sent.
var (
	ErrPrefix   = errors.New("api key has an unknown prefix; keys start with sk_test_, sk_live_, rk_test_ or rk_live_")
	ErrLength   = errors.New("api key has the wrong length")
	ErrChars    = errors.New("api key contains characters that never appear in keys")
	ErrChecksum = errors.New("api key checksum does not match; it was probably mistyped or truncated")
)

// Parsed is what the format of a key tells without a lookup.
type Parsed struct {
	Kind        Kind
	Environment Environment
}

// Livemode reports whether the key acts on live data.
func (p Parsed) Livemode() bool { return p.Environment == Live }

// Prefix is the type prefix of keys of this kind and environment.
func Prefix(k Kind, env Environment) string {
	p := "sk_"
	if k == Restricted {
		p = "rk_"
	}
	if env == Live {
		return p + "live_"
	}
	return p + "test_"
}

// Generate returns a new random key.
func Generate(k Kind, env Environment) (string, error) {
	var b strings.Builder
	b.Grow(Len)
	b.WriteString(Prefix(k, env))
	max := big.NewInt(int64(len(alphabet)))
	for i := 0; i < randLen; i++ {
		n, err := rand.Int(rand.Reader, max)
		if err != nil {
			return "", err
		}
		b.WriteByte(alphabet[n.Int64()])
	}
	b.WriteString(checksum(b.String()))
	return b.String(), nil
}

// Parse checks the format and checksum of key. It allocates nothing, so it is
// cheap enough to run before every cache lookup.
func Parse(key string) (Parsed, error) {
	var p Parsed
	if len(key) < prefixLen {
		return p, ErrPrefix
	}
	switch key[:prefixLen] {
	case "sk_test_":
		p = Parsed{Secret, Sandbox}
	case "sk_live_":
		p = Parsed{Secret, Live}
	case "rk_test_":
		p = Parsed{Restricted, Sandbox}
	case "rk_live_":
		p = Parsed{Restricted, Live}
	default:
		return p, ErrPrefix
	}
	if len(key) != Len {
		return p, ErrLength
	}
	for i := prefixLen; i < Len; i++ {
		if !isAlnum(key[i]) {
			return p, ErrChars
		}
	}
	if checksum(key[:Len-sumLen]) != key[Len-sumLen:] {
		return p, ErrChecksum
	}
	return p, nil
}

// Hash is the stored form of a key. Keys carry 214 random bits, so a fast
// hash is safe: there is nothing to brute-force.
func Hash(key string) [32]byte { return sha256.Sum256([]byte(key)) }

// Last4 is the tail shown in listings.
func Last4(key string) string { return key[len(key)-4:] }

// DisplayPrefix is the head shown in listings, e.g. "sk_test_Ab3x".
func DisplayPrefix(key string) string { return key[:prefixLen+4] }

// LooksLikeKey reports whether s contains something shaped like one of our
// keys; redaction uses it so keys never reach a log, whatever header or
// field carries them.
func LooksLikeKey(s string) bool {
	for i := 0; i+prefixLen+randLen <= len(s); i++ {
		if (s[i] == 's' || s[i] == 'r') && s[i+1] == 'k' && s[i+2] == '_' &&
			(strings.HasPrefix(s[i+3:], "test_") || strings.HasPrefix(s[i+3:], "live_")) {
			return true
		}
	}
	return false
}

func checksum(s string) string {
	v := crc32.ChecksumIEEE([]byte(s))
	var out [sumLen]byte
	for i := sumLen - 1; i >= 0; i-- {
		out[i] = alphabet[v%62]
		v /= 62
	}
	return string(out[:])
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}
