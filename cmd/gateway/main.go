// Command gateway is Caddy with the Gatehouse modules compiled in, for
// builds without xcaddy; `make gateway` builds the same from xcaddy.json.
package main

import (
	"os"
	"runtime/debug"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// Caddy's standard modules, as in the official distribution.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/gatehouse/gatehouse/caddymodule"
)

// defaultGCPercent is the garbage collector's target when GOGC is not set.
// A proxy's live heap is small (tens of MB) and its garbage is per request,
// so Go's default of 100 collects very often: measured with the full chain
// at saturation (`scripts/bench.sh -suites profile`), 400 cut the gateway's
// CPU per request by about a fifth for a peak heap still in the low hundreds
// of MB. GOGC and GOMEMLIMIT in the environment win, as usual.
const defaultGCPercent = 400

func main() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(defaultGCPercent)
	}
	caddycmd.Main()
}
