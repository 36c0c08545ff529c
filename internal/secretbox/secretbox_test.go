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

// A rotation: the box with the new key opens what the old one sealed, and
// Reseal moves it under the new key, which then opens it alone.
func TestRotation(t *testing.T) {
	oldKey, newKey := config.DefaultMasterKey, "cm90YXRpb24tdGVzdC1uZXctbWFzdGVyLWtleS0zMmI="
	old, _ := New(oldKey)
	rotating, err := New(newKey, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	fresh, _ := New(newKey)
	ct := old.Seal([]byte("whsec_abc"), []byte("we_1"))
	if pt, err := rotating.Open(ct, []byte("we_1")); err != nil || string(pt) != "whsec_abc" {
		t.Fatalf("open under the previous key = %q, %v", pt, err)
	}
	if _, err := fresh.Open(ct, []byte("we_1")); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("the new key alone opened the old ciphertext: %v", err)
	}
	moved, changed, err := rotating.Reseal(ct, []byte("we_1"))
	if err != nil || !changed {
		t.Fatalf("reseal: changed %v, %v", changed, err)
	}
	if pt, err := fresh.Open(moved, []byte("we_1")); err != nil || string(pt) != "whsec_abc" {
		t.Fatalf("the new key alone cannot open the resealed secret: %q, %v", pt, err)
	}
	if again, changed, err := rotating.Reseal(moved, []byte("we_1")); err != nil || changed || !bytes.Equal(again, moved) {
		t.Fatalf("resealing twice changed it: %v, %v", changed, err)
	}
	if _, _, err := fresh.Reseal(ct, []byte("we_1")); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("reseal without the previous key: %v", err)
	}
}
