package whsign_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/whsign"
)

// The Standard Webhooks specification's published test vector (the
// reference libraries' TestWebhookSign).
const (
	vecSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vecID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vecTimestamp = 1614265330
	vecPayload   = `{"test": 2432232314}`
	vecSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	// A well-formed signature that matches nothing (from the same suite).
	vecBogus = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
)

func TestSignSpecVector(t *testing.T) {
	got := whsign.Sign([]string{vecSecret}, vecID, time.Unix(vecTimestamp, 0), []byte(vecPayload))
	if got != vecSignature {
		t.Fatalf("Sign = %s, want %s", got, vecSignature)
	}
	// The prefix is optional.
	got = whsign.Sign([]string{strings.TrimPrefix(vecSecret, "whsec_")}, vecID, time.Unix(vecTimestamp, 0), []byte(vecPayload))
	if got != vecSignature {
		t.Fatalf("Sign without prefix = %s, want %s", got, vecSignature)
	}
}

func vecHeaders(ts int64, sig string) http.Header {
	h := http.Header{}
	h.Set("webhook-id", vecID)
	h.Set("webhook-timestamp", fmt.Sprint(ts))
	h.Set("webhook-signature", sig)
	return h
}

func TestVerify(t *testing.T) {
	now := time.Unix(vecTimestamp, 0)
	body := []byte(vecPayload)
	tol := 5 * time.Minute
	cases := []struct {
		name   string
		secret string
		h      http.Header
		body   []byte
		now    time.Time
		want   error
	}{
		{"spec vector", vecSecret, vecHeaders(vecTimestamp, vecSignature), body, now, nil},
		{"secret without prefix", strings.TrimPrefix(vecSecret, "whsec_"), vecHeaders(vecTimestamp, vecSignature), body, now, nil},
		{"missing id", vecSecret, func() http.Header { h := vecHeaders(vecTimestamp, vecSignature); h.Del("webhook-id"); return h }(), body, now, whsign.ErrMissingHeaders},
		{"missing timestamp", vecSecret, func() http.Header { h := vecHeaders(vecTimestamp, vecSignature); h.Del("webhook-timestamp"); return h }(), body, now, whsign.ErrMissingHeaders},
		{"missing signature", vecSecret, func() http.Header { h := vecHeaders(vecTimestamp, vecSignature); h.Del("webhook-signature"); return h }(), body, now, whsign.ErrMissingHeaders},
		{"bogus signature", vecSecret, vecHeaders(vecTimestamp, vecBogus), body, now, whsign.ErrNoMatch},
		{"altered body", vecSecret, vecHeaders(vecTimestamp, vecSignature), []byte(`{"test": 2432232315}`), now, whsign.ErrNoMatch},
		{"other secret", whsign.NewSecret(), vecHeaders(vecTimestamp, vecSignature), body, now, whsign.ErrNoMatch},
		{"several signatures, one valid", vecSecret, vecHeaders(vecTimestamp, strings.Join([]string{vecBogus, "v2," + vecSignature[3:], vecSignature, vecBogus}, " ")), body, now, nil},
		{"valid signature with wrong version", vecSecret, vecHeaders(vecTimestamp, "v2,"+vecSignature[3:]), body, now, whsign.ErrNoMatch},
		{"garbage signature list", vecSecret, vecHeaders(vecTimestamp, "v1 , v1,, ,,"), body, now, whsign.ErrNoMatch},
		{"too old", vecSecret, vecHeaders(vecTimestamp, vecSignature), body, now.Add(tol + time.Second), whsign.ErrTooOld},
		{"too new", vecSecret, vecHeaders(vecTimestamp, vecSignature), body, now.Add(-tol - time.Second), whsign.ErrTooNew},
		{"at tolerance edge", vecSecret, vecHeaders(vecTimestamp, vecSignature), body, now.Add(tol), nil},
		{"timestamp not a number", vecSecret, func() http.Header {
			h := vecHeaders(vecTimestamp, vecSignature)
			h.Set("webhook-timestamp", "soon")
			return h
		}(), body, now, whsign.ErrBadTimestamp},
		{"signed timestamp", vecSecret, func() http.Header {
			h := vecHeaders(vecTimestamp, vecSignature)
			h.Set("webhook-timestamp", "+1614265330")
			return h
		}(), body, now, whsign.ErrBadTimestamp},
		{"timestamp changed", vecSecret, vecHeaders(vecTimestamp+1, vecSignature), body, now, whsign.ErrNoMatch},
		{"bad secret", "whsec_!!!", vecHeaders(vecTimestamp, vecSignature), body, now, whsign.ErrInvalidSecret},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := whsign.Verify(tc.secret, tc.h, tc.body, tol, tc.now)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestRotationSignsWithEverySecret(t *testing.T) {
	oldS, newS := whsign.NewSecret(), whsign.NewSecret()
	now := time.Now()
	body := []byte(`{"id":"evt_1"}`)
	sig := whsign.Sign([]string{oldS, newS}, "whd_1", now, body)
	if n := len(strings.Split(sig, " ")); n != 2 {
		t.Fatalf("want 2 signatures, got %d: %s", n, sig)
	}
	h := http.Header{}
	whsign.Headers(h, nil, "whd_1", now, body)
	h.Set("webhook-signature", sig)
	for _, s := range []string{oldS, newS} {
		if err := whsign.Verify(s, h, body, 0, now); err != nil {
			t.Fatalf("receiver holding one of the secrets: %v", err)
		}
	}
	if err := whsign.Verify(whsign.NewSecret(), h, body, 0, now); !errors.Is(err, whsign.ErrNoMatch) {
		t.Fatalf("stranger's secret verified: %v", err)
	}
}

func TestNewSecret(t *testing.T) {
	s := whsign.NewSecret()
	if !strings.HasPrefix(s, "whsec_") {
		t.Fatalf("secret %q lacks prefix", s)
	}
	k, err := whsign.ParseSecret(s)
	if err != nil || len(k) != 32 {
		t.Fatalf("ParseSecret = %d bytes, %v", len(k), err)
	}
	if s == whsign.NewSecret() {
		t.Fatal("two secrets are equal")
	}
}

// TestReferenceAlgorithm recomputes the signature the way the specification
// describes it, independently of the package.
func TestReferenceAlgorithm(t *testing.T) {
	secret := whsign.NewSecret()
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	body := []byte(`{"hello":"world"}`)
	ts := time.Unix(1700000000, 0)
	m := hmac.New(sha256.New, key)
	m.Write([]byte("whd_abc.1700000000." + string(body)))
	want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
	if got := whsign.Sign([]string{secret}, "whd_abc", ts, body); got != want {
		t.Fatalf("Sign = %s, reference = %s", got, want)
	}
}

func FuzzVerify(f *testing.F) {
	f.Add([]byte("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "msg_p5jXN8AQM9LWM0D4loKWxJek", int64(1614265330), []byte(`{"test": 2432232314}`), uint16(0))
	f.Fuzz(func(t *testing.T, key []byte, id string, ts int64, body []byte, flip uint16) {
		if len(key) == 0 || id == "" || ts < 0 || ts > 1<<40 {
			return
		}
		secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
		at := time.Unix(ts, 0)
		h := http.Header{}
		whsign.Headers(h, [][]byte{key}, id, at, body)
		if got := whsign.Sign([]string{secret}, id, at, body); got != h.Get("webhook-signature") {
			t.Fatalf("Sign and Headers disagree: %s vs %s", got, h.Get("webhook-signature"))
		}
		if err := whsign.Verify(secret, h, body, time.Minute, at); err != nil {
			t.Fatalf("verify(sign(x)) = %v", err)
		}
		altered := bytes.Clone(body)
		if len(altered) == 0 {
			altered = []byte{byte(flip)}
		} else {
			i := int(flip) % len(altered)
			altered[i] ^= byte(flip>>8) | 1
		}
		if err := whsign.Verify(secret, h, altered, time.Minute, at); !errors.Is(err, whsign.ErrNoMatch) {
			t.Fatalf("altered body verified: %v", err)
		}
	})
}

// A receiver verifies the raw body before parsing it.
func ExampleVerify() {
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" // from the webhook endpoint's creation
	handler := func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err := whsign.Verify(secret, r.Header, body, 5*time.Minute, time.Now()); err != nil {
			http.Error(w, "bad signature", http.StatusBadRequest)
			return
		}
		// Deduplicate on r.Header.Get("webhook-id"): retries carry the same id.
		w.WriteHeader(http.StatusNoContent)
	}
	_ = handler

	// What the sender does:
	h := http.Header{}
	key, _ := whsign.ParseSecret(secret)
	whsign.Headers(h, [][]byte{key}, "msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`))
	fmt.Println(h.Get("webhook-signature"))
	// Output: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=
}
