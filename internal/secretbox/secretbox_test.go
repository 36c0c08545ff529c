package secretbox

import (
	"bytes"
	"errors"
	"testing"

	"github.com/gatehouse/gatehouse/internal/config"
)

func TestSealOpen(t *testing.T) {
	b, err := New(config.DefaultMasterKey)
	if err != nil {
		t.Fatal(err)
	}
	ct := b.Seal([]byte("whsec_abc"), []byte("we_1"))
	if bytes.Contains(ct, []byte("whsec_abc")) {
		t.Fatal("ciphertext contains the plaintext")
	}
	pt, err := b.Open(ct, []byte("we_1"))
	if err != nil || string(pt) != "whsec_abc" {
		t.Fatalf("Open = %q, %v", pt, err)
	}
	if _, err := b.Open(ct, []byte("we_2")); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("ciphertext moved to another row opened: %v", err)
	}
	ct[len(ct)-1] ^= 1
	if _, err := b.Open(ct, []byte("we_1")); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("tampered ciphertext opened: %v", err)
	}
}

func TestBadMasterKey(t *testing.T) {
	for _, k := range []string{"", "short", "!!!not base64!!!"} {
		if _, err := New(k); err == nil {
			t.Errorf("New(%q) accepted", k)
		}
	}
}
