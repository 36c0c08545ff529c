package deliverer

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Schedule is the wait before each retry: Schedule[i] separates attempt i+1
// from attempt i+2, so a delivery gets 1+len(Schedule) attempts before it is
// dead.
type Schedule []time.Duration

// Default schedules. Live retries for about three days (5 s, 5 min, 30 min,
// 2 h, 5 h, 10 h, 10 h, 24 h, 24 h: 10 attempts over 75.6 h); sandbox gives
// up after 4 attempts within about 6 minutes, so developers see failures
// fast.
var (
	DefaultLiveSchedule = Schedule{5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour,
		5 * time.Hour, 10 * time.Hour, 10 * time.Hour, 24 * time.Hour, 24 * time.Hour}
	DefaultSandboxSchedule = Schedule{5 * time.Second, time.Minute, 5 * time.Minute}
)

// Jitter is the relative spread applied to every scheduled wait (±20 %), so
// the retries of a burst that failed together do not return together.
const Jitter = 0.2

// MaxRetryAfter caps a receiver's Retry-After.
const MaxRetryAfter = 24 * time.Hour

// ParseSchedule reads a comma-separated list of Go durations ("5s,5m,30m").
func ParseSchedule(s string) (Schedule, error) {
	var out Schedule
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		d, err := time.ParseDuration(f)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("schedule entry %q is not a positive duration", f)
		}
		out = append(out, d)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("schedule %q is empty", s)
	}
	return out, nil
}

// String formats s the way ParseSchedule reads it.
func (s Schedule) String() string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = d.String()
	}
	return strings.Join(parts, ",")
}

// MaxAttempts is how many attempts a delivery gets.
func (s Schedule) MaxAttempts() int { return len(s) + 1 }

// Next returns the wait after the given number of attempts made (1 after
// the first), jittered, and false when no retry is left.
func (s Schedule) Next(attempts int) (time.Duration, bool) {
	if attempts < 1 || attempts > len(s) {
		return 0, false
	}
	base := s[attempts-1]
	f := 1 - Jitter + 2*Jitter*rand.Float64()
	return time.Duration(float64(base) * f), true
}

// retryAfter parses a Retry-After header (delay seconds or an HTTP date)
// relative to now, capped at MaxRetryAfter; ok is false when absent or
// unparseable.
func retryAfter(h string, now time.Time) (time.Duration, bool) {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0, false
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(h, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		if secs > int64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter, true
		}
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(h); err == nil {
		d = t.Sub(now)
	} else {
		return 0, false
	}
	return min(max(d, 0), MaxRetryAfter), true
}
