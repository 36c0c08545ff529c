package repeats

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// Check walks a block as the directives' parsers do; the second single
// setting is refused at its own line, whatever came between.
func TestCheckRefusesTheSecondSingleSetting(t *testing.T) {
	d := caddyfile.NewTestDispenser("x {\n\tmatch a\n\tttl 1\n\tmatch b\n\tlimit 2\n\tttl 3\n}")
	d.Next()
	g := Refuse("x", "match")
	var err error
	for d.NextBlock(0) && err == nil {
		err = g.Check(d, d.Val())
		d.RemainingArgs()
	}
	if err == nil || !strings.Contains(err.Error(), "x: ttl given twice; give it once") || !strings.Contains(err.Error(), ":6") {
		t.Fatalf("err = %v, want ttl refused at line 6", err)
	}
}
