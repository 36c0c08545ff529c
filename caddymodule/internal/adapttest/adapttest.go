// Package adapttest runs the golden Caddyfile adapt tests of the Gatehouse
// modules: every testdata/*.caddyfile is adapted and compared with the
// testdata/*.json next to it. Run `go test ./caddymodule/... -update` to
// rewrite the JSON after an intended change, and review the diff.
package adapttest

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile" // the caddyfile adapter
)

var update = flag.Bool("update", false, "rewrite golden adapt output in testdata/")

// Adapt adapts a Caddyfile to indented JSON; warnings are errors, because a
// demo or golden config that warns is a config someone will copy.
func Adapt(t testing.TB, src string) ([]byte, error) {
	t.Helper()
	out, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		return nil, err
	}
	for _, w := range warnings {
		t.Errorf("adapt warning: %s", w.String())
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, out, "", "\t"); err != nil {
		return nil, err
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// Golden checks every *.caddyfile in dir against its .json.
func Golden(t *testing.T, dir string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.caddyfile"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden Caddyfiles in %s (%v)", dir, err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".caddyfile")
		t.Run(name, func(t *testing.T) {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Adapt(t, string(src))
			if err != nil {
				t.Fatalf("adapting %s: %v", f, err)
			}
			golden := strings.TrimSuffix(f, ".caddyfile") + ".json"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("adapting %s:\n got: %s\nwant: %s\n(run with -update if the change is intended)", f, got, want)
			}
		})
	}
}

// Rejects checks that each Caddyfile fails to adapt with an error
// containing the given text: the message a user sees must say what is
// wrong.
func Rejects(t *testing.T, cases map[string]struct{ Caddyfile, Want string }) {
	t.Helper()
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Adapt(t, tc.Caddyfile)
			if err == nil {
				t.Fatalf("adapted without error; want an error containing %q", tc.Want)
			}
			if !strings.Contains(err.Error(), tc.Want) {
				t.Fatalf("error %q does not contain %q", err, tc.Want)
			}
		})
	}
}
