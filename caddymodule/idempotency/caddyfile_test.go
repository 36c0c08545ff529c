package idempotency

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/gatehouse/gatehouse/caddymodule/internal/adapttest"
)

func TestCaddyfileGolden(t *testing.T) { adapttest.Golden(t, "testdata") }

func TestCaddyfileRejects(t *testing.T) {
	site := func(block string) string { return ":8080 {\n" + block + "\n\treverse_proxy 127.0.0.1:8082\n}" }
	adapttest.Rejects(t, map[string]struct{ Caddyfile, Want string }{
		"unknown subdirective":   {site("idempotency {\n\tcache 1h\n}"), "unrecognized idempotency subdirective 'cache'"},
		"argument":               {site("idempotency /v1/* 24h"), "wrong argument count"},
		"bad duration":           {site("idempotency {\n\tttl forever\n}"), "idempotency: ttl"},
		"negative duration":      {site("idempotency {\n\tlock_ttl -5s\n}"), "lock_ttl must be positive"},
		"ttl without value":      {site("idempotency {\n\tttl\n}"), "wrong argument count"},
		"ttl with two values":    {site("idempotency {\n\tttl 1h 2h\n}"), "wrong argument count"},
		"bad size unit":          {site("idempotency {\n\tmax_response_size 1TB\n}"), "unknown unit"},
		"size not a number":      {site("idempotency {\n\tmax_response_size big\n}"), "whole number"},
		"zero size":              {site("idempotency {\n\tmax_request_size 0\n}"), "must be positive"},
		"safe method":            {site("idempotency {\n\tmethods POST GET\n}"), "GET is idempotent"},
		"not a method":           {site("idempotency {\n\tmethods PO$T\n}"), "not an HTTP method"},
		"methods without values": {site("idempotency {\n\tmethods\n}"), "wrong argument count"},
		"given twice":            {site("idempotency {\n\tttl 1h\n\tttl 2h\n}"), "ttl given twice"},
		"redis without url":      {site("idempotency {\n\tredis\n}"), "wrong argument count"},
	})
}

func TestCaddyfileFullSyntax(t *testing.T) {
	var h Handler
	err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`idempotency {
		redis {env.REDIS_URL}
		ttl 1d
		lock_ttl 90s
		max_response_size 2MiB
		max_request_size 512KB
		methods post PATCH
		fallback_scope public
		key_prefix gh:idem:
	}`))
	if err != nil {
		t.Fatal(err)
	}
	want := Handler{
		Redis: "{env.REDIS_URL}", TTL: dur(24 * time.Hour), LockTTL: dur(90 * time.Second),
		MaxResponseSize: 2 << 20, MaxRequestSize: 512_000, Methods: []string{"POST", "PATCH"},
		FallbackScope: "public", KeyPrefix: "gh:idem:",
	}
	got, _ := json.Marshal(h)
	wantJSON, _ := json.Marshal(want)
	if !bytes.Equal(got, wantJSON) {
		t.Fatalf("got  %s\nwant %s", got, wantJSON)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"1": 1, "1024": 1024, "1B": 1, "1KB": 1000, "1kb": 1000, "1MB": 1_000_000, "3GB": 3_000_000_000,
		"1KiB": 1024, "1MiB": 1 << 20, "1GiB": 1 << 30,
	} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MB", "-1", "0", "1.5MB", "1TB", "1 M", "99999999999999999999"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		h    Handler
		ok   bool
	}{
		{"defaults", Handler{TTL: dur(24 * time.Hour), LockTTL: dur(time.Minute), methods: []string{"POST"}}, true},
		{"lock longer than record", Handler{TTL: dur(time.Minute), LockTTL: dur(time.Hour), methods: []string{"POST"}}, false},
		{"negative ttl", Handler{TTL: -1, LockTTL: dur(time.Minute), methods: []string{"POST"}}, false},
		{"GET", Handler{TTL: dur(time.Hour), LockTTL: dur(time.Minute), methods: []string{"GET"}}, false},
		{"negative size", Handler{TTL: dur(time.Hour), LockTTL: dur(time.Minute), MaxResponseSize: -1, methods: []string{"POST"}}, false},
		{"lock_ttl under the minimum", Handler{TTL: dur(time.Hour), LockTTL: dur(MinLockTTL - 1), methods: []string{"POST"}}, false},
		{"lock_ttl at the minimum", Handler{TTL: dur(time.Hour), LockTTL: dur(MinLockTTL), methods: []string{"POST"}}, true},
		{"fallback_scope name", Handler{TTL: dur(time.Hour), LockTTL: dur(time.Minute), methods: []string{"POST"}, FallbackScope: "public"}, true},
		// Taken literally, a placeholder would be one shared scope, not one per client.
		{"fallback_scope template", Handler{TTL: dur(time.Hour), LockTTL: dur(time.Minute), methods: []string{"POST"}, FallbackScope: "{http.vars.client_ip}"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.h.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// A ttl under the default lock_ttl, with lock_ttl left out, is a valid
// configuration: the lock defaults to the ttl (it used to be refused for a
// lock_ttl of 1m0s nobody had set).
func TestShortTTLWithoutLockTTL(t *testing.T) {
	h := Handler{TTL: dur(30 * time.Second)}
	h.setDefaults()
	if err := h.Validate(); err != nil || h.LockTTL != dur(30*time.Second) {
		t.Fatalf("Validate() = %v with lock_ttl %s", err, time.Duration(h.LockTTL))
	}
	// A ttl under MinLockTTL makes the defaulted lock_ttl too short to run
	// anything (500µs became PEXPIRE 0): refused.
	h = Handler{TTL: dur(500 * time.Microsecond)}
	h.setDefaults()
	if err := h.Validate(); err == nil {
		t.Fatal("ttl 500µs without lock_ttl: accepted")
	}
	h = Handler{}
	h.setDefaults()
	if h.LockTTL != dur(DefaultLockTTL) || h.TTL != dur(DefaultTTL) {
		t.Fatalf("defaults: ttl %s, lock_ttl %s", time.Duration(h.TTL), time.Duration(h.LockTTL))
	}
}

func TestExecTimeoutLeavesTimeToRecord(t *testing.T) {
	for lock, want := range map[time.Duration]time.Duration{
		60 * time.Second:       54 * time.Second,
		5 * time.Second:        4 * time.Second,
		400 * time.Millisecond: 200 * time.Millisecond,
	} {
		if got := execTimeout(lock); got != want {
			t.Errorf("execTimeout(%s) = %s, want %s", lock, got, want)
		}
	}
}

func dur(d time.Duration) caddy.Duration { return caddy.Duration(d) }
