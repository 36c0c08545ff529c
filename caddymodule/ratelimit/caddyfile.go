package ratelimit

import (
	"fmt"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/gatehouse/gatehouse/caddymodule/internal/repeats"
	"github.com/gatehouse/gatehouse/caddymodule/ratelimit/keyspace"
)

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	rl := new(Handler)
	if err := rl.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return rl, nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	rate_limit [<matcher>] {
//	    redis         <url>             # default {env.REDIS_URL}, else redis://127.0.0.1:6379/0
//	    fail_open                       # default: requests pass while Redis is down
//	    fail_closed                     # or: refuse them with 503 api_error
//	    timeout       <duration>        # Redis round trip bound, default 500ms, at least 10ms
//	    warn_interval <duration>        # least time between Redis warnings, default 10s
//	    key_prefix    <prefix>          # default $RATE_LIMIT_KEY_PREFIX, else gatehouse:
//
//	    policy <name> {                 # a GCRA rate limit; any number, evaluated together
//	        key           <template>    # partition, e.g. {http.auth.api_key.key_id}; skipped when empty
//	        rate          <requests> [<period>]  # live (and unauthenticated); period default 1s, whole seconds
//	        burst         <requests>    # default: the rate's requests
//	        sandbox_rate  <requests> [<period>]  # sandbox keys; default: rate
//	        sandbox_burst <requests>    # default: the sandbox rate's requests
//	        match         <matchers>    # only for matching requests (a per-route limit);
//	        match {                     #   one line or a block, as for named matchers;
//	            <matchers...>           #   several match lines are alternatives
//	        }
//	    }
//
//	    quota <name> {                  # requests per calendar period, UTC
//	        key           <template>    # e.g. {http.auth.api_key.org_id}
//	        limit         <requests>    # live (and unauthenticated)
//	        sandbox_limit <requests>    # default: limit
//	        period        month|day|hour  # default month
//	        match         <matchers>    # as for policies
//	    }
//	}
//
// For example, Stripe-like limits — 100 requests/s per live key and 25 per
// sandbox key, 1000/s per organisation, 50/s per client IP, 20/s per
// organisation on the customers routes, a million requests a month:
//
//	rate_limit {
//	    redis {env.REDIS_URL}
//	    policy per-key {
//	        key {http.auth.api_key.key_id}
//	        rate 100 1s
//	        sandbox_rate 25 1s
//	    }
//	    policy per-org {
//	        key {http.auth.api_key.org_id}
//	        rate 1000 1s
//	    }
//	    policy per-ip {
//	        key {client_ip}
//	        rate 50 1s
//	    }
//	    policy customers {
//	        key {http.auth.api_key.org_id}
//	        rate 20 1s
//	        match path /v1/customers*
//	    }
//	    quota monthly {
//	        key {http.auth.api_key.org_id}
//	        limit 1000000
//	    }
//	}
//
// {client_ip} is Caddy's client address, which honours the server's
// trusted_proxies; set trusted_proxies_strict with them, or Caddy takes the
// left-most X-Forwarded-For address, which a client behind the trusted
// proxy writes itself.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	failModeSet := ""
	seen := map[string]bool{}
	given := repeats.Refuse("rate_limit", "policy", "quota")
	for d.NextBlock(0) {
		sub := d.Val()
		if err := given.Check(d, sub); err != nil {
			return err
		}
		switch sub {
		case "redis":
			if !d.AllArgs(&h.Redis) {
				return d.ArgErr()
			}

		case "fail_open", "fail_closed":
			if d.NextArg() {
				return d.ArgErr()
			}
			if failModeSet != "" && failModeSet != sub {
				return d.Errf("%s conflicts with %s: choose one", sub, failModeSet)
			}
			failModeSet = sub
			h.FailClosed = sub == "fail_closed"

		case "timeout", "warn_interval":
			dur, err := parseDuration(d)
			if err != nil {
				return err
			}
			if sub == "timeout" {
				h.Timeout = dur
			} else {
				h.WarnInterval = dur
			}

		case "key_prefix":
			if !d.AllArgs(&h.KeyPrefix) {
				return d.ArgErr()
			}
			if err := keyspace.ValidPrefix(h.KeyPrefix); err != nil {
				return d.Err(err.Error())
			}

		case "policy":
			p, err := parsePolicy(d)
			if err != nil {
				return err
			}
			if seen[p.Name] {
				return d.Errf("duplicate policy or quota name %q", p.Name)
			}
			seen[p.Name] = true
			h.Policies = append(h.Policies, p)

		case "quota":
			q, err := parseQuota(d)
			if err != nil {
				return err
			}
			if seen[q.Name] {
				return d.Errf("duplicate policy or quota name %q", q.Name)
			}
			seen[q.Name] = true
			h.Quotas = append(h.Quotas, q)

		default:
			return d.Errf("unknown rate_limit subdirective %q (expected redis, fail_open, fail_closed, timeout, "+
				"warn_interval, key_prefix, policy or quota)", sub)
		}
	}
	if len(h.Policies)+len(h.Quotas) == 0 {
		return d.Err("rate_limit needs at least one policy or quota")
	}
	return nil
}

func parsePolicy(d *caddyfile.Dispenser) (*Policy, error) {
	p := new(Policy)
	start := d.Token()
	if !d.AllArgs(&p.Name) {
		return nil, d.Err("policy needs exactly one name: policy <name> { … }")
	}
	if err := validName("policy", p.Name); err != nil {
		return nil, d.Err(err.Error())
	}
	var rateSet bool
	var sandbox *Rate
	sandboxBurst := 0
	given := repeats.Refuse("policy "+p.Name, "match")
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if err := given.Check(d, sub); err != nil {
			return nil, err
		}
		switch sub {
		case "key":
			if !d.AllArgs(&p.Key) {
				return nil, d.ArgErr()
			}

		case "rate", "sandbox_rate":
			r, err := parseRate(d, p.Name, sub)
			if err != nil {
				return nil, err
			}
			if sub == "rate" {
				rateSet = true
				p.Rate.Requests, p.Rate.Period = r.Requests, r.Period
			} else {
				sandbox = &r
			}

		case "burst", "sandbox_burst":
			n, err := parseCount(d, "policy "+p.Name, sub)
			if err != nil {
				return nil, err
			}
			if sub == "burst" {
				p.Rate.Burst = int(n)
			} else {
				sandboxBurst = int(n)
			}

		case "match":
			set, err := parseMatch(d)
			if err != nil {
				return nil, fmt.Errorf("policy %s: %w", p.Name, err)
			}
			p.MatchRaw = append(p.MatchRaw, set)

		default:
			return nil, d.Errf("policy %s: unknown subdirective %q (expected key, rate, burst, sandbox_rate, "+
				"sandbox_burst or match)", p.Name, sub)
		}
	}
	if !rateSet {
		return nil, errAt(start, "policy %s: rate is required, e.g. rate 100 1s", p.Name)
	}
	if sandboxBurst != 0 {
		if sandbox == nil {
			return nil, errAt(start, "policy %s: sandbox_burst needs sandbox_rate", p.Name)
		}
		sandbox.Burst = sandboxBurst
	}
	p.SandboxRate = sandbox
	if err := p.validate(); err != nil {
		return nil, errAt(start, "%v", err)
	}
	return p, nil
}

func parseQuota(d *caddyfile.Dispenser) (*Quota, error) {
	q := new(Quota)
	start := d.Token()
	if !d.AllArgs(&q.Name) {
		return nil, d.Err("quota needs exactly one name: quota <name> { … }")
	}
	if err := validName("quota", q.Name); err != nil {
		return nil, d.Err(err.Error())
	}
	given := repeats.Refuse("quota "+q.Name, "match")
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if err := given.Check(d, sub); err != nil {
			return nil, err
		}
		switch sub {
		case "key":
			if !d.AllArgs(&q.Key) {
				return nil, d.ArgErr()
			}

		case "limit", "sandbox_limit":
			n, err := parseCount(d, "quota "+q.Name, sub)
			if err != nil {
				return nil, err
			}
			if sub == "limit" {
				q.Limit = n
			} else {
				q.SandboxLimit = n
			}

		case "period":
			if !d.AllArgs(&q.Period) {
				return nil, d.ArgErr()
			}
			switch q.Period {
			case PeriodMonth, PeriodDay, PeriodHour:
			default:
				return nil, d.Errf("quota %s: unknown period %q; use month, day or hour", q.Name, q.Period)
			}
			if q.Period == PeriodMonth {
				q.Period = "" // the default; keeps the JSON minimal
			}

		case "match":
			set, err := parseMatch(d)
			if err != nil {
				return nil, fmt.Errorf("quota %s: %w", q.Name, err)
			}
			q.MatchRaw = append(q.MatchRaw, set)

		default:
			return nil, d.Errf("quota %s: unknown subdirective %q (expected key, limit, sandbox_limit, period or match)",
				q.Name, sub)
		}
	}
	if q.Limit == 0 {
		return nil, errAt(start, "quota %s: limit is required, e.g. limit 1000000", q.Name)
	}
	if err := q.validate(); err != nil {
		return nil, errAt(start, "%v", err)
	}
	return q, nil
}

// parseRate reads "<requests> [<period>]".
func parseRate(d *caddyfile.Dispenser, policy, sub string) (Rate, error) {
	args := d.RemainingArgs()
	if len(args) < 1 || len(args) > 2 {
		return Rate{}, d.Errf("policy %s: %s takes <requests> [<period>], e.g. %s 100 1s", policy, sub, sub)
	}
	n, err := strconv.Atoi(args[0])
	if err != nil {
		return Rate{}, d.Errf("policy %s: %s %q is not a whole number of requests", policy, sub, args[0])
	}
	if n <= 0 {
		return Rate{}, d.Errf("policy %s: %s must be a positive number of requests, got %d", policy, sub, n)
	}
	r := Rate{Requests: n}
	if len(args) == 2 {
		dur, err := caddy.ParseDuration(args[1])
		if err != nil {
			return Rate{}, d.Errf("policy %s: %s period %q: %v (use s, m, h or d, e.g. 1s, 10m, 1h, 1d)",
				policy, sub, args[1], err)
		}
		if dur <= 0 {
			return Rate{}, d.Errf("policy %s: %s period must be positive, got %s", policy, sub, args[1])
		}
		if err := validPeriod(dur); err != nil {
			return Rate{}, d.Errf("policy %s: %s period: %v", policy, sub, err)
		}
		if dur != time.Second {
			r.Period = caddy.Duration(dur)
		}
	}
	return r, nil
}

// parseCount reads one positive integer.
func parseCount(d *caddyfile.Dispenser, name, sub string) (int64, error) {
	var s string
	if !d.AllArgs(&s) {
		return 0, d.ArgErr()
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, d.Errf("%s: %s %q is not a whole number of requests", name, sub, s)
	}
	if n <= 0 {
		return 0, d.Errf("%s: %s must be positive, got %d", name, sub, n)
	}
	return n, nil
}

func parseDuration(d *caddyfile.Dispenser) (caddy.Duration, error) {
	sub := d.Val()
	var s string
	if !d.AllArgs(&s) {
		return 0, d.ArgErr()
	}
	dur, err := caddy.ParseDuration(s)
	if err != nil {
		return 0, d.Errf("%s %q: %v", sub, s, err)
	}
	if dur <= 0 {
		return 0, d.Errf("%s must be positive, got %s", sub, s)
	}
	if sub == "timeout" && dur < MinTimeout {
		return 0, d.Errf("timeout %s is under %s: no Redis call would be sent in time", s, MinTimeout)
	}
	return caddy.Duration(dur), nil
}

// errAt is d.Errf for an earlier token, so that a problem found at the end
// of a block (a missing subdirective) points at the line that opened it.
func errAt(tok caddyfile.Token, format string, args ...any) error {
	d := caddyfile.NewDispenser([]caddyfile.Token{tok})
	d.Next()
	return d.Errf(format, args...)
}

// Interface guard.
var _ caddyfile.Unmarshaler = (*Handler)(nil)

// parseMatch reads a match line or block; one without matchers is refused
// (checkMatch).
func parseMatch(d *caddyfile.Dispenser) (caddy.ModuleMap, error) {
	set, err := caddyhttp.ParseCaddyfileNestedMatcherSet(d)
	if err != nil {
		return nil, fmt.Errorf("match: %w", err)
	}
	if err := checkMatch(caddyhttp.RawMatcherSets{set}); err != nil {
		return nil, d.Errf("match: %v", err)
	}
	return set, nil
}
