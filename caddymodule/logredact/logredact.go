// Package logredact is a Caddy log field filter
// (caddy.logging.encoders.filter.gatehouse_redact) that redacts Caddy's own
// process logs as request logs are redacted: Caddy masks only the
// Authorization, Proxy-Authorization, Cookie and Set-Cookie headers of the
// requests it logs (an upstream's aborted response, a handler's error), so
// a query's api_key=…, an X-Api-Key header or the gateway's own signed
// identity (X-Gateway-Signature, which a reader of the log could replay to
// the upstream) would be written as sent. The demo Caddyfile applies it:
//
//	log {
//		format filter {
//			wrap json
//			fields {
//				request>uri gatehouse_redact
//				request>headers gatehouse_redact
//			}
//		}
//	}
package logredact

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/logging"
	"go.uber.org/zap/zapcore"

	"github.com/gatehouse/gatehouse/internal/redact"
)

func init() {
	caddy.RegisterModule(Filter{})
}

// Filter redacts a URI (a string field: redact.LogURI), a set of headers
// (request>headers: redact.LogHeaders) or one header's values
// (request>headers>Name: keys and card numbers masked). Other fields pass
// unchanged.
type Filter struct{}

// CaddyModule returns the Caddy module information.
func (Filter) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.logging.encoders.filter.gatehouse_redact",
		New: func() caddy.Module { return new(Filter) },
	}
}

// UnmarshalCaddyfile reads `<field> gatehouse_redact`, which takes no
// arguments and no block.
func (*Filter) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the filter's name
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(d.Nesting()) {
		return d.Errf("gatehouse_redact has no options (got '%s')", d.Val())
	}
	return nil
}

// Filter redacts the field.
func (Filter) Filter(in zapcore.Field) zapcore.Field {
	switch v := in.Interface.(type) {
	case caddyhttp.LoggableHTTPHeader:
		v.Header = redact.LogHeaders(v.Header)
		in.Interface = v
	case caddyhttp.LoggableStringArray:
		red := make(caddyhttp.LoggableStringArray, len(v))
		for i, s := range v {
			red[i] = redact.LogURI(s)
		}
		in.Interface = red
	default:
		if in.Type == zapcore.StringType {
			in.String = redact.LogURI(in.String)
		}
	}
	return in
}

// Interface guards
var (
	_ logging.LogFieldFilter = (*Filter)(nil)
	_ caddyfile.Unmarshaler  = (*Filter)(nil)
)
