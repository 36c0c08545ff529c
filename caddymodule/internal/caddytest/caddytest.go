// Package caddytest runs Caddy configurations in the modules' tests: the
// admin endpoint off, nothing persisted, only errors logged, and Caddy
// stopped when the test ends. Caddy's config is process-global, so tests
// that use it do not run in parallel.
package caddytest

import (
	"encoding/json"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// Server is an HTTP server listening on addr, automatic HTTPS off, with
// routes.
func Server(addr string, routes ...map[string]any) map[string]any {
	return map[string]any{
		"listen":          []string{addr},
		"automatic_https": map[string]any{"disable": true},
		"routes":          routes,
	}
}

// Load runs the HTTP app (its "servers" and any other settings) until the
// test ends.
func Load(t testing.TB, httpApp map[string]any) {
	t.Helper()
	raw, err := json.Marshal(map[string]any{
		"admin":   map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}},
		"apps":    map[string]any{"http": httpApp},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(raw, true); err != nil {
		t.Fatalf("loading caddy config: %v", err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
}

// Run runs one server on addr with routes until the test ends.
func Run(t testing.TB, addr string, routes ...map[string]any) {
	t.Helper()
	Load(t, map[string]any{"servers": map[string]any{"srv0": Server(addr, routes...)}})
}
