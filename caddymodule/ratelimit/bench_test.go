package ratelimit

import (
	"context"
	"net/http"
	"regexp"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/gatehouse/gatehouse/internal/testenv"
)

// BenchmarkServeHTTP is the handler's cost per request with four limits —
// per key, per organisation, per IP and a monthly quota — decided in one
// round trip to the real Redis. Limits are high enough that every request
// is admitted (the full write path).
//
//	go test -run '^$' -bench ServeHTTP -benchmem ./caddymodule/ratelimit/
func BenchmarkServeHTTP(b *testing.B) {
	rdb, prefix := testenv.Redis(b)
	h := provision(b, &Handler{
		Policies: []*Policy{
			perKey(Rate{Requests: 1 << 30}),
			{Name: "per-org", Key: "{http.auth.api_key.org_id}", Rate: Rate{Requests: 1 << 30}},
			{Name: "per-ip", Key: "{http.vars.client_ip}", Rate: Rate{Requests: 1 << 30}},
		},
		Quotas: []*Quota{{Name: "monthly", Key: "{http.auth.api_key.org_id}", Limit: 1 << 40}},
	}, prefix)

	// Requests are built up front (512 keys in 64 organisations from 250
	// addresses) so that only the handler is measured.
	reqs := make([]*http.Request, 512)
	for i := range reqs {
		c := caller{org: "org_" + strconv.Itoa(i%64), key: "key_" + strconv.Itoa(i), env: "live"}
		reqs[i] = newRequest(c, "192.0.2."+strconv.Itoa(i%250))
	}
	run := func(b *testing.B, parallel bool) {
		one := func(i int) {
			if status, _ := serve(b, h, reqs[i%len(reqs)]); status != http.StatusOK {
				b.Fatalf("status %d", status)
			}
		}
		b.ReportAllocs()
		// Redis' own time per script call, as Redis counts it.
		before := evalshaUsec(b, rdb)
		defer func() { b.ReportMetric((evalshaUsec(b, rdb)-before)/float64(b.N), "redis-µs/op") }()
		if !parallel {
			for i := 0; b.Loop(); i++ {
				one(i)
			}
			return
		}
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				one(i)
			}
		})
	}
	b.Run("serial", func(b *testing.B) { run(b, false) })
	b.Run("parallel", func(b *testing.B) { run(b, true) })
}

var evalshaStat = regexp.MustCompile(`cmdstat_evalsha:calls=\d+,usec=(\d+)`)

// evalshaUsec is the microseconds Redis has spent in EVALSHA since its
// statistics were last reset.
func evalshaUsec(b *testing.B, rdb *redis.Client) float64 {
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	m := evalshaStat.FindStringSubmatch(info)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}
