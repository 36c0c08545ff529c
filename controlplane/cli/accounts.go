package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/gatehouse/gatehouse/controlplane/accounts"
	"github.com/gatehouse/gatehouse/internal/apikey"
)

// orgJSON is an organisation as --json prints it.
type orgJSON struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Name    string `json:"name"`
	Created int64  `json:"created"`
}

func toOrgJSON(o accounts.Organization) orgJSON {
	return orgJSON{ID: o.ID, Object: "organization", Name: o.Name, Created: o.CreatedAt.Unix()}
}

func (a *app) accounts() (*accounts.Service, error) {
	db, err := a.pool()
	if err != nil {
		return nil, err
	}
	return accounts.New(db, nil), nil
}

func (a *app) orgsCreate(args []string) error {
	c := a.command("controlplane orgs create", "--name NAME [--json]")
	name := c.fs.String("name", "", "organisation `name` (required)")
	asJSON := c.fs.Bool("json", false, "print the organisation as a JSON object")
	if err := c.parse(args, map[string]*string{"name": name}); err != nil {
		return err
	}
	svc, err := a.accounts()
	if err != nil {
		return c.fail(err)
	}
	o, err := svc.CreateOrganization(a.ctx, a.actor(), *name)
	if err != nil {
		return c.fail(err)
	}
	if *asJSON {
		return c.fail(writeJSON(a.stdout, toOrgJSON(o)))
	}
	fmt.Fprintln(a.stdout, o.ID)
	return nil
}

func (a *app) orgsList(args []string) error {
	c := a.command("controlplane orgs list", "[--json]")
	asJSON := c.fs.Bool("json", false, "print a JSON list object")
	if err := c.parse(args, nil); err != nil {
		return err
	}
	svc, err := a.accounts()
	if err != nil {
		return c.fail(err)
	}
	orgs, err := svc.ListOrganizations(a.ctx)
	if err != nil {
		return c.fail(err)
	}
	if *asJSON {
		data := make([]orgJSON, len(orgs))
		for i, o := range orgs {
			data[i] = toOrgJSON(o)
		}
		return c.fail(writeJSON(a.stdout, list(data)))
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tCREATED")
	for _, o := range orgs {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", o.ID, o.Name, timeText(&o.CreatedAt, ""))
	}
	return c.fail(tw.Flush())
}

// memberJSON is a user in an organisation as --json prints it.
type memberJSON struct {
	ID           string `json:"id"`
	Object       string `json:"object"`
	Email        string `json:"email"`
	Organization string `json:"organization"`
	Role         string `json:"role"`
	Created      int64  `json:"created"`
	Joined       int64  `json:"joined"`
}

func (a *app) usersCreate(args []string) error {
	c := a.command("controlplane users create", "--org ORG --email EMAIL --password PASSWORD|--password-stdin --role ROLE [--json]")
	org := c.fs.String("org", "", "organisation `id` (required)")
	email := c.fs.String("email", "", "the user's `email` (required); an existing user is added to the organisation")
	password, fromStdin := passwordFlags(c, "the new user's `password` (at least 8 characters; an existing user keeps theirs)")
	role := c.fs.String("role", "", "`role` in the organisation: owner, admin, developer or viewer (required)")
	asJSON := c.fs.Bool("json", false, "print the membership as a JSON object")
	if err := c.parse(args, map[string]*string{"org": org, "email": email, "role": role}); err != nil {
		return err
	}
	if err := a.readPassword(c, password, *fromStdin); err != nil {
		return err
	}
	svc, err := a.accounts()
	if err != nil {
		return c.fail(err)
	}
	res, err := svc.AddMember(a.ctx, a.actor(), accounts.AddMemberParams{
		OrganizationID: *org, Email: *email, Password: *password, Role: accounts.Role(*role),
	})
	if err != nil {
		return c.fail(err)
	}
	if res.PasswordIgnored {
		fmt.Fprintf(a.stderr, "note: %s already has an account; their password was not changed\n", res.Email)
	}
	if *asJSON {
		return c.fail(writeJSON(a.stdout, struct {
			memberJSON
			NewUser bool `json:"new_user"`
		}{toMemberJSON(*org, res.Member), res.NewUser}))
	}
	what := "added existing user"
	switch {
	case res.NewUser:
		what = "created user"
	case res.PreviousRole != "":
		what = "changed role from " + string(res.PreviousRole)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 1, ' ', 0)
	fmt.Fprintf(tw, "id:\t%s\nemail:\t%s\norganization:\t%s\nrole:\t%s\nresult:\t%s\n", res.ID, res.Email, *org, res.Role, what)
	return c.fail(tw.Flush())
}

func toMemberJSON(org string, m accounts.Member) memberJSON {
	return memberJSON{ID: m.ID, Object: "user", Email: m.Email, Organization: org, Role: string(m.Role),
		Created: m.User.CreatedAt.Unix(), Joined: m.JoinedAt.Unix()}
}

// passwordFlags defines --password, described by what, and --password-stdin.
func passwordFlags(c *command, what string) (password *string, fromStdin *bool) {
	password = c.fs.String("password", "", what+
		"; any user of the machine can read it in the process list while the command runs: prefer --password-stdin")
	fromStdin = c.fs.Bool("password-stdin", false, "read the password from the first line of standard input")
	return password, fromStdin
}

// readPassword checks that the command got exactly one of --password and
// --password-stdin, and reads the latter's first line into password.
func (a *app) readPassword(c *command, password *string, fromStdin bool) error {
	switch {
	case !fromStdin && strings.TrimSpace(*password) == "":
		return usageErrorf(c.name, "--password is required (or --password-stdin)")
	case fromStdin:
		if c.given("password") {
			return usageErrorf(c.name, "give --password or --password-stdin, not both")
		}
		line, err := bufio.NewReader(a.stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return c.fail(fmt.Errorf("reading the password: %w", err))
		}
		*password = strings.TrimRight(line, "\r\n")
		if *password == "" {
			return usageErrorf(c.name, "--password-stdin: standard input held no password")
		}
	}
	return nil
}

func (a *app) usersSetPassword(args []string) error {
	c := a.command("controlplane users set-password", "--email EMAIL --password PASSWORD|--password-stdin [--json]")
	email := c.fs.String("email", "", "the user's `email` (required)")
	password, fromStdin := passwordFlags(c, "the new `password` (at least 8 characters)")
	asJSON := c.fs.Bool("json", false, "print the user as a JSON object")
	if err := c.parse(args, map[string]*string{"email": email}); err != nil {
		return err
	}
	if err := a.readPassword(c, password, *fromStdin); err != nil {
		return err
	}
	svc, err := a.accounts()
	if err != nil {
		return c.fail(err)
	}
	u, err := svc.SetPassword(a.ctx, a.actor(), *email, *password)
	if err != nil {
		return c.fail(err)
	}
	if *asJSON {
		return c.fail(writeJSON(a.stdout, struct {
			ID    string `json:"id"`
			Email string `json:"email"`
		}{u.ID, u.Email}))
	}
	fmt.Fprintf(a.stdout, "set a new password for %s (%s); their dashboard sessions ended\n", u.Email, u.ID)
	return nil
}

func (a *app) usersList(args []string) error {
	c := a.command("controlplane users list", "--org ORG [--json]")
	org := c.fs.String("org", "", "organisation `id` (required)")
	asJSON := c.fs.Bool("json", false, "print a JSON list object")
	if err := c.parse(args, map[string]*string{"org": org}); err != nil {
		return err
	}
	svc, err := a.accounts()
	if err != nil {
		return c.fail(err)
	}
	ms, err := svc.ListMembers(a.ctx, *org)
	if err != nil {
		return c.fail(err)
	}
	if *asJSON {
		data := make([]memberJSON, len(ms))
		for i, m := range ms {
			data[i] = toMemberJSON(*org, m)
		}
		return c.fail(writeJSON(a.stdout, list(data)))
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tEMAIL\tROLE\tJOINED")
	for _, m := range ms {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.ID, m.Email, m.Role, timeText(&m.JoinedAt, ""))
	}
	return c.fail(tw.Flush())
}

// bodyCaptureJSON is an environment's body capture setting as --json prints it.
type bodyCaptureJSON struct {
	Object       string `json:"object"`
	Organization string `json:"organization"`
	Livemode     bool   `json:"livemode"`
	Enabled      bool   `json:"enabled"`
}

func (a *app) orgsBodyCapture(args []string) error {
	c := a.command("controlplane orgs body-capture", "--org ORG --env sandbox|live [--set on|off] [--json]")
	org := c.fs.String("org", "", "organisation `id` (required)")
	env := c.fs.String("env", "", "`environment`: sandbox or live (required)")
	set := c.fs.String("set", "", "turn capture `on` or off (default: only show it)")
	asJSON := c.fs.Bool("json", false, "print the setting as a JSON object")
	if err := c.parse(args, map[string]*string{"org": org, "env": env}); err != nil {
		return err
	}
	live, err := parseEnv(c.name, *env)
	if err != nil {
		return err
	}
	if *set != "" && *set != "on" && *set != "off" {
		return usageErrorf(c.name, "--set must be on or off, not %q", *set)
	}
	svc, err := a.keys()
	if err != nil {
		return c.fail(err)
	}
	e := apikey.Environment(*env)
	if *set != "" {
		if _, err := svc.SetBodyCapture(a.ctx, a.actor(), *org, e, *set == "on"); err != nil {
			return c.fail(err)
		}
	}
	on, err := svc.BodyCapture(a.ctx, *org, e)
	if err != nil {
		return c.fail(err)
	}
	if *asJSON {
		return c.fail(writeJSON(a.stdout, bodyCaptureJSON{Object: "body_capture", Organization: *org, Livemode: live, Enabled: on}))
	}
	state := "off"
	if on {
		state = "on"
	}
	fmt.Fprintf(a.stdout, "body capture %s for %s (%s)\n", state, *org, *env)
	return nil
}
