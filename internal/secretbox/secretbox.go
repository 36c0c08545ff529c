// Package secretbox encrypts secrets at rest (webhook signing secrets) with
// AES-256-GCM under the master key from the environment (DESIGN §9).
//
// The master key is rotated without downtime: the processes run with the new
// key as MASTER_KEY and the old one as MASTER_KEY_PREVIOUS, which only opens
// (a Box seals with its current key alone); `controlplane master-key rotate`
// then re-seals every stored secret under the new key, after which the
// previous key can be dropped.
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
type Box struct {
	aead     cipher.AEAD   // the current key: seals and opens
	previous []cipher.AEAD // keys being rotated away from: open only
}

// New returns a Box for a base64-encoded 32-byte master key, which also
// opens what the previous keys (same encoding) sealed.
func New(masterKeyB64 string, previousB64 ...string) (*Box, error) {
	aead, err := newAEAD(masterKeyB64, "MASTER_KEY")
	if err != nil {
		return nil, err
	}
	b := &Box{aead: aead}
	for i, k := range previousB64 {
		name := "MASTER_KEY_PREVIOUS"
		if len(previousB64) > 1 {
			name = fmt.Sprintf("MASTER_KEY_PREVIOUS (key %d of %d)", i+1, len(previousB64))
		}
		old, err := newAEAD(k, name)
		if err != nil {
			return nil, err
		}
		b.previous = append(b.previous, old)
	}
	return b, nil
}

func newAEAD(keyB64, name string) (cipher.AEAD, error) {
	key, err := base64.StdEncoding.DecodeString(keyB64)
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("secretbox: %s must be 32 bytes, base64-encoded (head -c 32 /dev/urandom | base64)", name)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secretbox: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secretbox: %w", err)
	}
	return aead, nil
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

// Open decrypts what Seal produced with the same additional data, under the
// current key or a previous one.
func (b *Box) Open(ciphertext, additional []byte) ([]byte, error) {
	pt, _, err := b.open(ciphertext, additional)
	return pt, err
}

// Reseal returns ciphertext sealed under the current key, and false when it
// already was (then unchanged): the step of a master-key rotation.
func (b *Box) Reseal(ciphertext, additional []byte) ([]byte, bool, error) {
	pt, current, err := b.open(ciphertext, additional)
	if err != nil || current {
		return ciphertext, false, err
	}
	return b.Seal(pt, additional), true, nil
}

func (b *Box) open(ciphertext, additional []byte) (pt []byte, current bool, err error) {
	for i, aead := range append([]cipher.AEAD{b.aead}, b.previous...) {
		n := aead.NonceSize()
		if len(ciphertext) < 1+n+aead.Overhead() || ciphertext[0] != version {
			return nil, false, ErrDecrypt
		}
		if pt, err := aead.Open(nil, ciphertext[1:1+n], ciphertext[1+n:], additional); err == nil {
			return pt, i == 0, nil
		}
	}
	return nil, false, ErrDecrypt
}
