package redispool

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// The circuit breaker keeps a Redis that has stopped answering from costing
// every request its full timeout. A refused connection fails in
// microseconds anyway; a hung or partitioned Redis does not: each call
// waits for its deadline (rate_limit's default is 500 ms). After
// BreakerThreshold consecutive batches fail without a reply from Redis, the
// circuit opens: calls fail at once with ErrCircuitOpen, and the modules
// apply their policy (rate_limit fails open or closed, idempotency answers
// 503 idempotency_unavailable) without waiting. Once per BreakerCooldown
// one call goes through as a probe; the first batch Redis answers closes
// the circuit. A reply that is a Redis error (a script error, NOSCRIPT) is
// an answer: only transport failures and timeouts count.
const (
	BreakerThreshold = 3
	BreakerCooldown  = time.Second
)

// ErrCircuitOpen is the error of a call refused because Redis has stopped
// answering.
var ErrCircuitOpen = errors.New("redis is not answering (circuit open after repeated failures; probing again every second)")

type breaker struct {
	now      func() time.Time // time.Now; tests inject a clock
	failures atomic.Int64     // consecutive failed batches

	mu        sync.Mutex
	openUntil time.Time // while open: no call before this but the probe
}

// allow reports whether a call may go to Redis: always while the circuit
// is closed; while it is open, one call per cooldown (the probe).
func (br *breaker) allow() bool {
	if br.failures.Load() < BreakerThreshold {
		return true
	}
	br.mu.Lock()
	defer br.mu.Unlock()
	now := br.now()
	if now.Before(br.openUntil) {
		return false
	}
	br.openUntil = now.Add(BreakerCooldown)
	return true
}

// record notes whether Redis answered a batch.
func (br *breaker) record(answered bool) {
	if answered {
		if br.failures.Load() != 0 {
			br.failures.Store(0)
		}
		return
	}
	if br.failures.Add(1) >= BreakerThreshold {
		br.mu.Lock()
		br.openUntil = br.now().Add(BreakerCooldown)
		br.mu.Unlock()
	}
}

// answered reports whether err, a command's outcome, came from Redis
// itself (nil or a Redis error reply) rather than from the transport.
func answered(err error) bool {
	var rerr redis.Error
	return err == nil || errors.As(err, &rerr)
}
