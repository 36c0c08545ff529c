// Package secretbox encrypts secrets at rest (webhook signing secrets) with
// AES-256-GCM under the master key from the environment (DESIGN §9). The
// ciphertext carries a key id byte so the master key can be rotated later.
package secretbox

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
)

const version byte = 1

// ErrDecrypt is returned for ciphertexts that were not sealed by this key or
// were altered.
var ErrDecrypt = errors.New("secretbox: cannot decrypt (wrong master key or corrupted data)")

// Box seals and opens secrets.
type Box struct{ aead cipher.AEAD }

// New returns a Box for a base64-encoded 32-byte master key.
func New(masterKeyB64 string) (*Box, error) {
	key, err := base64.StdEncoding.DecodeString(masterKeyB64)
	if err != nil || len(key) != 32 {
		return nil, errors.New("secretbox: MASTER_KEY must be 32 bytes, base64-encoded (head -c 32 /dev/urandom | base64)")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secretbox: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secretbox: %w", err)
	}
	return &Box{aead: aead}, nil
}

// Seal encrypts plaintext; additional data (e.g. the owning row's id) binds
// the ciphertext to its row so it cannot be swapped onto another.
func (b *Box) Seal(plaintext, additional []byte) []byte {
	out := make([]byte, 1+b.aead.NonceSize(), 1+b.aead.NonceSize()+len(plaintext)+b.aead.Overhead())
	out[0] = version
	if _, err := rand.Read(out[1:]); err != nil {
		panic("secretbox: crypto/rand failed: " + err.Error())
	}
	return b.aead.Seal(out, out[1:1+b.aead.NonceSize()], plaintext, additional)
}

// Open decrypts what Seal produced with the same additional data.
func (b *Box) Open(ciphertext, additional []byte) ([]byte, error) {
	n := b.aead.NonceSize()
	if len(ciphertext) < 1+n+b.aead.Overhead() || ciphertext[0] != version {
		return nil, ErrDecrypt
	}
	pt, err := b.aead.Open(nil, ciphertext[1:1+n], ciphertext[1+n:], additional)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}
