package apikey

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	keyformat "github.com/gatehouse/gatehouse/internal/apikey"
)

// ScopeRule says which scope a restricted key needs for some requests. Rules
// are tried in order and the first whose method and path match decides.
// Secret keys hold every scope and skip the rules. A request that matches no
// rule is refused for restricted keys: an endpoint added to the gateway
// without a rule is reachable only by secret keys until someone decides
// which scope guards it.
type ScopeRule struct {
	// Scope is the scope required, e.g. "customers:read"; one of the
	// scopes of internal/apikey.
	Scope string `json:"scope"`

	// Methods the rule applies to, upper case (GET, HEAD, POST, PUT,
	// PATCH, DELETE, OPTIONS). Empty means every method.
	Methods []string `json:"methods,omitempty"`

	// Paths are path patterns with the semantics of Caddy's path matcher
	// (exact, "/prefix*", "*suffix", globs; case-insensitive, on the
	// cleaned path), so a rule sees a path exactly as the routes do.
	Paths []string `json:"paths"`
}

// knownMethods are the methods a rule may name.
var knownMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

func (sr ScopeRule) validate() error {
	if !keyformat.ValidScope(sr.Scope) {
		return fmt.Errorf("unknown scope %q; scopes are %s", sr.Scope, strings.Join(keyformat.Scopes, ", "))
	}
	for _, m := range sr.Methods {
		if !slices.Contains(knownMethods, m) {
			return fmt.Errorf("scope %s: unknown method %q; use %s (upper case) or * for all", sr.Scope, m, strings.Join(knownMethods, ", "))
		}
	}
	if len(sr.Paths) == 0 {
		return fmt.Errorf("scope %s: no path patterns", sr.Scope)
	}
	for _, p := range sr.Paths {
		if !strings.HasPrefix(p, "/") && !strings.HasPrefix(p, "*") {
			return fmt.Errorf("scope %s: path pattern %q must start with / (or * for a suffix match)", sr.Scope, p)
		}
	}
	return nil
}

// rule is a provisioned ScopeRule.
type rule struct {
	scope   string
	methods []string // nil: any
	paths   caddyhttp.MatchPath
}

func compileRules(ctx caddy.Context, rules []ScopeRule) ([]rule, error) {
	out := make([]rule, 0, len(rules))
	for _, sr := range rules {
		mp := caddyhttp.MatchPath(slices.Clone(sr.Paths))
		if err := mp.Provision(ctx); err != nil {
			return nil, fmt.Errorf("scope %s: %w", sr.Scope, err)
		}
		out = append(out, rule{scope: sr.Scope, methods: sr.Methods, paths: mp})
	}
	return out, nil
}

// requiredScope is the scope the first matching rule requires.
func requiredScope(rules []rule, r *http.Request) (string, bool) {
	for i := range rules {
		rl := &rules[i]
		if rl.methods != nil && !slices.Contains(rl.methods, r.Method) {
			continue
		}
		if rl.paths.Match(r) {
			return rl.scope, true
		}
	}
	return "", false
}
