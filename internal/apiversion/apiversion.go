// Package apiversion lists the dated API versions (DESIGN §5). The gateway
// validates and pins them; upstreams read the resolved one from the signed
// identity and render accordingly.
package apiversion

import "slices"

// Header is the request and response header carrying the version.
const Header = "Api-Version"

// Supported versions, oldest first. Each entry's change is documented in
// Changes so the docs and the code cannot drift.
var Supported = []string{"2026-06-01", "2026-11-01"}

// Changes describes what each version changed, for the docs.
var Changes = map[string]string{
	"2026-06-01": "Initial version. Customers carry their display name in `full_name`.",
	"2026-11-01": "Customer `full_name` renamed to `name` (in requests and responses).",
}

// Latest is the version new organisations are pinned to.
func Latest() string { return Supported[len(Supported)-1] }

// Valid reports whether v is a supported version.
func Valid(v string) bool { return slices.Contains(Supported, v) }

// Before reports whether version a is older than b (both supported; dates
// in ISO form compare as strings).
func Before(a, b string) bool { return a < b }
