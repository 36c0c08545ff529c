// Package cli is the control plane's command line: `serve`, `migrate` and
// the operator commands for organisations, users and API keys. It parses
// with the standard flag package, runs in-process (tests call Run), and
// keeps the contract of DESIGN §3: with --json every command prints one JSON
// object; exit status 0 on success, 2 for a usage error, 1 otherwise; errors
// go to stderr as one readable line, never as a stack trace.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/user"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/redact"
)

// Exit statuses.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

const usage = `usage: controlplane <command> [flags]

Commands:
  serve                      run the HTTP server (dashboard, /v1 API, probes)
  migrate [up|down]          apply (or, for development, revert) database migrations
  orgs create --name N       create an organisation and print its id
  orgs list                  list organisations
  orgs body-capture --org ORG --env ENV [--set on|off]
                             show or change whether request logs keep (redacted) bodies
  users create --org ORG --email E --password P|--password-stdin --role owner|admin|developer|viewer
                             create a user (or add an existing one) as a member of ORG
  users list --org ORG       list an organisation's members
  users set-password --email E --password P|--password-stdin
                             give a user a new password (ends their sessions, lifts a sign-in lock-out)
  keys create --org ORG --env sandbox|live [--restricted --scopes a,b] [--expires-in D]
                             create an API key; the full key is printed once
  keys list --org ORG [--env ENV]
                             list keys (prefix and last 4 characters only)
  keys roll --id KEY [--expires-in D|now]
                             replace a key; the old one expires after D (default 24h)
  keys revoke --id KEY       disable a key immediately
  keys update --id KEY [--expires-in D|never] [--ip-allowlist CIDRS|none]
                             change a key's expiry or IP allowlist
  limits set --org ORG --env ENV --policy NAME --rate N/PERIOD [--burst N] [--key KEY]
                             override a rate_limit policy or quota for an organisation or key
  limits list --org ORG --env ENV
  limits delete --org ORG --env ENV --policy NAME [--key KEY]
  master-key rotate          re-encrypt webhook secrets under MASTER_KEY (the old key
                             in MASTER_KEY_PREVIOUS; the servers open with both meanwhile)

Every command that reads or writes data takes --json to print one JSON object.
Run 'controlplane <command> [<subcommand>] -h' for a command's flags.
Configuration comes from the environment: DATABASE_URL, REDIS_URL, KAFKA_BROKERS,
CONTROLPLANE_ADDR, IDENTITY_SECRET, MASTER_KEY, MASTER_KEY_PREVIOUS, LOG_LEVEL, DOCS_URL,
REQUEST_LOG_RETENTION, WEBHOOK_ALLOW_CIDRS, WEBHOOK_REQUIRE_HTTPS, TRUSTED_PROXIES,
GATEWAY_PUBLIC_URL, DATA_DIR, KAFKA_TOPIC_REQUEST_LOGS, KAFKA_TOPIC_EVENTS.
`

// Run executes the command line args (without the program name) and returns
// the exit status.
func Run(args []string, stdout, stderr io.Writer) int {
	return RunContext(context.Background(), args, stdout, stderr)
}

// RunContext is Run with a context whose end stops long-running commands
// (serve) gracefully and cancels database work.
func RunContext(ctx context.Context, args []string, stdout, stderr io.Writer) (code int) {
	out := &outWriter{w: stdout}
	a := &app{ctx: ctx, stdin: os.Stdin, stdout: out, stderr: stderr, cfg: config.Load()}
	defer a.close()
	defer func() {
		// A bug must still end in one line on stderr and status 1.
		if v := recover(); v != nil {
			fmt.Fprintf(stderr, "controlplane: internal error: %v\n", v)
			code = ExitFailure
		}
	}()
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return ExitUsage
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return ExitOK
	case "serve":
		err = a.serve(rest)
	case "migrate":
		err = a.migrate(rest)
	case "orgs":
		err = a.group("orgs", rest, map[string]func([]string) error{
			"create": a.orgsCreate, "list": a.orgsList, "body-capture": a.orgsBodyCapture,
		})
	case "users":
		err = a.group("users", rest, map[string]func([]string) error{
			"create": a.usersCreate, "list": a.usersList, "set-password": a.usersSetPassword,
		})
	case "keys":
		err = a.group("keys", rest, map[string]func([]string) error{
			"create": a.keysCreate, "list": a.keysList, "roll": a.keysRoll,
			"revoke": a.keysRevoke, "update": a.keysUpdate,
		})
	case "limits":
		err = a.group("limits", rest, map[string]func([]string) error{
			"set": a.limitsSet, "list": a.limitsList, "delete": a.limitsDelete,
		})
	case "master-key":
		err = a.group("master-key", rest, map[string]func([]string) error{"rotate": a.masterKeyRotate})
	default:
		err = usageErrorf("controlplane", "unknown command %q", cmd)
	}
	if err == nil && out.err != nil {
		// Output that did not reach its reader (a full disk, a closed
		// pipe) is a failure, whichever command wrote it: a script must
		// not take a created organisation's missing id for success.
		err = &failure{cmd: strings.TrimSpace("controlplane " + cmd + " " + subcommand(rest)),
			err: fmt.Errorf("writing the output: %w", out.err)}
	}
	return a.report(err)
}

// subcommand is the first argument of rest when it names one (not a flag).
func subcommand(rest []string) string {
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		return rest[0]
	}
	return ""
}

// outWriter remembers the first error writing standard output.
type outWriter struct {
	w   io.Writer
	err error
}

func (o *outWriter) Write(p []byte) (int, error) {
	if o.err != nil {
		return 0, o.err
	}
	n, err := o.w.Write(p)
	o.err = err
	return n, err
}

// app is one invocation's state.
type app struct {
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	cfg    config.Shared
	db     *pgxpool.Pool
	rdb    *redis.Client
}

func (a *app) close() {
	if a.db != nil {
		a.db.Close()
	}
	if a.rdb != nil {
		_ = a.rdb.Close()
	}
}

// redis connects to Redis (REDIS_URL) on first use. Limit overrides are
// mirrored there for the gateways.
func (a *app) redis() (*redis.Client, error) {
	if a.rdb != nil {
		return a.rdb, nil
	}
	opts, err := redis.ParseURL(a.cfg.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", redact.URLError(a.cfg.RedisURL, err))
	}
	a.rdb = redis.NewClient(opts)
	return a.rdb, nil
}

// group dispatches "<name> <subcommand> …". "<name> -h" prints the group's
// part of the usage, as the usage and every usage error suggest running it.
func (a *app) group(name string, args []string, subs map[string]func([]string) error) error {
	if len(args) == 0 {
		return usageErrorf("controlplane "+name, "missing subcommand (one of %s)", subNames(subs))
	}
	switch args[0] {
	case "-h", "-help", "--help":
		fmt.Fprintf(a.stdout, "usage: controlplane %s <subcommand> [flags]\n\nSubcommands:\n%s\n"+
			"Run 'controlplane %s <subcommand> -h' for a subcommand's flags.\n", name, groupUsage(name), name)
		return nil
	}
	f, ok := subs[args[0]]
	if !ok {
		return usageErrorf("controlplane "+name, "unknown subcommand %q (one of %s)", args[0], subNames(subs))
	}
	return f(args[1:])
}

// groupUsage is the lines of usage that describe the group's subcommands.
func groupUsage(name string) string {
	var b strings.Builder
	in := false
	for _, line := range strings.Split(usage, "\n") {
		switch {
		case strings.HasPrefix(line, "  "+name+" "):
			in = true
		case !strings.HasPrefix(line, "    "):
			// Continuation lines are indented further than commands.
			in = false
		}
		if in {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// subNames lists a group's subcommands, the usual ones in their usual order.
func subNames(subs map[string]func([]string) error) string {
	order := []string{"create", "set", "list", "roll", "revoke", "update", "delete"}
	var names []string
	for _, n := range order {
		if _, ok := subs[n]; ok {
			names = append(names, n)
		}
	}
	for _, n := range slices.Sorted(maps.Keys(subs)) {
		if !slices.Contains(order, n) {
			names = append(names, n)
		}
	}
	return strings.Join(names, ", ")
}

// pool connects to Postgres on first use.
func (a *app) pool() (*pgxpool.Pool, error) {
	if a.db != nil {
		return a.db, nil
	}
	if err := redact.CheckURL(a.cfg.DatabaseURL); err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	db, err := pgxpool.New(a.ctx, a.cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("connecting to postgres: %w", redact.URLError(a.cfg.DatabaseURL, err))
	}
	ctx, cancel := context.WithTimeout(a.ctx, 5*time.Second)
	defer cancel()
	if err := db.Ping(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connecting to postgres (DATABASE_URL): %w", err)
	}
	a.db = db
	return db, nil
}

// actor is who the audit log credits with CLI changes: the OS user.
func (a *app) actor() audit.Actor {
	name := ""
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	if name == "" {
		name = os.Getenv("USER")
	}
	if name == "" {
		name = "operator"
	}
	return audit.Actor{Type: audit.ActorCLI, ID: name}
}

// usageError is a mistake in how the command was called.
type usageError struct {
	cmd string
	msg string
}

func (e *usageError) Error() string { return e.msg }

func usageErrorf(cmd, format string, args ...any) error {
	return &usageError{cmd: cmd, msg: fmt.Sprintf(format, args...)}
}

// failure names the command that failed, for the stderr line.
type failure struct {
	cmd string
	err error
}

func (f *failure) Error() string { return f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

// paramFlags maps the params of validation errors to the flags that set them.
var paramFlags = map[string]string{
	"name": "--name", "email": "--email", "password": "--password", "role": "--role",
	"scopes": "--scopes", "kind": "--restricted", "environment": "--env",
	"ip_allowlist": "--ip-allowlist", "expires_at": "--expires-in", "expires_in": "--expires-in",
	"organization": "--org", "policy": "--policy", "api_key": "--key", "burst": "--burst",
	"quota": "--rate", "window_seconds": "--rate",
}

// report prints err and picks the exit status.
func (a *app) report(err error) int {
	if err == nil {
		return ExitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	cmd := "controlplane"
	var f *failure
	if errors.As(err, &f) {
		cmd = f.cmd
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(a.stderr, "%s: %s\nRun '%s -h' for usage.\n", ue.cmd, ue.msg, ue.cmd)
		return ExitUsage
	}
	// A parameter the service refused is a usage error too: the caller
	// passed a bad flag value. State conflicts (a revoked key) are not.
	var ae *apierror.Error
	if errors.As(err, &ae) && ae.Status == 400 && (ae.Code == "parameter_invalid" || ae.Code == "parameter_missing") && ae.Param != "id" {
		flagName := paramFlags[ae.Param]
		if flagName == "" {
			flagName = ae.Param
		}
		fmt.Fprintf(a.stderr, "%s: %s: %s\n", cmd, flagName, ae.Message)
		return ExitUsage
	}
	fmt.Fprintf(a.stderr, "%s: %s\n", cmd, err)
	return ExitFailure
}

// command is the flag set of one subcommand with its usage line.
type command struct {
	name     string
	synopsis string
	fs       *flag.FlagSet
	out      io.Writer // where -h prints
}

func (a *app) command(name, synopsis string) *command {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	// flag would print the usage on every parse error; report prints one
	// line instead, and -h prints the usage to stdout (see parse).
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &command{name: name, synopsis: synopsis, fs: fs, out: a.stdout}
}

// parse parses args, refusing positional arguments and missing required
// flags (given as pointers to their values).
func (c *command) parse(args []string, required map[string]*string) error {
	if err := c.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.printUsage()
			return err
		}
		return &usageError{cmd: c.name, msg: err.Error()}
	}
	if c.fs.NArg() > 0 {
		return usageErrorf(c.name, "unexpected argument %q", c.fs.Arg(0))
	}
	// Values reach Postgres, which refuses what is not UTF-8 with its own
	// words: say which flag it was instead.
	var bad string
	c.fs.Visit(func(f *flag.Flag) {
		if bad == "" && !utf8.ValidString(f.Value.String()) {
			bad = f.Name
		}
	})
	if bad != "" {
		return usageErrorf(c.name, "--%s: not valid UTF-8 text", bad)
	}
	for _, name := range slices.Sorted(maps.Keys(required)) {
		if strings.TrimSpace(*required[name]) == "" {
			return usageErrorf(c.name, "--%s is required", name)
		}
	}
	return nil
}

// given reports whether the command line set the flag, even to "".
func (c *command) given(name string) bool {
	set := false
	c.fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// printUsage prints the synopsis and the flags, spelled with two dashes as
// everywhere in the docs.
func (c *command) printUsage() {
	fmt.Fprintf(c.out, "usage: %s %s\n\nFlags:\n", c.name, c.synopsis)
	c.fs.VisitAll(func(f *flag.Flag) {
		arg, help := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if arg != "" {
			line += " " + arg
		}
		// As flag.PrintDefaults: a zero default says nothing (--burst
		// names its real default in its text).
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			help += " (default " + f.DefValue + ")"
		}
		fmt.Fprintf(c.out, "%s\n      %s\n", line, help)
	})
}

// fail attributes err to the command for the error line.
func (c *command) fail(err error) error {
	if err == nil {
		return nil
	}
	return &failure{cmd: c.name, err: err}
}
