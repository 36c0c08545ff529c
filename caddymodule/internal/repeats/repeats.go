// Package repeats refuses a setting given twice in one Caddyfile block.
// Caddy's own directives let the last of two values win without a word; a
// limit or a timeout configured twice is almost always an edit gone wrong,
// so the gateway's directives say so at load instead.
package repeats

import (
	"slices"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// Guard tracks the settings seen in one block.
type Guard struct {
	where      string
	repeatable []string
	seen       map[string]bool
}

// Refuse guards a block named where in errors (e.g. "rate_limit",
// "policy per-key"); the settings named in repeatable may appear any number
// of times (lists, rules, matchers).
func Refuse(where string, repeatable ...string) *Guard {
	return &Guard{where: where, repeatable: repeatable, seen: map[string]bool{}}
}

// Check refuses the block's setting sub, at d's position, when it was
// already given and is not repeatable.
func (g *Guard) Check(d *caddyfile.Dispenser, sub string) error {
	if slices.Contains(g.repeatable, sub) {
		return nil
	}
	if g.seen[sub] {
		return d.Errf("%s: %s given twice; give it once", g.where, sub)
	}
	g.seen[sub] = true
	return nil
}
