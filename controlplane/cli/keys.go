package cli

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/controlplane/keys"
	"github.com/gatehouse/gatehouse/internal/apikey"
	"github.com/gatehouse/gatehouse/internal/identity"
)

// keyJSON is an API key as --json prints it. Key is set only when the key
// was just created: it is never stored and never shown again.
type keyJSON struct {
	ID           string   `json:"id"`
	Object       string   `json:"object"`
	Key          string   `json:"key,omitempty"`
	Organization string   `json:"organization"`
	Livemode     bool     `json:"livemode"`
	Environment  string   `json:"environment"`
	Kind         string   `json:"kind"`
	Name         string   `json:"name"`
	Prefix       string   `json:"prefix"`
	Last4        string   `json:"last4"`
	Scopes       []string `json:"scopes"`
	IPAllowlist  []string `json:"ip_allowlist"`
	Status       string   `json:"status"`
	ExpiresAt    *int64   `json:"expires_at"`
	RevokedAt    *int64   `json:"revoked_at"`
	LastUsedAt   *int64   `json:"last_used_at"`
	RolledTo     *string  `json:"rolled_to"`
	Created      int64    `json:"created"`
}

func toKeyJSON(k keys.Key, secret string, now time.Time) keyJSON {
	allow := make([]string, len(k.IPAllowlist))
	for i, p := range k.IPAllowlist {
		allow[i] = p.String()
	}
	scopes := k.Scopes
	switch {
	case k.Kind == apikey.Secret:
		// A secret key has every scope: shown as the gateway hands it to
		// upstreams (X-Scopes), not as an empty list, which reads as none.
		scopes = []string{identity.AllScopes}
	case scopes == nil:
		scopes = []string{}
	}
	return keyJSON{
		ID: k.ID, Object: "api_key", Key: secret, Organization: k.OrganizationID, Livemode: k.Livemode(),
		Environment: string(k.Environment), Kind: string(k.Kind), Name: k.Name, Prefix: k.Prefix,
		Last4: k.Last4, Scopes: scopes, IPAllowlist: allow, Status: k.Status(now),
		ExpiresAt: unix(k.ExpiresAt), RevokedAt: unix(k.RevokedAt), LastUsedAt: unix(k.LastUsedAt),
		RolledTo: k.RolledTo, Created: k.CreatedAt.Unix(),
	}
}

func (a *app) keys() (*keys.Service, error) {
	db, err := a.pool()
	if err != nil {
		return nil, err
	}
	svc := keys.New(db, nil)
	if lim, err := a.limits(); err == nil {
		svc.WithLimits(lim)
	}
	return svc, nil
}

func environment(cmd, s string) (apikey.Environment, error) {
	switch env := apikey.Environment(s); env {
	case apikey.Sandbox, apikey.Live:
		return env, nil
	}
	return "", usageErrorf(cmd, "--env must be sandbox or live, not %q", s)
}

func (a *app) keysCreate(args []string) error {
	c := a.command("controlplane keys create",
		"--org ORG --env sandbox|live [--restricted --scopes a,b] [--expires-in D] [--name N] [--ip-allowlist CIDRS] [--json]")
	org := c.fs.String("org", "", "organisation `id` (required)")
	envFlag := c.fs.String("env", "", "`environment`: sandbox or live (required)")
	restricted := c.fs.Bool("restricted", false, "make a restricted key (rk_…) limited to --scopes")
	scopes := c.fs.String("scopes", "", "comma-separated `scopes` of a restricted key: "+strings.Join(apikey.Scopes, ", "))
	expiresIn := c.fs.String("expires-in", "", "expire the key after this `duration` (e.g. 30d, 36h); default never")
	name := c.fs.String("name", "", "a `name` to recognise the key by")
	allowFlag := c.fs.String("ip-allowlist", "", "comma-separated `networks` (CIDR or single addresses) the key may be used from")
	asJSON := c.fs.Bool("json", false, "print the key as a JSON object")
	if err := c.parse(args, map[string]*string{"org": org, "env": envFlag}); err != nil {
		return err
	}
	env, err := environment(c.name, *envFlag)
	if err != nil {
		return err
	}
	p := keys.CreateParams{Kind: apikey.Secret, Name: *name, Scopes: splitList(*scopes)}
	if *restricted {
		p.Kind = apikey.Restricted
	} else if *scopes != "" {
		return usageErrorf(c.name, "--scopes needs --restricted: secret keys have every scope")
	}
	if c.given("ip-allowlist") {
		if p.IPAllowlist, err = keys.ParseIPAllowlist(*allowFlag); err != nil {
			return c.fail(err)
		}
	}
	var expiresAfter time.Duration
	if *expiresIn != "" {
		if expiresAfter, err = parseDuration(*expiresIn); err != nil || expiresAfter <= 0 {
			return usageErrorf(c.name, "--expires-in: want a positive duration such as 30d or 36h, got %q", *expiresIn)
		}
	}
	svc, err := a.keys()
	if err != nil {
		return c.fail(err)
	}
	now := svc.Now()
	if expiresAfter > 0 {
		t := now.Add(expiresAfter)
		p.ExpiresAt = &t
	}
	k, err := svc.Create(a.ctx, a.actor(), *org, env, p)
	if err != nil {
		return c.fail(err)
	}
	if *asJSON {
		return c.fail(writeJSON(a.stdout, toKeyJSON(k.Key, k.Secret, now)))
	}
	fmt.Fprintf(a.stderr, "This is the only time the key is shown: store it securely now.\n")
	return c.fail(describeKey(a.stdout, k.Key, k.Secret, now))
}

// describeKey prints one key as aligned "field: value" lines.
func describeKey(w io.Writer, k keys.Key, secret string, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	if secret != "" {
		fmt.Fprintf(tw, "key:\t%s\n", secret)
	}
	scopes := strings.Join(k.Scopes, ",")
	if k.Kind == apikey.Secret {
		scopes = "all (secret key)"
	}
	allow := "any address"
	if len(k.IPAllowlist) > 0 {
		allow = joinPrefixes(k.IPAllowlist)
	}
	fmt.Fprintf(tw, "id:\t%s\n", k.ID)
	fmt.Fprintf(tw, "organization:\t%s\n", k.OrganizationID)
	fmt.Fprintf(tw, "environment:\t%s\n", k.Environment)
	fmt.Fprintf(tw, "kind:\t%s\n", k.Kind)
	if k.Name != "" {
		fmt.Fprintf(tw, "name:\t%s\n", k.Name)
	}
	fmt.Fprintf(tw, "shown as:\t%s\n", k.Masked())
	fmt.Fprintf(tw, "scopes:\t%s\n", scopes)
	fmt.Fprintf(tw, "ip allowlist:\t%s\n", allow)
	fmt.Fprintf(tw, "created:\t%s\n", timeText(&k.CreatedAt, ""))
	fmt.Fprintf(tw, "expires:\t%s\n", timeText(k.ExpiresAt, "never"))
	if k.RevokedAt != nil {
		fmt.Fprintf(tw, "revoked:\t%s\n", timeText(k.RevokedAt, ""))
	}
	if k.RolledTo != nil {
		fmt.Fprintf(tw, "rolled to:\t%s\n", *k.RolledTo)
	}
	fmt.Fprintf(tw, "status:\t%s\n", k.Status(now))
	return tw.Flush()
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func (a *app) keysList(args []string) error {
	c := a.command("controlplane keys list", "--org ORG [--env sandbox|live] [--json]")
	org := c.fs.String("org", "", "organisation `id` (required)")
	envFlag := c.fs.String("env", "", "only this `environment`: sandbox or live (default both)")
	asJSON := c.fs.Bool("json", false, "print a JSON list object")
	if err := c.parse(args, map[string]*string{"org": org}); err != nil {
		return err
	}
	envs := []apikey.Environment{apikey.Sandbox, apikey.Live}
	if *envFlag != "" {
		env, err := environment(c.name, *envFlag)
		if err != nil {
			return err
		}
		envs = envs[:0]
		envs = append(envs, env)
	}
	svc, err := a.keys()
	if err != nil {
		return c.fail(err)
	}
	// The service lists one environment at a time, as tenants only ever
	// see one; an operator gets both one after the other.
	var all []keys.Key
	for _, env := range envs {
		ks, err := svc.List(a.ctx, *org, env)
		if err != nil {
			return c.fail(err)
		}
		all = append(all, ks...)
	}
	if len(all) == 0 {
		if _, err := a.accountsOrg(*org); err != nil {
			return c.fail(err)
		}
	}
	now := svc.Now()
	if *asJSON {
		data := make([]keyJSON, len(all))
		for i, k := range all {
			data[i] = toKeyJSON(k, "", now)
		}
		return c.fail(writeJSON(a.stdout, list(data)))
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tENV\tKIND\tKEY\tNAME\tSCOPES\tCREATED\tLAST USED\tEXPIRES\tSTATUS")
	for _, k := range all {
		scopes := strings.Join(k.Scopes, ",")
		if k.Kind == apikey.Secret {
			scopes = "all"
		}
		name := k.Name
		if name == "" {
			name = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Environment, k.Kind, k.Masked(), name, scopes,
			timeText(&k.CreatedAt, ""), timeText(k.LastUsedAt, "never"), timeText(k.ExpiresAt, "never"), k.Status(now))
	}
	return c.fail(tw.Flush())
}

// accountsOrg checks that an organisation exists, so listing the keys of a
// mistyped id fails instead of printing nothing.
func (a *app) accountsOrg(id string) (string, error) {
	svc, err := a.accounts()
	if err != nil {
		return "", err
	}
	o, err := svc.GetOrganization(a.ctx, id)
	return o.ID, err
}

// locate finds the key's tenant; --org, when given, must match it.
func (a *app) locate(svc *keys.Service, id, org string) (keys.Owner, error) {
	o, err := svc.Locate(a.ctx, id)
	if err != nil {
		return keys.Owner{}, err
	}
	if org != "" && o.OrganizationID != org {
		// Same answer as a missing key: --org scopes the lookup.
		_, err := svc.Get(a.ctx, org, o.Environment, id)
		return keys.Owner{}, err
	}
	return o, nil
}

func (a *app) keysRoll(args []string) error {
	c := a.command("controlplane keys roll", "--id KEY_ID [--expires-in D|now] [--org ORG] [--json]")
	id := c.fs.String("id", "", "`id` of the key to roll (required)")
	expiresIn := c.fs.String("expires-in", "24h", "how long the old key keeps working: a `duration` (e.g. 24h, 7d) or now")
	org := c.fs.String("org", "", "only act if the key belongs to this organisation `id`")
	asJSON := c.fs.Bool("json", false, "print the new key as a JSON object")
	if err := c.parse(args, map[string]*string{"id": id}); err != nil {
		return err
	}
	var grace time.Duration
	if *expiresIn != "now" {
		d, err := parseDuration(*expiresIn)
		if err != nil || d < 0 {
			return usageErrorf(c.name, "--expires-in: want a duration such as 24h or 7d, or now; got %q", *expiresIn)
		}
		grace = d
	}
	svc, err := a.keys()
	if err != nil {
		return c.fail(err)
	}
	owner, err := a.locate(svc, *id, *org)
	if err != nil {
		return c.fail(err)
	}
	r, err := svc.Roll(a.ctx, a.actor(), owner.OrganizationID, owner.Environment, *id, grace)
	if err != nil {
		return c.fail(err)
	}
	now := svc.Now()
	if *asJSON {
		return c.fail(writeJSON(a.stdout, struct {
			keyJSON
			RolledFrom keyJSON `json:"rolled_from"`
		}{toKeyJSON(r.New.Key, r.New.Secret, now), toKeyJSON(r.Old, "", now)}))
	}
	fmt.Fprintf(a.stderr, "This is the only time the key is shown: store it securely now.\n")
	if err := describeKey(a.stdout, r.New.Key, r.New.Secret, now); err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(a.stdout, "\nThe old key %s (%s) stops working at %s.\n", r.Old.ID, r.Old.Masked(), timeText(r.Old.ExpiresAt, ""))
	return nil
}

func (a *app) keysRevoke(args []string) error {
	c := a.command("controlplane keys revoke", "--id KEY_ID [--org ORG] [--json]")
	id := c.fs.String("id", "", "`id` of the key to revoke (required)")
	org := c.fs.String("org", "", "only act if the key belongs to this organisation `id`")
	asJSON := c.fs.Bool("json", false, "print the revoked key as a JSON object")
	if err := c.parse(args, map[string]*string{"id": id}); err != nil {
		return err
	}
	svc, err := a.keys()
	if err != nil {
		return c.fail(err)
	}
	owner, err := a.locate(svc, *id, *org)
	if err != nil {
		return c.fail(err)
	}
	k, err := svc.Revoke(a.ctx, a.actor(), owner.OrganizationID, owner.Environment, *id)
	if err != nil {
		return c.fail(err)
	}
	if *asJSON {
		return c.fail(writeJSON(a.stdout, toKeyJSON(k, "", svc.Now())))
	}
	fmt.Fprintf(a.stdout, "revoked %s (%s) at %s\n", k.ID, k.Masked(), timeText(k.RevokedAt, ""))
	return nil
}

func (a *app) keysUpdate(args []string) error {
	c := a.command("controlplane keys update", "--id KEY_ID [--expires-in D|never] [--ip-allowlist CIDRS|none] [--org ORG] [--json]")
	id := c.fs.String("id", "", "`id` of the key to change (required)")
	expiresIn := c.fs.String("expires-in", "", "expire the key this `duration` from now (e.g. 30d, 0s for now), or never")
	allowFlag := c.fs.String("ip-allowlist", "", "comma-separated `networks` the key may be used from, or none for any address")
	org := c.fs.String("org", "", "only act if the key belongs to this organisation `id`")
	asJSON := c.fs.Bool("json", false, "print the key as a JSON object")
	if err := c.parse(args, map[string]*string{"id": id}); err != nil {
		return err
	}
	if !c.given("expires-in") && !c.given("ip-allowlist") {
		return usageErrorf(c.name, "nothing to change: give --expires-in and/or --ip-allowlist")
	}
	var expiresAfter *time.Duration
	if c.given("expires-in") && *expiresIn != "never" {
		d, err := parseDuration(*expiresIn)
		if err != nil || d < 0 {
			return usageErrorf(c.name, "--expires-in: want a duration such as 30d, or never; got %q", *expiresIn)
		}
		expiresAfter = &d
	}
	var allow []netip.Prefix
	if c.given("ip-allowlist") && *allowFlag != "none" {
		var err error
		if allow, err = keys.ParseIPAllowlist(*allowFlag); err != nil {
			return c.fail(err)
		}
	}
	db, err := a.pool()
	if err != nil {
		return c.fail(err)
	}
	svc := keys.New(db, nil)
	owner, err := a.locate(svc, *id, *org)
	if err != nil {
		return c.fail(err)
	}
	// Both changes commit together: the service runs on the transaction
	// (each call in its own savepoint).
	var k keys.Key
	err = pgx.BeginFunc(a.ctx, db, func(tx pgx.Tx) error {
		svc := keys.New(tx, nil)
		if c.given("expires-in") {
			var at *time.Time
			if expiresAfter != nil {
				t := svc.Now().Add(*expiresAfter)
				at = &t
			}
			if k, err = svc.SetExpiry(a.ctx, a.actor(), owner.OrganizationID, owner.Environment, *id, at); err != nil {
				return err
			}
		}
		if c.given("ip-allowlist") {
			k, err = svc.SetIPAllowlist(a.ctx, a.actor(), owner.OrganizationID, owner.Environment, *id, allow)
		}
		return err
	})
	if err != nil {
		return c.fail(err)
	}
	now := svc.Now()
	if *asJSON {
		return c.fail(writeJSON(a.stdout, toKeyJSON(k, "", now)))
	}
	return c.fail(describeKey(a.stdout, k, "", now))
}
