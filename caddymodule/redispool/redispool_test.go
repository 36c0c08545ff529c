package redispool

import (
	"strings"
	"testing"
	"time"
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

// Options an operator writes in the Redis URL are kept; only what it leaves
// out gets the gateway's defaults.
func TestURLOptionsAreKept(t *testing.T) {
	url := "redis://127.0.0.1:6379/15?pool_size=10&min_idle_conns=0&dial_timeout=5s&read_timeout=3s"
	c, err := Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer Release(url)
	o := c.Options()
	if o.PoolSize != 10 || o.MinIdleConns != 0 || o.DialTimeout != 5*time.Second || o.ReadTimeout != 3*time.Second || o.WriteTimeout != IOTimeout {
		t.Fatalf("pool %d, idle %d, dial %s, read %s, write %s; want 10, 0, 5s, 3s and the default %s",
			o.PoolSize, o.MinIdleConns, o.DialTimeout, o.ReadTimeout, o.WriteTimeout, IOTimeout)
	}
}
