package main

import (
	"context"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// roundTripFloor is what one bare Redis round trip costs on this machine at
// the light rate: PING from a Go client (go-redis, as the gateway uses),
// paced like the light-load runs and measured in the same rounds. One
// rate_limit decision is one round trip, and a keyed POST two, so its tail
// bounds from below what those modules can add to the p99 at light load,
// whatever the modules do.
type roundTripFloor struct {
	What     string  `json:"what"`
	Rate     int     `json:"rate_per_second"`
	Requests int     `json:"requests"`
	P50us    float64 `json:"p50_us"`
	P99us    float64 `json:"p99_us"`
	P999us   float64 `json:"p999_us"`
	// P99EachUS is each round's p99, to show the spread.
	P99EachUS []float64 `json:"p99_per_round_us"`

	latencies []float64
}

// pingAtRate sends PING at rate for d and adds the round trips to f.
func (f *roundTripFloor) pingAtRate(ctx context.Context, rdb *redis.Client, rate int, d time.Duration) error {
	tick := time.NewTicker(time.Second / time.Duration(max(rate, 1)))
	defer tick.Stop()
	end := time.Now().Add(d)
	var lat []float64
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		start := time.Now()
		if err := rdb.Ping(ctx).Err(); err != nil {
			return err
		}
		lat = append(lat, float64(time.Since(start).Nanoseconds())/1e3)
	}
	slices.Sort(lat)
	if len(lat) > 0 {
		f.P99EachUS = append(f.P99EachUS, round1(percentile(lat, 99)))
	}
	f.latencies = append(f.latencies, lat...)
	return nil
}

// summarise fills the pooled percentiles.
func (f *roundTripFloor) summarise() {
	lat := slices.Clone(f.latencies)
	slices.Sort(lat)
	f.Requests = len(lat)
	if len(lat) == 0 {
		return
	}
	f.P50us, f.P99us, f.P999us = round1(percentile(lat, 50)), round1(percentile(lat, 99)), round1(percentile(lat, 99.9))
}
