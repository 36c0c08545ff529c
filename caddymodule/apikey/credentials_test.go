package apikey

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
)

func TestCredential(t *testing.T) {
	const key = "sk_test_abc"
	for _, tc := range []struct {
		name   string
		values []string
		key    string
		code   string
	}{
		{"bearer", []string{"Bearer " + key}, key, ""},
		{"bearer lower case", []string{"bearer " + key}, key, ""},
		{"bearer extra spaces", []string{"Bearer   " + key + "  "}, key, ""},
		{"basic", []string{"Basic " + base64.StdEncoding.EncodeToString([]byte(key+":"))}, key, ""},
		{"basic unpadded", []string{"Basic " + base64.RawStdEncoding.EncodeToString([]byte(key+":"))}, key, ""},
		{"none", nil, "", "api_key_missing"},
		{"blank", []string{"   "}, "", "api_key_missing"},
		{"tab inside", []string{"Bearer\t" + key}, "", "api_key_malformed"},
		{"control byte", []string{"Bearer sk_test_\x01"}, "", "api_key_malformed"},
		{"basic no colon", []string{"Basic " + base64.StdEncoding.EncodeToString([]byte(key))}, "", "api_key_malformed"},
		{"basic empty", []string{"Basic "}, "", "api_key_malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := credential(http.Header{"Authorization": tc.values})
			if tc.code != "" {
				if err == nil || err.Code != tc.code {
					t.Fatalf("got key %q, err %v; want %s", got, err, tc.code)
				}
				return
			}
			if err != nil || got != tc.key {
				t.Fatalf("got %q, %v; want %q", got, err, tc.key)
			}
		})
	}
}

// FuzzCredential: whatever the header, the parser answers (no panic), and a
// key it extracts is non-empty printable ASCII without spaces at its ends.
func FuzzCredential(f *testing.F) {
	for _, s := range []string{"Bearer sk_test_x", "Basic c2tfdGVzdF94Og==", "", "Bearer", "Basic !!", "\xff\xfe", strings.Repeat("A", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		key, err := credential(http.Header{"Authorization": {v}})
		if err != nil {
			if key != "" || err.Status != 401 {
				t.Fatalf("error %v with key %q", err, key)
			}
			return
		}
		if key == "" || strings.TrimSpace(key) != key || !printable(key) {
			t.Fatalf("accepted key %q from %q", key, v)
		}
	})
}
