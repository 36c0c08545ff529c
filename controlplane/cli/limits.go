package cli

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/caddymodule/ratelimit/keyspace"
	"github.com/gatehouse/gatehouse/controlplane/limits"
)

// limitsSet gives an organisation or one of its keys its own limit for a
// rate_limit policy or quota named in the Caddyfile (a plan).
func (a *app) limitsSet(args []string) error {
	c := a.command("controlplane limits set",
		"--org ORG --env sandbox|live --policy NAME --rate N/PERIOD [--burst N] [--key KEY_ID] [--json]")
	org := c.fs.String("org", "", "organisation `id` (required)")
	env := c.fs.String("env", "", "environment: sandbox or live (required)")
	policy := c.fs.String("policy", "", "policy or quota `name` from the Caddyfile, e.g. per-key (required)")
	rate := c.fs.String("rate", "", "requests per period, e.g. 500/1s, 100000/720h; for a quota the period is ignored (required)")
	burst := c.fs.Int64("burst", 0, "GCRA burst (default: the rate's count)")
	key := c.fs.String("key", "", "limit one key `id` instead of the whole organisation (on quotas, and on policies counted per key: their key is {http.auth.api_key.key_id})")
	asJSON := c.fs.Bool("json", false, "print the override as a JSON object")
	if err := c.parse(args, map[string]*string{"org": org, "env": env, "policy": policy, "rate": rate}); err != nil {
		return err
	}
	livemode, err := parseEnv(c.name, *env)
	if err != nil {
		return err
	}
	quota, window, err := parseRate(*rate)
	if err != nil {
		return usageErrorf(c.name, "--rate: %v", err)
	}
	o := limits.Override{OrganizationID: *org, Livemode: livemode, APIKeyID: *key, Policy: *policy,
		Quota: quota, WindowSeconds: window}
	if *burst < 0 {
		return usageErrorf(c.name, "--burst must be positive")
	}
	if *burst > 0 {
		o.Burst = burst
	}
	svc, err := a.limits()
	if err != nil {
		return c.fail(err)
	}
	saved, err := svc.Set(a.ctx, a.actor(), o)
	if errors.Is(err, limits.ErrNotMirrored) {
		fmt.Fprintln(a.stderr, "warning:", err)
		err = nil
	}
	if err != nil {
		return c.fail(err)
	}
	// A misspelt name would be stored and never apply: say so. (Not
	// refused: a plan may be set up before the Caddyfile naming it runs.)
	if names, err := svc.Names(a.ctx, time.Now()); err == nil && len(names) > 0 && !slices.Contains(names, saved.Policy) {
		fmt.Fprintf(a.stderr, "warning: no running gateway has a policy or quota named %q (they have %s); "+
			"the override is stored and applies once a gateway's rate_limit names it\n", saved.Policy, strings.Join(names, ", "))
	}
	if *asJSON {
		return c.fail(writeJSON(a.stdout, saved))
	}
	fmt.Fprintf(a.stdout, "%s %s: %d per %ds for %s\n", saved.Policy, *env, saved.Quota, saved.WindowSeconds, target(saved))
	return nil
}

func (a *app) limitsList(args []string) error {
	c := a.command("controlplane limits list", "--org ORG --env sandbox|live [--json]")
	org := c.fs.String("org", "", "organisation `id` (required)")
	env := c.fs.String("env", "", "environment: sandbox or live (required)")
	asJSON := c.fs.Bool("json", false, "print a JSON list object")
	if err := c.parse(args, map[string]*string{"org": org, "env": env}); err != nil {
		return err
	}
	livemode, err := parseEnv(c.name, *env)
	if err != nil {
		return err
	}
	svc, err := a.limits()
	if err != nil {
		return c.fail(err)
	}
	all, err := svc.List(a.ctx, *org, livemode)
	if err != nil {
		return c.fail(err)
	}
	if len(all) == 0 {
		// A mistyped id fails, as keys list does, rather than report that
		// the Caddyfile's limits apply to an organisation that does not exist.
		if _, err := a.accountsOrg(*org); err != nil {
			return c.fail(err)
		}
	}
	if *asJSON {
		return c.fail(writeJSON(a.stdout, list(all)))
	}
	if len(all) == 0 {
		fmt.Fprintln(a.stdout, "no overrides: the Caddyfile's limits apply")
	}
	for _, o := range all {
		fmt.Fprintf(a.stdout, "%-16s %d per %ds  %s", o.Policy, o.Quota, o.WindowSeconds, target(o))
		if err := o.CheckBounds(); err != nil {
			fmt.Fprintf(a.stdout, "  NOT APPLIED (%v): set it again or delete it", err)
		}
		fmt.Fprintln(a.stdout)
	}
	return nil
}

func (a *app) limitsDelete(args []string) error {
	c := a.command("controlplane limits delete", "--org ORG --env sandbox|live --policy NAME [--key KEY_ID] [--json]")
	org := c.fs.String("org", "", "organisation `id` (required)")
	env := c.fs.String("env", "", "environment: sandbox or live (required)")
	policy := c.fs.String("policy", "", "policy or quota `name` (required)")
	key := c.fs.String("key", "", "the key `id` the override is for, if any")
	asJSON := c.fs.Bool("json", false, "print the deleted override as a JSON object")
	if err := c.parse(args, map[string]*string{"org": org, "env": env, "policy": policy}); err != nil {
		return err
	}
	livemode, err := parseEnv(c.name, *env)
	if err != nil {
		return err
	}
	svc, err := a.limits()
	if err != nil {
		return c.fail(err)
	}
	err = svc.Delete(a.ctx, a.actor(), *org, livemode, *key, *policy)
	if errors.Is(err, limits.ErrNotMirrored) {
		fmt.Fprintln(a.stderr, "warning:", err)
		err = nil
	}
	if err != nil {
		return c.fail(err)
	}
	if *asJSON {
		return c.fail(writeJSON(a.stdout, struct {
			Object         string `json:"object"`
			OrganizationID string `json:"organization"`
			Livemode       bool   `json:"livemode"`
			APIKeyID       string `json:"api_key,omitempty"`
			Policy         string `json:"policy"`
			Deleted        bool   `json:"deleted"`
		}{"limit_override", *org, livemode, *key, *policy, true}))
	}
	fmt.Fprintln(a.stdout, "override deleted; the Caddyfile's limit applies again")
	return nil
}

// limits is the overrides service, writing under the gateway's key prefix.
func (a *app) limits() (*limits.Service, error) {
	if err := keyspace.ValidPrefix(a.cfg.RateLimitKeyPrefix); err != nil {
		return nil, fmt.Errorf("%s: %w", keyspace.PrefixVariable, err)
	}
	db, err := a.pool()
	if err != nil {
		return nil, err
	}
	rdb, err := a.redis()
	if err != nil {
		return nil, err
	}
	return limits.New(db, rdb, a.cfg.RateLimitKeyPrefix), nil
}

func target(o limits.Override) string {
	if o.APIKeyID != "" {
		return "key " + o.APIKeyID
	}
	return "organisation " + o.OrganizationID
}

func parseEnv(cmd, env string) (bool, error) {
	switch env {
	case "live":
		return true, nil
	case "sandbox":
		return false, nil
	}
	return false, usageErrorf(cmd, "--env must be sandbox or live, not %q", env)
}

// parseRate reads "N/PERIOD" (PERIOD a Go duration or Nd) into a count and
// whole seconds.
func parseRate(s string) (int64, int64, error) {
	n, per, ok := strings.Cut(s, "/")
	if !ok {
		return 0, 0, fmt.Errorf("want N/PERIOD, e.g. 500/1s, not %q", s)
	}
	count, err := strconv.ParseInt(n, 10, 64)
	if err != nil || count <= 0 {
		return 0, 0, fmt.Errorf("the count must be a positive integer, not %q", n)
	}
	d, err := parseDuration(per)
	if err != nil || d < time.Second || d%time.Second != 0 {
		return 0, 0, fmt.Errorf("the period must be whole seconds of at least 1s, not %q", per)
	}
	return count, int64(d / time.Second), nil
}
