// Package shorthand undoes, in the path templates our directives take
// (emit_events' `on` rules, request_log's `route`), the Caddyfile
// adapter's expansion of placeholder shorthands: it rewrites {file} to
// {http.request.uri.path.file} in every token before a directive sees it,
// so a template segment named like a shorthand ({file}, {host}, {path},
// {method}…) reached the directive as a name the operator never wrote.
package shorthand

import (
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

// PathTemplate is template with each segment that is an expanded
// shorthand written back as the shorthand.
func PathTemplate(template string) string {
	segs := strings.Split(template, "/")
	for i, s := range segs {
		if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
			if short := httpcaddyfile.WasReplacedPlaceholderShorthand(s); short != "" {
				segs[i] = short
			}
		}
	}
	return strings.Join(segs, "/")
}
