package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// vegetaLines renders n results sent at rate from t0, the i-th taking lat(i).
func vegetaLines(t0 time.Time, n, rate int, lat func(i int) time.Duration) string {
	var b strings.Builder
	for i := range n {
		ts := t0.Add(time.Duration(i) * time.Second / time.Duration(rate))
		fmt.Fprintf(&b, `{"code":200,"timestamp":%q,"latency":%d,"error":"","body":""}`+"\n",
			ts.Format(time.RFC3339Nano), lat(i).Nanoseconds())
	}
	return b.String()
}

func TestSaturation(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 5, 0, 0, 0, time.UTC)
	const rate, d = 1000, 3 * time.Second
	cases := []struct {
		name      string
		sent      int
		lat       func(i int) time.Duration
		saturated bool
	}{
		{"held: every request sent and answered in 1 ms", 3000, func(int) time.Duration { return time.Millisecond }, false},
		{"held: one slow answer mid-run", 3000, func(i int) time.Duration {
			if i == 1500 {
				return 80 * time.Millisecond
			}
			return time.Millisecond
		}, false},
		// Every request sent on time (vegeta had idle workers), but the
		// system answers 90 % of the rate: the queue grows to ~300 requests
		// and the last answer comes 0.33 s late. The sent count alone
		// missed this.
		{"queue growing though every request was sent", 3000, func(i int) time.Duration {
			return time.Millisecond + time.Duration(float64(i)*(1/0.9-1)*float64(time.Second)/rate)
		}, true},
		{"fewer requests sent (vegeta out of workers)", 2500, func(int) time.Duration { return time.Millisecond }, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l, err := parseVegeta(strings.NewReader(vegetaLines(t0, c.sent, rate, c.lat)))
			if err != nil {
				t.Fatal(err)
			}
			achieved, sat := saturation(l, rate, d)
			if sat != c.saturated {
				t.Errorf("saturated = %v (achieved %.1f/s of %d/s), want %v", sat, achieved, rate, c.saturated)
			}
		})
	}
}
