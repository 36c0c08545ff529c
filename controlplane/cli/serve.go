package cli

import (
	"fmt"
	"io"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/gatehouse/gatehouse/controlplane/server"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/migrations"
)

func (a *app) serve(args []string) error {
	c := a.command("controlplane serve", "[--addr ADDR]")
	addr := c.fs.String("addr", config.String("CONTROLPLANE_ADDR", server.DefaultAddr), "listen `address` (env CONTROLPLANE_ADDR)")
	if err := c.parse(args, nil); err != nil {
		return err
	}
	log, err := newLogger(a.cfg.LogLevel, a.stderr)
	if err != nil {
		return c.fail(err)
	}
	defer func() { _ = log.Sync() }()
	apierror.SetDocsBase(a.cfg.DocsURL)

	db, err := a.pool()
	if err != nil {
		return c.fail(err)
	}
	srv := server.New(server.Config{
		Addr:           *addr,
		DB:             db,
		Logger:         log,
		IdentitySecret: a.cfg.IdentitySecret,
	})
	return c.fail(srv.Run(a.ctx))
}

// newLogger writes JSON lines at level to w.
func newLogger(level string, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("LOG_LEVEL: %w", err)
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.Lock(zapcore.AddSync(w)), lvl)
	return zap.New(core, zap.ErrorOutput(zapcore.Lock(zapcore.AddSync(w)))).Named("controlplane"), nil
}

func (a *app) migrate(args []string) error {
	const cmd = "controlplane migrate"
	if len(args) == 1 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		fmt.Fprintln(a.stdout, "usage: controlplane migrate [up|down]\n\n"+
			"  up    apply every pending migration (the default)\n"+
			"  down  revert every migration, dropping all data (development only)")
		return nil
	}
	if len(args) > 1 {
		return usageErrorf(cmd, "unexpected argument %q", args[1])
	}
	dir := "up"
	if len(args) == 1 {
		dir = args[0]
	}
	switch dir {
	case "up":
		if err := migrations.Up(a.cfg.DatabaseURL); err != nil {
			return &failure{cmd: cmd, err: err}
		}
		fmt.Fprintln(a.stdout, "migrations applied")
	case "down":
		if err := migrations.Down(a.cfg.DatabaseURL); err != nil {
			return &failure{cmd: cmd, err: err}
		}
		fmt.Fprintln(a.stdout, "migrations reverted")
	default:
		return usageErrorf(cmd, "unknown direction %q (use up or down)", dir)
	}
	return nil
}
