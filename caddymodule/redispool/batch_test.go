package redispool

import (
	"context"
	"errors"
	"fmt"
	"net"
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
	return newTestBatcherAt(t, testenv.RedisURL(t))
}

// newTestBatcherAt is the batcher of the shared client for url (another
// address of the test Redis, such as a freezer's).
func newTestBatcherAt(t *testing.T, url string) (*Batcher, *redis.Client, string) {
	t.Helper()
	rdb, prefix := testenv.Redis(t)
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

// freezer is a TCP proxy in front of the test Redis that can stop passing
// bytes on, like a hung or partitioned Redis: what it holds goes on when it
// thaws. It freezes only the connections through it, so the Redis that
// other test packages share at the same time is not paused.
type freezer struct {
	addr   string
	mu     sync.Mutex
	thawed chan struct{} // closed while passing bytes on
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{addr: ln.Addr().String(), thawed: make(chan struct{})}
	close(f.thawed)
	var conns sync.WaitGroup
	var (
		connsMu sync.Mutex
		stopped bool // no conns.Add once Wait may have begun
	)
	t.Cleanup(func() {
		connsMu.Lock()
		stopped = true
		connsMu.Unlock()
		ln.Close()
		f.thaw()
		conns.Wait()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			connsMu.Lock()
			if stopped {
				connsMu.Unlock()
				c.Close()
				up.Close()
				return
			}
			conns.Add(2)
			connsMu.Unlock()
			go func() { defer conns.Done(); f.pipe(up, c) }()
			go func() { defer conns.Done(); f.pipe(c, up) }()
		}
	}()
	return f
}

func (f *freezer) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			f.mu.Lock()
			thawed := f.thawed
			f.mu.Unlock()
			<-thawed
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.thawed:
		f.thawed = make(chan struct{})
	default:
	}
}

func (f *freezer) thaw() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.thawed:
	default:
		close(f.thawed)
	}
}

// frozenBatcher is a batcher whose Redis can be frozen, with an injected
// clock for its circuit breaker.
func frozenBatcher(t *testing.T) (*Batcher, *freezer, *fakeClock, string) {
	t.Helper()
	opts, err := redis.ParseURL(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	f := newFreezer(t, opts.Addr)
	b, rdb, prefix := newTestBatcherAt(t, fmt.Sprintf("redis://%s/%d", f.addr, opts.DB))
	clock := &fakeClock{t: time.Now()}
	b.breaker.now = clock.now
	// Warm the script cache so the calls below are pure EVALSHA.
	if err := incr.Load(context.Background(), rdb).Err(); err != nil {
		t.Fatal(err)
	}
	return b, f, clock, prefix
}

// A caller stops waiting at its own deadline even when Redis does not
// answer, and the batcher serves again once Redis does.
func TestBatcherHonoursCallerDeadlines(t *testing.T) {
	b, f, clock, prefix := frozenBatcher(t)
	ctx := context.Background()
	f.freeze()
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
				t.Error("a call to a frozen Redis succeeded within its 100 ms deadline")
			}
		})
	}
	wg.Wait()
	if waited := time.Since(started); waited > 600*time.Millisecond {
		t.Errorf("callers with a 100 ms deadline waited %s", waited)
	}
	f.thaw()
	clock.advance(BreakerCooldown) // if the timeouts opened the circuit
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := incr.Run(cctx, b, []string{prefix + "n"}).Int64(); err != nil {
		t.Fatalf("after the thaw: %v", err)
	}
}

// A call with less than minLeft to go is not sent: it fails with its
// deadline at once and the script never runs (an idempotency lock taken
// for a caller that has already given up would block its retries).
func TestBatcherDoesNotSendCallsAboutToExpire(t *testing.T) {
	b, _, clock, prefix := frozenBatcher(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key := prefix + "late"
	deadline, _ := ctx.Deadline()

	clock.set(deadline.Add(-minLeft / 2)) // the batcher's clock: half of minLeft to go
	err := incr.Run(ctx, b, []string{key}).Err()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a call with %v left: %v, want its deadline", minLeft/2, err)
	}

	clock.set(deadline.Add(-2 * minLeft)) // enough time left: sent
	if n, err := incr.Run(ctx, b, []string{key}).Int64(); err != nil || n != 1 {
		t.Fatalf("a call with %v left: %d, %v; want 1 (the first never ran)", 2*minLeft, n, err)
	}
}
