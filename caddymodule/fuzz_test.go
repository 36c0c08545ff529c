package caddymodule

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// FuzzCaddyfileDirectives feeds the Caddyfile parsers of every Gatehouse
// directive arbitrary input. An operator's typo must end in an error
// message, never a panic that takes the config load (or a reload) down.
// Seeds are the directives' golden adapt inputs.
func FuzzCaddyfileDirectives(f *testing.F) {
	seeds, _ := filepath.Glob("*/testdata/*.caddyfile")
	more, _ := filepath.Glob("*/testdata/*/*.caddyfile")
	for _, p := range append(seeds, more...) {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(string(b))
		}
	}
	f.Add(":80 {\n\trate_limit {\n\t\tpolicy p {\n\t\t\trate -1 0s\n\t\t}\n\t}\n}\n")
	f.Add(":80 {\n\tapi_key {\n\t\tscope nope GET\n\t}\n}\n")
	adapter := caddyconfig.GetAdapter("caddyfile")
	f.Fuzz(func(t *testing.T, src string) {
		_, _, _ = adapter.Adapt([]byte(src), map[string]any{"filename": "Caddyfile"})
	})
}
