package events

import (
	"strings"

	"github.com/gatehouse/gatehouse/caddymodule/internal/shorthand"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
	"github.com/gatehouse/gatehouse/caddymodule/internal/repeats"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("emit_events", parseCaddyfile)
	// Plugins can only be ordered relative to Caddy's standard directives.
	// emit_events must wrap reverse_proxy and sit inside api_key,
	// request_id and idempotency (which goes "before invoke"); "after
	// invoke" puts it after every middleware and ahead of handle/route and
	// the responders. Each Gatehouse directive registers its own place this
	// way (the chain is listed in package caddymodule); a Caddyfile can
	// always write them inside a `route` block to make the order explicit.
	httpcaddyfile.RegisterDirectiveOrder("emit_events", httpcaddyfile.After, "invoke")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := new(Handler)
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return handler, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	emit_events [<matcher>] {
//	    brokers           <host:port...>   # default {env.KAFKA_BROKERS}, else 127.0.0.1:9092
//	    spool_dir         <dir>            # default {env.DATA_DIR}/spool/events
//	    topic             <name>           # default platform.events.v1
//	    max_response_size <size>           # largest body that becomes an event, default 256KiB, at most 1MB
//	    finish_timeout    <duration>       # how long a request keeps going after its client hung up, default 30s
//	    on <METHOD> <path> [<status>] <event type>
//	    on …
//	}
//
// Each `on` line is a rule: the method (POST, PUT, PATCH, DELETE, GET), the
// path with {name} for a variable segment, the status (2xx, the default, or
// one success code such as 201) and the event type (customer.created). The
// first matching rule wins. Paths match as Caddy's path matchers match them:
// cleaned (//, a trailing /, . and ..) and without regard to case. For
// example:
//
//	emit_events {
//	    brokers {env.KAFKA_BROKERS}
//	    spool_dir {env.DATA_DIR}/spool/events
//	    on POST /v1/customers 2xx customer.created
//	    on POST /v1/customers/{id} 2xx customer.updated
//	    on DELETE /v1/customers/{id} 2xx customer.deleted
//	}
//
// (caddy fmt writes one space between tokens; aligned columns would make
// `caddy adapt` warn that the file is not formatted.)
//
// Sizes are bytes with an optional unit: KB, MB (powers of 1000) or KiB,
// MiB (powers of 1024).
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.Errf("emit_events takes no arguments, only a block of settings and `on` rules (got '%s')", d.Val())
	}
	given := repeats.Refuse("emit_events", "on")
	for d.NextBlock(0) {
		sub := d.Val()
		if err := given.Check(d, sub); err != nil {
			return err
		}
		switch sub {
		case "brokers":
			h.Brokers = d.RemainingArgs()
			if len(h.Brokers) == 0 {
				return d.Errf("emit_events: brokers needs at least one host:port")
			}
		case "spool_dir":
			if !d.AllArgs(&h.SpoolDir) {
				return d.Errf("emit_events: spool_dir takes one directory")
			}
		case "topic":
			if !d.AllArgs(&h.Topic) || h.Topic == "" {
				return d.Errf("emit_events: topic takes one topic name")
			}
		case "max_response_size":
			var s string
			if !d.AllArgs(&s) {
				return d.Errf("emit_events: max_response_size takes one size, e.g. 256KiB")
			}
			n, err := humanize.ParseBytes(s)
			if err != nil || n == 0 {
				return d.Errf("emit_events: max_response_size %q: want a positive size such as 262144, 256KiB or 1MB", s)
			}
			if n > MaxResponseSizeLimit {
				return d.Errf("emit_events: max_response_size %s is over the limit of 1MB (Kafka's default message limit is 1 MiB)", s)
			}
			h.MaxResponseSize = int64(n)
		case "finish_timeout":
			var v string
			if !d.AllArgs(&v) {
				return d.Errf("emit_events: finish_timeout takes one duration, e.g. 30s")
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return d.Errf("emit_events: finish_timeout %q: want a positive duration such as 30s or 2m", v)
			}
			h.FinishTimeout = caddy.Duration(dur)
		case "on":
			r, err := parseRule(d)
			if err != nil {
				return err
			}
			h.Rules = append(h.Rules, r)
		default:
			return d.Errf("unrecognized emit_events subdirective '%s'; expected brokers, spool_dir, topic, max_response_size, finish_timeout or on", sub)
		}
	}
	if len(h.Rules) == 0 {
		return d.Errf("emit_events needs at least one rule: on <METHOD> <path> [<status>] <event type>")
	}
	seenRules := map[string]int{}
	for i, r := range h.Rules {
		cr, _ := compileRule(r) // each was checked by parseRule
		if j, dup := seenRules[cr.key()]; dup {
			return d.Errf("emit_events: rule %d (on %s %s %s) repeats rule %d: the first would always win",
				i+1, r.Method, r.Path, cr.statusText(), j)
		}
		seenRules[cr.key()] = i + 1
	}
	return nil
}

// parseRule reads `on <METHOD> <path> [<status>] <type>`.
func parseRule(d *caddyfile.Dispenser) (Rule, error) {
	args := d.RemainingArgs()
	var r Rule
	switch len(args) {
	case 3:
		r = Rule{Method: args[0], Path: shorthand.PathTemplate(args[1]), Type: args[2]}
	case 4:
		r = Rule{Method: args[0], Path: shorthand.PathTemplate(args[1]), Status: args[2], Type: args[3]}
	default:
		return r, d.Errf("emit_events: want `on <METHOD> <path> [<status>] <event type>`, e.g. `on POST /v1/customers 2xx customer.created`; got %d arguments", len(args))
	}
	if r.Status == "2xx" {
		r.Status = "" // the default; keeps the JSON minimal
	}
	if _, err := compileRule(r); err != nil {
		return r, d.Errf("emit_events: on %s: %v", strings.Join(args, " "), err)
	}
	return r, nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
