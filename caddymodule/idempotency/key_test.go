package idempotency

import (
	"errors"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/apierror"
)

func TestParseKey(t *testing.T) {
	cases := []struct {
		name   string
		values []string
		want   string // "" means refused
	}{
		{"uuid", []string{"8e03978e-40d5-43e8-bc93-6894a57f9324"}, "8e03978e-40d5-43e8-bc93-6894a57f9324"},
		{"one character", []string{"a"}, "a"},
		{"255 characters", []string{strings.Repeat("k", 255)}, strings.Repeat("k", 255)},
		{"printable punctuation and inner space", []string{`a b~!"#:,;`}, `a b~!"#:,;`},
		{"structured-field string kept verbatim", []string{`"abc"`}, `"abc"`},
		{"missing", nil, ""},
		{"empty", []string{""}, ""},
		{"256 characters", []string{strings.Repeat("k", 256)}, ""},
		{"NUL", []string{"a\x00b"}, ""},
		{"tab", []string{"a\tb"}, ""},
		{"newline", []string{"a\nb"}, ""},
		{"DEL", []string{"a\x7fb"}, ""},
		{"non-ASCII", []string{"clé"}, ""},
		{"two headers", []string{"a", "b"}, ""},
		{"two identical headers", []string{"a", "a"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseKey(tc.values)
			if tc.want != "" {
				if err != nil || got != tc.want {
					t.Fatalf("ParseKey = %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			var e *apierror.Error
			if !errors.As(err, &e) {
				t.Fatalf("ParseKey = %q, %v; want an error object", got, err)
			}
			if e.Status != 400 || e.Type != apierror.TypeInvalidRequest || e.Code != "idempotency_key_invalid" || e.Param != HeaderKey {
				t.Fatalf("error = %+v", e)
			}
		})
	}
}

// FuzzParseKey checks that any header value is either refused with the
// documented error or accepted as a key that meets the documented format.
func FuzzParseKey(f *testing.F) {
	for _, s := range []string{"8e03978e-40d5-43e8-bc93-6894a57f9324", "", "a\x00", "clé", `"sf-string"`, strings.Repeat("k", 256)} {
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, value string, twice bool) {
		values := []string{value}
		if twice {
			values = append(values, value)
		}
		key, err := ParseKey(values)
		if err != nil {
			var e *apierror.Error
			if !errors.As(err, &e) || e.Status != 400 || e.Code != "idempotency_key_invalid" || e.Param != HeaderKey || e.Message == "" {
				t.Fatalf("refusal is not the documented error: %#v", err)
			}
			if !twice && validKey(value) {
				t.Fatalf("refused a valid key %q: %v", value, err)
			}
			return
		}
		if twice {
			t.Fatal("accepted two Idempotency-Key headers")
		}
		if key != value || !validKey(key) {
			t.Fatalf("accepted %q as %q", value, key)
		}
	})
}

// validKey is the format, restated independently of ParseKey.
func validKey(s string) bool {
	if len(s) < 1 || len(s) > 255 {
		return false
	}
	for _, r := range s {
		if r < ' ' || r > '~' {
			return false
		}
	}
	return true
}

func TestFingerprintSeparatesFields(t *testing.T) {
	base := fingerprint("POST", "/v1/a", []byte("x"))
	for name, fp := range map[string]string{
		"method": fingerprint("PATCH", "/v1/a", []byte("x")),
		"path":   fingerprint("POST", "/v1/b", []byte("x")),
		"query":  fingerprint("POST", "/v1/a?x", nil),
		"body":   fingerprint("POST", "/v1/a", []byte("y")),
		"shift":  fingerprint("POST", "/v1/ax", nil),
	} {
		if fp == base {
			t.Errorf("changing the %s kept the fingerprint", name)
		}
	}
	if fingerprint("POST", "/v1/a", []byte("x")) != base {
		t.Error("fingerprint is not deterministic")
	}
}
