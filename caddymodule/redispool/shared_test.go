package redispool

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// addN adds ARGV[1] to a counter and returns the new value and ARGV[1].
var addN = redis.NewScript(`return {redis.call('INCRBY', KEYS[1], ARGV[1]), tonumber(ARGV[1])}`)

// Identical calls that wait for the same batch share one script run, built
// for their number; each caller learns its place among them, and a caller
// that gave up before the run is not counted in it.
func TestBatcherSharesIdenticalCalls(t *testing.T) {
	b, f, _, prefix := frozenBatcher(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := addN.Load(ctx, b.rdb).Err(); err != nil {
		t.Fatal(err)
	}
	key := prefix + "shared"
	t.Cleanup(func() { b.rdb.Del(context.Background(), key) })
	args := func(n int) []any { return []any{strconv.Itoa(n)} }
	share := func(ctx context.Context) (int64, error) {
		cmd, index := b.EvalShaShared(ctx, addN.Hash(), []string{key}, args)
		v, err := cmd.Int64Slice()
		if err != nil {
			return 0, err
		}
		return v[0] - v[1] + 1 + int64(index), nil // this caller's own count
	}

	// A first call is held on the wire by the frozen Redis, so the next
	// ones queue behind it.
	f.freeze()
	first := make(chan error, 1)
	go func() { first <- incr.Run(ctx, b, []string{prefix + "n"}).Err() }()
	waitUntil(t, b, func() bool { return b.busy })

	gone, giveUp := context.WithCancel(ctx)
	goneDone := make(chan error, 1)
	go func() { _, err := share(gone); goneDone <- err }()
	waitUntil(t, b, func() bool { return b.queued == 1 })

	const n = 20
	got := make([]int64, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			v, err := share(ctx)
			if err != nil {
				t.Errorf("caller %d: %v", i, err)
			}
			got[i] = v
		})
	}
	waitUntil(t, b, func() bool { return b.queued == n+1 })
	giveUp()
	if err := <-goneDone; err == nil {
		t.Fatal("the caller that gave up got a reply")
	}

	sent, shared := b.sent.Load(), b.shared.Load()
	f.thaw()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	slices.Sort(got)
	for i, v := range got {
		if v != int64(i+1) {
			t.Fatalf("callers' counts are not 1..%d, each once: %v", n, got)
		}
	}
	if total, _ := b.rdb.Get(ctx, key).Int64(); total != n {
		t.Errorf("counter %d after %d live callers: the one that gave up was counted", total, n)
	}
	if d := b.sent.Load() - sent; d != 1 {
		t.Errorf("%d pipelines after the thaw, want 1", d)
	}
	if d := b.shared.Load() - shared; d != n-1 {
		t.Errorf("%d callers served by another's run, want %d", d, n-1)
	}
}

// Shared calls fail at once while the circuit is open, like any other:
// rate_limit does not wait out its timeout on a Redis that hangs.
func TestSharedCallsRespectAnOpenCircuit(t *testing.T) {
	b, f, _, prefix := frozenBatcher(t)
	ctx := context.Background()
	f.freeze()
	defer f.thaw()
	openCircuit(t, b, prefix)
	// No deadline: only the breaker can answer this call while Redis hangs.
	cmd, _ := b.EvalShaShared(ctx, incr.Hash(), []string{prefix + "n"},
		func(n int) []any { return []any{strconv.Itoa(n)} })
	if err := cmd.Err(); !errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("a shared call with the circuit open: %v, want ErrCircuitOpen", err)
	}
}

// waitUntil polls cond, read under the batcher's lock, for up to 5 s.
func waitUntil(t *testing.T, b *Batcher, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		b.mu.Lock()
		ok := cond()
		b.mu.Unlock()
		if ok {
			return
		}
	}
	t.Fatal("condition not reached in 5 s")
}
