package idempotency

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/gatehouse/gatehouse/caddymodule/internal/repeats"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("idempotency", parseCaddyfile)
	// Plugins can only be ordered relative to Caddy's standard directives.
	// The handler belongs after api_key and rate_limit (a refused request
	// must never reach it) and before emit_events and reverse_proxy;
	// "before invoke" puts it last among the standard middleware (after
	// encode, so it stores uncompressed bodies) and ahead of handle/route
	// and the responders. Each Gatehouse directive registers its own place
	// this way (the chain is listed in package caddymodule); a Caddyfile
	// can always write them inside a `route` block to make the order
	// explicit.
	httpcaddyfile.RegisterDirectiveOrder("idempotency", httpcaddyfile.Before, "invoke")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := new(Handler)
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return handler, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	idempotency [<matcher>] {
//	    redis             <url>            # default {env.REDIS_URL}, else redis://127.0.0.1:6379/0
//	    ttl               <duration>       # record lifetime, default 24h
//	    lock_ttl          <duration>       # in-flight lock lifetime and upstream bound, default 60s (or ttl if shorter), at least 100ms
//	    max_response_size <size>           # largest stored response body, default 1MB
//	    max_request_size  <size>           # largest request body with a key, default 1MB
//	    methods           <method...>      # default POST
//	    fallback_scope    <scope>          # key space when no api_key org is known; default: refuse
//	    key_prefix        <prefix>         # Redis key prefix, default gatehouse:idempotency:
//	}
//
// The block is optional. Durations take Caddy's units (ms, s, m, h, d);
// sizes are bytes with an optional unit: B, KB, MB, GB (powers of 1000, as
// in request_body's max_size) or KiB, MiB, GiB (powers of 1024).
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	given := repeats.Refuse("idempotency")
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
		case "ttl", "lock_ttl":
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(s)
			if err != nil {
				return d.Errf("idempotency: %s: %v", sub, err)
			}
			if dur <= 0 {
				return d.Errf("idempotency: %s must be positive, got %s", sub, s)
			}
			if sub == "ttl" {
				h.TTL = caddy.Duration(dur)
			} else {
				h.LockTTL = caddy.Duration(dur)
			}
		case "max_response_size", "max_request_size":
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			n, err := parseSize(s)
			if err != nil {
				return d.Errf("idempotency: %s: %v", sub, err)
			}
			if sub == "max_response_size" {
				h.MaxResponseSize = n
			} else {
				h.MaxRequestSize = n
			}
		case "methods":
			methods := d.RemainingArgs()
			if len(methods) == 0 {
				return d.ArgErr()
			}
			for _, m := range methods {
				m = strings.ToUpper(m)
				if err := checkMethod(m); err != nil {
					return d.Errf("idempotency: %v", err)
				}
				h.Methods = append(h.Methods, m)
			}
		case "fallback_scope":
			if !d.AllArgs(&h.FallbackScope) {
				return d.ArgErr()
			}
		case "key_prefix":
			if !d.AllArgs(&h.KeyPrefix) {
				return d.ArgErr()
			}
		default:
			return d.Errf("unrecognized idempotency subdirective '%s'", sub)
		}
	}
	return nil
}

// parseSize reads a positive byte size such as 1048576, 512KB or 1MiB.
func parseSize(s string) (int64, error) {
	i := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	num, unit := s, ""
	if i >= 0 {
		num, unit = s[:i], strings.TrimSpace(s[i:])
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || num == "" {
		return 0, fmt.Errorf("size %q: want a whole number of bytes with an optional unit (B, KB, MB, GB, KiB, MiB, GiB)", s)
	}
	mult := map[string]int64{
		"": 1, "b": 1,
		"kb": 1e3, "mb": 1e6, "gb": 1e9,
		"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30,
	}[strings.ToLower(unit)]
	if mult == 0 {
		return 0, fmt.Errorf("size %q: unknown unit %q (use B, KB, MB, GB, KiB, MiB or GiB)", s, unit)
	}
	if n <= 0 {
		return 0, fmt.Errorf("size %q must be positive", s)
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n * mult, nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
