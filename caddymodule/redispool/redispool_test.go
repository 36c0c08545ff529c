package redispool

import (
	"strings"
	"testing"
)

// A REDIS_URL that does not parse is reported at provisioning, which Caddy
// logs and prints: the error must not carry the password. net/url quotes the
// whole URL, and an unencoded '/' in a password makes it quote part of the
// password as a port.
func TestGetKeepsThePasswordOutOfParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, url string
	}{
		{"bad port", "redis://:hunter2secret@127.0.0.1:63x79/0"},
		{"bad escape", "redis://user:hunter2secret%zz@127.0.0.1:6379/0"},
		{"unencoded slash in the password", "redis://:hunter2secret/x@127.0.0.1:6379/0"},
		{"password starting with a slash", "redis://:/hunter2secret@127.0.0.1:6379/0"},
		{"digits before a slash in the password", "redis://:1234/hunter2secret@127.0.0.1:6379"},
		{"question mark in the password", "redis://:12?hunter2secret@127.0.0.1:6379"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Get(tc.url)
			if err == nil {
				Release(tc.url)
				t.Fatal("accepted")
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("error shows the password: %v", err)
			}
		})
	}
}
