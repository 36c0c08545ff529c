package idempotency

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"mime/multipart"
	"strings"
	"testing"
	"time"

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
	base := fingerprint("POST", "/v1/a", "application/json", []byte("x"))
	for name, fp := range map[string]string{
		"method": fingerprint("PATCH", "/v1/a", "application/json", []byte("x")),
		"path":   fingerprint("POST", "/v1/b", "application/json", []byte("x")),
		"query":  fingerprint("POST", "/v1/a?x", "application/json", nil),
		"body":   fingerprint("POST", "/v1/a", "application/json", []byte("y")),
		"shift":  fingerprint("POST", "/v1/ax", "application/json", nil),
	} {
		if fp == base {
			t.Errorf("changing the %s kept the fingerprint", name)
		}
	}
	if fingerprint("POST", "/v1/a", "application/json", []byte("x")) != base {
		t.Error("fingerprint is not deterministic")
	}
}

// A multipart upload retried by a client that draws a new boundary each
// time (curl -F, Go's mime/multipart, Python's requests) is the same
// request; another file or field is not. Other bodies hash exactly as
// before, so records made before an upgrade still match their retries.
func TestFingerprintOfMultipartIgnoresTheBoundary(t *testing.T) {
	upload := func(file string) (string, []byte) {
		var b bytes.Buffer
		w := multipart.NewWriter(&b)
		_ = w.WriteField("purpose", "dispute_evidence")
		f, _ := w.CreateFormFile("file", "a.txt")
		_, _ = f.Write([]byte(file))
		_ = w.Close()
		return w.FormDataContentType(), b.Bytes()
	}
	ct1, b1 := upload("hello")
	ct2, b2 := upload("hello")
	ct3, b3 := upload("hellO")
	if ct1 == ct2 {
		t.Fatal("the writer drew the same boundary twice")
	}
	first := fingerprint("POST", "/v1/files", ct1, b1)
	if fingerprint("POST", "/v1/files", ct2, b2) != first {
		t.Error("the same upload with another boundary is another request")
	}
	if fingerprint("POST", "/v1/files", ct3, b3) == first {
		t.Error("another file's upload is the same request")
	}
	// Unchanged for other bodies: SHA-256 of method, NUL, URI, NUL, body.
	if got := fingerprint("POST", "/v1/a", "application/json", []byte("x")); got != legacy("POST", "/v1/a", "x") {
		t.Errorf("a JSON body's fingerprint changed: %s", got)
	}
}

func legacy(method, uri, body string) string {
	sum := sha256.Sum256([]byte(method + "\x00" + uri + "\x00" + body))
	return hex.EncodeToString(sum[:])
}

// A record an older gateway made for a multipart request holds the raw
// bytes' fingerprint: the same bytes retried after the upgrade replay it,
// while another request under the key is still a reuse.
func TestMultipartRecordsFromBeforeTheUpgradeStillReplay(t *testing.T) {
	rdb, prefix := testRedis(t)
	s := &store{client: rdb, direct: rdb, prefix: prefix}
	ctx := context.Background()
	const ct = "multipart/form-data; boundary=XyZbOuNdArY"
	body := []byte("--XyZbOuNdArY\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nx\r\n--XyZbOuNdArY--\r\n")
	fp, alt := fingerprints("POST", "/v1/files", ct, body)
	legacy := fingerprint("POST", "/v1/files", "", body)
	if alt != legacy || fp == legacy {
		t.Fatalf("fingerprints = %s, %s; want the new one and the raw one %s", fp, alt, legacy)
	}
	if _, alt := fingerprints("POST", "/v1/a", "application/json", []byte(`{}`)); alt != "" {
		t.Errorf("a JSON body has another fingerprint: %s", alt)
	}
	key := prefix + newKey()
	if l, err := s.begin(ctx, key, "old", legacy, "", "req_old", time.Minute); err != nil || l.state != stateAcquired {
		t.Fatalf("the older gateway's lock: %v %v", l.state, err)
	}
	if err := s.complete(ctx, key, "old", stateDone, time.Hour, response{status: 201, body: []byte(`{"id":"file_1"}`)}); err != nil {
		t.Fatal(err)
	}
	if l, err := s.begin(ctx, key, "new", fp, alt, "req_new", time.Minute); err != nil || l.state != stateDone || string(l.resp.body) != `{"id":"file_1"}` {
		t.Fatalf("the retry after the upgrade: %v %v, want the replay", l.state, err)
	}
	if l, err := s.begin(ctx, key, "other", fingerprint("POST", "/v1/files", ct, []byte("other")), "", "req_x", time.Minute); err != nil || l.state != stateMismatch {
		t.Fatalf("another request under the key: %v %v, want a mismatch", l.state, err)
	}
}
