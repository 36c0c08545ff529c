package events

import (
	"encoding/json"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/gatehouse/gatehouse/internal/testenv"
)

// A reload whose brokers name the same two brokers in another order is the
// same Kafka: it must load, not be refused as "other brokers".
func TestReloadWithReorderedBrokersLoads(t *testing.T) {
	spool := t.TempDir()
	up := upstream(t)
	addr := testenv.FreeAddr(t)
	cfg := func(brokers string) []byte {
		raw, _ := json.Marshal(map[string]any{
			"admin": map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
			"apps": map[string]any{"http": map[string]any{"servers": map[string]any{"srv0": map[string]any{
				"listen": []string{addr}, "automatic_https": map[string]any{"disable": true},
				"routes": []any{map[string]any{"handle": []any{
					map[string]any{"handler": "emit_events", "brokers": []string{brokers}, "spool_dir": spool,
						"rules": []map[string]any{{"method": "POST", "path": "/v1/customers", "type": "customer.created"}}},
					map[string]any{"handler": "reverse_proxy", "upstreams": []any{map[string]any{"dial": up}}},
				}}},
			}}}},
		})
		return raw
	}
	if err := caddy.Load(cfg("127.0.0.1:9092,127.0.0.1:9093"), true); err != nil {
		t.Fatal(err)
	}
	defer caddy.Stop()
	if err := caddy.Load(cfg("127.0.0.1:9093,127.0.0.1:9092"), true); err != nil {
		t.Fatalf("reload with the same brokers in another order refused: %v", err)
	}
}
