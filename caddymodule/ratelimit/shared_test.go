package ratelimit

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"

	"github.com/gatehouse/gatehouse/caddymodule/ratelimit/keyspace"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

// One script run deciding n identical requests (how the Batcher shares the
// calls of one hot key) gives every request the answer, and leaves Redis
// in the state, that n runs one after another at the same instant would:
// through bursts, refusals, quotas running out, a window rolling over, and
// overrides lowered and raised. Two handlers with their own key prefixes
// play the same random sequence, one shared, one a request at a time.
// Some emission intervals are not whole microseconds (420 per minute, 3
// per second): the script rounds them down to one, so that no rounding
// separates the two.
func TestSharedRunDecidesLikeRunsInARow(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	clock := newClock(time.Date(2030, 3, 31, 23, 59, 0, 0, time.UTC)) // a month ends a minute in
	config := func() *Handler {
		return &Handler{
			Policies: []*Policy{
				perKey(Rate{Requests: 10, Burst: 15}),
				{Name: "per-key-minute", Key: "{http.auth.api_key.key_id}", Rate: Rate{Requests: 420, Period: caddy.Duration(time.Minute), Burst: 20}},
				{Name: "per-org", Key: "{http.auth.api_key.org_id}", Rate: Rate{Requests: 1200, Period: caddy.Duration(time.Minute), Burst: 40}},
				{Name: "per-ip", Key: "{http.vars.client_ip}", Rate: Rate{Requests: 4}},
			},
			Quotas: []*Quota{{Name: "monthly", Key: "{http.auth.api_key.key_id}", Limit: 150}},
		}
	}
	testClock = clock.Now
	shared := provision(t, config(), prefix+"shared:")
	inRow := provision(t, config(), prefix+"row:")
	testClock = nil

	// Overrides the organisation's plan may set, in both key spaces alike.
	plans := [][2]string{
		{keyspace.Field("live", "per-key", ""), keyspace.Encode(keyspace.Override{Quota: 3, Window: 1})},
		{keyspace.Field("live", "per-key", ""), keyspace.Encode(keyspace.Override{Quota: 50, Window: 1, Burst: 30})},
		{keyspace.Field("live", "monthly", liveKey.key), keyspace.Encode(keyspace.Override{Quota: 170, Window: 1})},
		{keyspace.Field("live", "per-ip", ""), keyspace.Encode(keyspace.Override{Quota: 6, Window: 2})},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	admitted, refused := 0, 0
	for step := range 300 {
		switch rng.IntN(10) {
		case 0:
			clock.Advance(time.Duration(rng.IntN(3000)) * time.Millisecond)
		case 1, 2, 3:
			clock.Advance(time.Duration(rng.IntN(300_000)) * time.Microsecond)
		}
		if rng.IntN(25) == 0 {
			p, drop := plans[rng.IntN(len(plans))], rng.IntN(3) == 0
			for _, h := range []*Handler{shared, inRow} {
				hash := keyspace.Overrides(h.KeyPrefix, "org_a")
				if drop {
					rdb.HDel(ctx, hash, p[0])
				} else {
					rdb.HSet(ctx, hash, p[0], p[1])
				}
			}
		}
		n := 1 + rng.IntN(24)
		now := clock.Now()
		req := prepared(t, shared, now)
		v := run(t, rdb, req, n)
		for i := range n {
			got, err := parseOutcome(v, req.limits, i)
			if err != nil {
				t.Fatal(err)
			}
			want, err := parseOutcome(run(t, rdb, prepared(t, inRow, now), 1), req.limits, 0)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(summary(got), summary(want)) {
				t.Fatalf("step %d, request %d of %d at %s:\n shared %v\n in row %v", step, i+1, n, now.Format(time.StampMicro), summary(got), summary(want))
			}
			if want.admitted {
				admitted++
			} else {
				refused++
			}
		}
		row := prepared(t, inRow, now)
		for j, k := range req.keys[1:] {
			if a, b := state(t, rdb, k), state(t, rdb, row.keys[j+1]); a != b {
				t.Fatalf("step %d: %s holds %s after the shared run, %s after the runs in a row", step, req.limits[j].name, a, b)
			}
		}
	}
	if admitted < 100 || refused < 100 {
		t.Fatalf("the sequence admitted %d and refused %d requests: too few of one to show anything", admitted, refused)
	}
}

// prepared is the script input of a request from liveKey at now.
func prepared(t *testing.T, h *Handler, now time.Time) request {
	t.Helper()
	h.now = func() time.Time { return now }
	r := newRequest(liveKey, "192.0.2.7")
	req, err := h.prepare(r, r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer))
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// summary is what a client and the limits' metrics see of an outcome.
func summary(o outcome) []any {
	s := []any{o.now, o.admitted}
	for _, d := range o.decisions {
		s = append(s, d.limit.name, d.Result)
	}
	return s
}

// run runs the script for n requests like req and returns its reply. The
// script sets expiries by Redis' real clock while the test's clock jumps
// ahead: in the same transaction, the state keys are made persistent, so
// that none expires between steps in one key space and not the other.
func run(t *testing.T, rdb *redis.Client, req request, n int) []int64 {
	t.Helper()
	ctx := context.Background()
	args := slices.Clone(req.args)
	args[4] = strconv.Itoa(n)
	tx := rdb.TxPipeline()
	reply := limitsScript.Eval(ctx, tx, req.keys, args...)
	for _, k := range req.keys[1:] {
		tx.Persist(ctx, k)
	}
	if _, err := tx.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	v, err := parseInts(reply.Val().(string), nil)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// state is a limit's stored state: a GCRA TAT, or a quota's window and count.
func state(t *testing.T, rdb *redis.Client, key string) string {
	t.Helper()
	ctx := context.Background()
	switch typ := rdb.Type(ctx, key).Val(); typ {
	case "string":
		return "TAT " + rdb.Get(ctx, key).Val()
	case "hash":
		v := rdb.HMGet(ctx, key, "w", "n").Val()
		return fmt.Sprintf("window %v used %v", v[0], v[1])
	default:
		return typ
	}
}
