package ratelimit

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/headers"

	"github.com/gatehouse/gatehouse/caddymodule/internal/adapttest"
)

// TestCaddyfileAdapts adapts every testdata/adapt/*.caddyfile and compares
// the JSON with the .json beside it (-update rewrites them).
func TestCaddyfileAdapts(t *testing.T) {
	adapttest.Golden(t, "testdata/adapt")
}

// TestAdaptedConfigsValidate runs Validate on the adapted handlers, so JSON
// configs get the same checks as Caddyfiles.
func TestAdaptedConfigsValidate(t *testing.T) {
	files, _ := filepath.Glob("testdata/adapt/*.caddyfile")
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out, err := adapttest.Adapt(t, string(src))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var tree any
		if err := json.Unmarshal(out, &tree); err != nil {
			t.Fatal(err)
		}
		handlers := findHandlers(tree)
		if len(handlers) == 0 {
			t.Fatalf("%s: no rate_limit handler in the adapted config", f)
		}
		for _, raw := range handlers {
			var h Handler
			if err := json.Unmarshal(raw, &h); err != nil {
				t.Fatal(err)
			}
			if err := h.Validate(); err != nil {
				t.Errorf("%s: adapted handler fails Validate: %v", f, err)
			}
		}
	}
}

// TestCaddyfileRefuses adapts every testdata/refuse/*.caddyfile and compares
// the error with the .err beside it (-update rewrites them): each refusal
// says what is wrong and where.
func TestCaddyfileRefuses(t *testing.T) {
	files, err := filepath.Glob("testdata/refuse/*.caddyfile")
	if err != nil || len(files) == 0 {
		t.Fatalf("no refusal cases (%v)", err)
	}
	update := false
	if f := flag.Lookup("update"); f != nil { // registered by adapttest
		update = f.Value.String() == "true"
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".caddyfile"), func(t *testing.T) {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			_, err = adapttest.Adapt(t, string(src))
			if err == nil {
				t.Fatal("adapted without error; want a refusal")
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(f, ".caddyfile") + ".err"
			if update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("got:  %swant: %s(run with -update if the change is intended)", got, want)
			}
		})
	}
}

// findHandlers returns the JSON of every rate_limit handler in tree.
func findHandlers(tree any) []json.RawMessage {
	var out []json.RawMessage
	switch v := tree.(type) {
	case map[string]any:
		if v["handler"] == "rate_limit" {
			b, _ := json.Marshal(v)
			return []json.RawMessage{b}
		}
		for _, c := range v {
			out = append(out, findHandlers(c)...)
		}
	case []any:
		for _, c := range v {
			out = append(out, findHandlers(c)...)
		}
	}
	return out
}
