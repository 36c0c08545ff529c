package redispool

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gatehouse/gatehouse/internal/testenv"
)

var incr = redis.NewScript(`return redis.call('INCR', KEYS[1])`)

// newTestBatcher is the batcher of the shared client the modules get.
func newTestBatcher(t *testing.T) (*Batcher, *redis.Client, string) {
	t.Helper()
	rdb, prefix := testenv.Redis(t)
	url := testenv.RedisURL(t)
	c, err := Get(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Release(url) })
	t.Cleanup(func() { rdb.Del(context.Background(), prefix+"n") })
	return c.Scripts, rdb, prefix
}

// Concurrent script calls share pipelines, and each still runs exactly once
// and gets its own reply.
func TestBatcherCoalescesConcurrentCalls(t *testing.T) {
	b, _, prefix := newTestBatcher(t)
	const n = 400
	before := b.sent.Load()
	got := make([]int64, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			v, err := incr.Run(ctx, b, []string{prefix + "n"}).Int64()
			if err != nil {
				t.Errorf("call %d: %v", i, err)
			}
			got[i] = v
		})
	}
	close(start)
	wg.Wait()
	slices.Sort(got)
	for i, v := range got {
		if v != int64(i+1) {
			t.Fatalf("replies are not 1..%d, each once: got %v", n, got)
		}
	}
	if sent := b.sent.Load() - before; sent >= n {
		t.Errorf("%d calls went out in %d pipelines: nothing was coalesced", n, sent)
	} else {
		t.Logf("%d calls in %d pipelines", n, sent)
	}
}

// A script Redis does not know yet (after SCRIPT FLUSH or a restart) is
// loaded through EVAL, as redis.Script.Run does on a plain client.
func TestBatcherLoadsUnknownScripts(t *testing.T) {
	b, rdb, prefix := newTestBatcher(t)
	ctx := context.Background()
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	for want := int64(1); want <= 2; want++ {
		v, err := incr.Run(ctx, b, []string{prefix + "n"}).Int64()
		if err != nil || v != want {
			t.Fatalf("run %d: %d, %v", want, v, err)
		}
	}
}

// A caller stops waiting at its own deadline even when Redis does not
// answer, and the batcher serves again once Redis does.
func TestBatcherHonoursCallerDeadlines(t *testing.T) {
	b, rdb, prefix := newTestBatcher(t)
	clock := &fakeClock{t: time.Now()}
	b.breaker.now = clock.now
	ctx := context.Background()
	// Warm the script cache so the calls below are pure EVALSHA.
	if err := incr.Load(ctx, rdb).Err(); err != nil {
		t.Fatal(err)
	}
	// Redis stops serving clients' commands for 1 s.
	if err := rdb.Do(ctx, "CLIENT", "PAUSE", 1000, "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	const n = 50
	var wg sync.WaitGroup
	started := time.Now()
	for range n {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			defer cancel()
			// The deadline as such for a waiting call; an i/o timeout for
			// the one its own goroutine was sending.
			if err := incr.Run(cctx, b, []string{prefix + "n"}).Err(); err == nil {
				t.Error("a call during the pause succeeded within its 100 ms deadline")
			}
		})
	}
	wg.Wait()
	if waited := time.Since(started); waited > 600*time.Millisecond {
		t.Errorf("callers with a 100 ms deadline waited %s", waited)
	}
	clock.advance(BreakerCooldown) // if the timeouts opened the circuit
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := incr.Run(cctx, b, []string{prefix + "n"}).Int64(); err != nil {
		t.Fatalf("after the pause: %v", err)
	}
}
