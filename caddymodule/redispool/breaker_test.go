package redispool

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock; a batcher's sender reads it from its own
// goroutine.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) { c.set(c.now().Add(d)) }

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func TestBreakerOpensAfterConsecutiveFailuresAndProbes(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	br := &breaker{now: clock.now}

	// Failures below the threshold, or broken by an answer, keep it closed.
	for range BreakerThreshold - 1 {
		br.record(false)
	}
	br.record(true)
	for range BreakerThreshold - 1 {
		br.record(false)
	}
	if !br.allow() {
		t.Fatalf("open after %d failures, want %d consecutive", BreakerThreshold-1, BreakerThreshold)
	}

	br.record(false) // the threshold
	if br.allow() {
		t.Fatal("closed after the threshold of consecutive failures")
	}
	clock.advance(BreakerCooldown - time.Millisecond)
	if br.allow() {
		t.Fatal("a probe before the cooldown passed")
	}
	clock.advance(time.Millisecond)
	if !br.allow() {
		t.Fatal("no probe once the cooldown passed")
	}
	if br.allow() {
		t.Fatal("a second call let through while the probe is out")
	}

	// The probe fails: open for another cooldown.
	br.record(false)
	clock.advance(BreakerCooldown / 2)
	if br.allow() {
		t.Fatal("a call let through right after a failed probe")
	}
	// A probe whose answer never comes (its call expired unsent) does not
	// wedge the circuit: another goes after the next cooldown.
	clock.advance(BreakerCooldown)
	if !br.allow() {
		t.Fatal("no probe a cooldown after the failed one")
	}
	clock.advance(BreakerCooldown)
	if !br.allow() {
		t.Fatal("no new probe after an unanswered one")
	}
	br.record(true)
	for range 5 {
		if !br.allow() {
			t.Fatal("still open after Redis answered the probe")
		}
	}
}

// A hung Redis costs a few timeouts, then calls fail at once; when Redis
// answers again, the first probe closes the circuit.
func TestBatcherFailsFastWhileRedisHangs(t *testing.T) {
	b, f, clock, prefix := frozenBatcher(t)
	ctx := context.Background()
	call := func(timeout time.Duration) (time.Duration, error) {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		start := time.Now()
		err := incr.Run(cctx, b, []string{prefix + "n"}).Err()
		return time.Since(start), err
	}
	if _, err := call(time.Second); err != nil {
		t.Fatalf("before the freeze: %v", err)
	}
	f.freeze()
	for i := range BreakerThreshold {
		if _, err := call(50 * time.Millisecond); err == nil || errors.Is(err, ErrCircuitOpen) {
			t.Fatalf("call %d while Redis hangs: %v, want a timeout", i+1, err)
		}
	}
	// A frozen Redis answers nothing: a refusal that waited would take the
	// call's whole 10 s, one that did not takes next to nothing.
	took, err := call(10 * time.Second)
	if !errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("after %d timeouts: %v, want ErrCircuitOpen", BreakerThreshold, err)
	}
	if took > time.Second {
		t.Errorf("an open circuit took %s to refuse a call", took)
	}

	f.thaw()
	if _, err := call(time.Second); !errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("within the cooldown: %v, want ErrCircuitOpen", err)
	}
	clock.advance(BreakerCooldown)
	if _, err := call(5 * time.Second); err != nil {
		t.Fatalf("the probe after Redis came back: %v", err)
	}
	if _, err := call(5 * time.Second); err != nil {
		t.Fatalf("after a successful probe: %v", err)
	}
}

// Calls that must be tried (Always) go to Redis even while the circuit is
// open.
func TestAlwaysCallsPassAnOpenCircuit(t *testing.T) {
	b, f, _, prefix := frozenBatcher(t)
	ctx := context.Background()
	f.freeze()
	openCircuit(t, b, prefix)
	f.thaw()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := incr.Run(cctx, b.Always(), []string{prefix + "n"}).Err(); err != nil {
		t.Fatalf("an Always call with the circuit open: %v", err)
	}
}

// openCircuit opens b's circuit with BreakerThreshold calls that time out
// on its frozen Redis.
func openCircuit(t *testing.T, b *Batcher, prefix string) {
	t.Helper()
	ctx := context.Background()
	for range BreakerThreshold {
		cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		_ = incr.Run(cctx, b, []string{prefix + "n"}).Err()
		cancel()
	}
	if err := incr.Run(ctx, b, []string{prefix + "n"}).Err(); !errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("circuit not open after %d timeouts: %v", BreakerThreshold, err)
	}
}
