package caddymodule

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/gatehouse/gatehouse/internal/apikey"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

// BenchmarkGatewayOverhead compares the same proxy route with and without
// request_id and api_key (cached key) through a real in-process Caddy, and
// reports p50/p99 latencies next to ns/op. The throughput ratio is
// baseline ns/op ÷ gatehouse ns/op.
func BenchmarkGatewayOverhead(b *testing.B) {
	pool, dsn := testenv.Pool(b)
	org := ids.New(ids.Org)
	if _, err := pool.Exec(b.Context(), `INSERT INTO organizations (id, name, api_version) VALUES ($1, 'Bench', '2026-11-01')`, org); err != nil {
		b.Fatal(err)
	}
	key, _ := apikey.Generate(apikey.Secret, apikey.Sandbox)
	h := apikey.Hash(key)
	if _, err := pool.Exec(b.Context(), `INSERT INTO api_keys (id, organization_id, environment, kind, prefix, key_hash, last4, created_by)
		VALUES ($1, $2, 'sandbox', 'secret', 'sk_test_', $3, 'xxxx', 'bench')`, ids.New(ids.Key), org, h[:]); err != nil {
		b.Fatal(err)
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"object":"customer","id":"cus_123"}`))
	}))
	defer up.Close()

	basePort, gwPort := testenv.FreePort(b), testenv.FreePort(b)
	upstream := strings.TrimPrefix(up.URL, "http://")
	src := fmt.Sprintf(`{
	admin off
	persist_config off
	auto_https off
	log {
		level ERROR
	}
}
http://127.0.0.1:%d {
	reverse_proxy %s
}
http://127.0.0.1:%d {
	request_id
	api_key {
		database_url "%s"
		identity_secret bench-secret
	}
	reverse_proxy %s
}
`, basePort, upstream, gwPort, dsn, upstream)
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := caddy.Load(cfg, true); err != nil {
		b.Fatal(err)
	}
	defer caddy.Stop()

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	call := func(url string) error {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	gw := fmt.Sprintf("http://127.0.0.1:%d/v1/customers/cus_123", gwPort)
	deadline := time.Now().Add(5 * time.Second)
	for err := call(gw); err != nil; err = call(gw) {
		if time.Now().After(deadline) {
			b.Fatalf("gateway not answering 200: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The LISTEN connection flushes the cache when it comes up: warm after.
	time.Sleep(500 * time.Millisecond)
	_ = call(gw)

	for _, tc := range []struct{ name, url string }{
		{"baseline", fmt.Sprintf("http://127.0.0.1:%d/v1/customers/cus_123", basePort)},
		{"gatehouse", gw},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var mu sync.Mutex
			var all []time.Duration
			b.SetParallelism(4)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var lat []time.Duration
				for pb.Next() {
					start := time.Now()
					if err := call(tc.url); err != nil {
						b.Error(err)
						return
					}
					lat = append(lat, time.Since(start))
				}
				mu.Lock()
				all = append(all, lat...)
				mu.Unlock()
			})
			b.StopTimer()
			if len(all) > 0 {
				slices.Sort(all)
				b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
			}
		})
	}
}
