package apikey

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/gatehouse/gatehouse/caddymodule/internal/repeats"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("api_key", parseCaddyfile)
	// In the authentication slot, after request_body and the rewrites (so
	// scope rules see the path that is proxied) and before everything
	// that needs the caller: later Gatehouse directives (rate limits,
	// idempotency, request logs, events) order themselves between
	// basic_auth and reverse_proxy.
	httpcaddyfile.RegisterDirectiveOrder("api_key", httpcaddyfile.Before, "basic_auth")
}

// parseCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	api_key [<matcher>] {
//		database_url             <url>
//		identity_secret          <secret>
//		scope                    <scope> <methods> <paths...>
//		cache_ttl                <duration>
//		negative_cache_ttl       <duration>
//		cache_size               <entries>
//		query_timeout            <duration>
//		last_used_flush_interval <duration>
//		unknown_key_limit        <per second>|off
//	}
//
// <methods> is a comma-separated list (GET,HEAD) or * for every method;
// paths are path-matcher patterns such as /v1/customers*. scope may repeat;
// the first matching rule decides. Use {env.VAR} placeholders for the
// database URL and the secret so they stay out of the adapted config.
func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	h.Next() // consume directive name
	if h.NextArg() {
		return nil, h.Errf("api_key takes no arguments besides a matcher; configure it in a block (got '%s')", h.Val())
	}
	ak := new(Handler)
	given := repeats.Refuse("api_key", "scope")
	for h.NextBlock(0) {
		sub := h.Val()
		if err := given.Check(h.Dispenser, sub); err != nil {
			return nil, err
		}
		switch sub {
		case "database_url", "identity_secret":
			var v string
			if !h.AllArgs(&v) {
				return nil, h.ArgErr()
			}
			if sub == "database_url" {
				ak.DatabaseURL = v
			} else {
				ak.IdentitySecret = v
			}

		case "scope":
			args := h.RemainingArgs()
			if len(args) < 3 {
				return nil, h.Errf("scope needs <scope> <methods> <paths...>, e.g. scope customers:read GET,HEAD /v1/customers*")
			}
			sr := ScopeRule{Scope: args[0], Paths: args[2:]}
			if strings.HasPrefix(args[1], "/") {
				return nil, h.Errf("scope %s: expected methods (e.g. GET,HEAD or *) before the paths, got '%s'", args[0], args[1])
			}
			if args[1] != "*" {
				for _, m := range strings.Split(args[1], ",") {
					sr.Methods = append(sr.Methods, strings.ToUpper(strings.TrimSpace(m)))
				}
			}
			if err := sr.validate(); err != nil {
				return nil, h.Err(err.Error())
			}
			ak.Scopes = append(ak.Scopes, sr)

		case "cache_ttl", "negative_cache_ttl", "query_timeout", "last_used_flush_interval":
			var v string
			if !h.AllArgs(&v) {
				return nil, h.ArgErr()
			}
			d, err := caddy.ParseDuration(v)
			if err != nil {
				return nil, h.Errf("parsing %s: %v", sub, err)
			}
			if d <= 0 {
				return nil, h.Errf("%s must be positive, got %s", sub, v)
			}
			switch sub {
			case "cache_ttl":
				ak.CacheTTL = caddy.Duration(d)
			case "negative_cache_ttl":
				ak.NegativeCacheTTL = caddy.Duration(d)
			case "query_timeout":
				ak.QueryTimeout = caddy.Duration(d)
			case "last_used_flush_interval":
				ak.LastUsedFlushInterval = caddy.Duration(d)
			}

		case "cache_size":
			var v string
			if !h.AllArgs(&v) {
				return nil, h.ArgErr()
			}
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return nil, h.Errf("cache_size must be a positive number of entries, got '%s'", v)
			}
			ak.CacheSize = n

		case "unknown_key_limit":
			var v string
			if !h.AllArgs(&v) {
				return nil, h.ArgErr()
			}
			if v == "off" {
				ak.UnknownKeyLimit = -1
				break
			}
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return nil, h.Errf("unknown_key_limit must be a positive number of unknown keys per second from one address, or off; got '%s'", v)
			}
			ak.UnknownKeyLimit = n

		default:
			return nil, h.Errf("unrecognized api_key subdirective '%s'", sub)
		}
	}
	return ak, nil
}
