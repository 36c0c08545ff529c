package idempotency

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
)

// BenchmarkKeyedPOST measures the whole gateway path (client → Caddy →
// idempotency → reverse_proxy → upstream) against the real Redis:
//
//	unkeyed   no Idempotency-Key: the baseline, zero Redis calls
//	execute   a new key per request: lock, proxy, record (two round trips)
//	replay    the same key again: one round trip, no upstream call
//
// Run: go test ./caddymodule/idempotency -run '^$' -bench KeyedPOST -benchtime 5s
func BenchmarkKeyedPOST(b *testing.B) {
	_, prefix := testRedis(b)
	up := newUpstream(b)
	gw := startGateway(b, up, prefix, nil)
	body := `{"email":"jenny@example.com","name":"Jenny Rosen","metadata":{"order_id":"6735"}}`
	replayKey := newKey()
	if r := gw.do(b, req{key: replayKey, body: body}); r.status != http.StatusCreated {
		b.Fatalf("seeding the replay key: %d %s", r.status, r.body)
	}

	var seq atomic.Int64
	run := func(b *testing.B, q func() req, wantReplay bool) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				r, err := gw.send(q())
				if err != nil {
					b.Error(err)
					return
				}
				if r.status != http.StatusCreated || (r.header.Get("Idempotent-Replayed") == "true") != wantReplay {
					b.Errorf("status %d replayed=%q: %s", r.status, r.header.Get("Idempotent-Replayed"), r.body)
					return
				}
			}
		})
	}
	b.Run("unkeyed", func(b *testing.B) {
		run(b, func() req { return req{body: body} }, false)
	})
	b.Run("execute", func(b *testing.B) {
		base := newKey()
		run(b, func() req { return req{key: base + strconv.FormatInt(seq.Add(1), 10), body: body} }, false)
	})
	b.Run("replay", func(b *testing.B) {
		run(b, func() req { return req{key: replayKey, body: body} }, true)
	})
}
