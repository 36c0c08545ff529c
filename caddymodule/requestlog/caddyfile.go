package requestlog

import (
	"math"
	"strconv"

	"github.com/gatehouse/gatehouse/caddymodule/internal/shorthand"

	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
	"github.com/gatehouse/gatehouse/caddymodule/internal/repeats"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("request_log", parseCaddyfile)
	// Right after request_id (which is registered After tracing): before
	// map, vars, request_body and authentication, so that every outcome —
	// auth refusals, rate limits, upstream errors — is logged with the
	// request id. Anchored on a standard directive, as Caddy requires, so
	// the position does not depend on plugin load order.
	httpcaddyfile.RegisterDirectiveOrder("request_log", httpcaddyfile.Before, "map")
}

// parseCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	request_log [<matcher>] [{
//		brokers          <host:port...>      # default $KAFKA_BROKERS or 127.0.0.1:9092; one entry may hold a comma-separated list
//		topic            <name>              # default gateway.request-logs.v1
//		spool_dir        <path>              # default {env.DATA_DIR}/spool/request-logs
//		spool_limit      <size>              # default 1GiB
//		memory_limit     <records>           # default 20000; at most 64 MiB either way
//		redact_query     <name...>           # added to api_key key token secret password access_token
//		redact_fields    <name...>           # added to password secret token api_key card_number cvc ssn …
//		headers          <name...>           # added to the allowlist (Content-Type, User-Agent, Request-Id, …)
//		route            <template...>       # e.g. /v1/customers/{id}
//		max_body_capture <size>              # default 8KiB; bodies only when the org enabled capture
//		upstream_error_messages on|off       # default on; off keeps only the type, code and param of the upstream's errors
//	}]
//
// Every subdirective is optional; those that take lists may be repeated,
// the others not. Sizes are like 512KB, 8KiB, 1GiB. A reload that changes
// spool_limit or memory_limit keeps the running spool's values (and says
// so in the log) until the gateway restarts.
func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	h.Next() // consume directive name
	if h.NextArg() {
		return nil, h.Errf("request_log takes no arguments, only a block (got '%s')", h.Val())
	}
	rl := new(Handler)
	given := repeats.Refuse("request_log", "brokers", "redact_query", "redact_fields", "headers", "route")
	for h.NextBlock(0) {
		sub := h.Val()
		args := h.RemainingArgs()
		if len(args) == 0 {
			return nil, h.Errf("request_log %s: missing value", sub)
		}
		if err := given.Check(h.Dispenser, sub); err != nil {
			return nil, err
		}
		if h.NextBlock(1) {
			return nil, h.Errf("request_log %s takes no block", sub)
		}
		one := func() (string, error) {
			if len(args) != 1 {
				return "", h.Errf("request_log %s takes exactly one value, got %d", sub, len(args))
			}
			return args[0], nil
		}
		switch sub {
		case "brokers":
			rl.Brokers = append(rl.Brokers, args...)
		case "topic":
			v, err := one()
			if err != nil {
				return nil, err
			}
			rl.Topic = v
		case "spool_dir":
			v, err := one()
			if err != nil {
				return nil, err
			}
			rl.SpoolDir = v
		case "spool_limit":
			v, err := one()
			if err != nil {
				return nil, err
			}
			n, err := humanize.ParseBytes(v)
			if err != nil || n == 0 || n > math.MaxInt64 {
				return nil, h.Errf("request_log spool_limit: invalid size '%s' (use e.g. 512MiB, 1GiB)", v)
			}
			rl.SpoolLimit = int64(n)
		case "memory_limit":
			v, err := one()
			if err != nil {
				return nil, err
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return nil, h.Errf("request_log memory_limit: '%s' is not a positive number of records", v)
			}
			rl.MemoryLimit = n
		case "redact_query":
			rl.RedactQuery = append(rl.RedactQuery, args...)
		case "redact_fields":
			rl.RedactFields = append(rl.RedactFields, args...)
		case "headers":
			rl.Headers = append(rl.Headers, args...)
		case "route":
			for _, r := range args {
				r = shorthand.PathTemplate(r)
				if _, err := parseTemplate(r); err != nil {
					return nil, h.Errf("request_log %v", err)
				}
				rl.Routes = append(rl.Routes, r)
			}
		case "max_body_capture":
			v, err := one()
			if err != nil {
				return nil, err
			}
			n, err := humanize.ParseBytes(v)
			if err != nil || n > MaxMaxBodyCapture {
				return nil, h.Errf("request_log max_body_capture: invalid size '%s' (at most 1MiB, e.g. 8KiB)", v)
			}
			if n == 0 {
				return nil, h.Errf("request_log max_body_capture: must be more than 0 bytes")
			}
			rl.MaxBodyCapture = int(n)
		case "upstream_error_messages":
			v, err := one()
			if err != nil {
				return nil, err
			}
			switch v {
			case "on":
				rl.OmitUpstreamErrorMessages = false
			case "off":
				rl.OmitUpstreamErrorMessages = true
			default:
				return nil, h.Errf("request_log upstream_error_messages: '%s' is neither on nor off", v)
			}
		default:
			return nil, h.Errf("unrecognized request_log subdirective '%s'", sub)
		}
	}
	return rl, nil
}
