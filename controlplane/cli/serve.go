package cli

import (
	"fmt"
	"io"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"

	"github.com/gatehouse/gatehouse/controlplane/accounts"
	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/controlplane/events"
	"github.com/gatehouse/gatehouse/controlplane/ingest"
	"github.com/gatehouse/gatehouse/controlplane/keys"
	"github.com/gatehouse/gatehouse/controlplane/limits"
	"github.com/gatehouse/gatehouse/controlplane/requestlogs"
	"github.com/gatehouse/gatehouse/controlplane/router"
	"github.com/gatehouse/gatehouse/controlplane/server"
	usageapi "github.com/gatehouse/gatehouse/controlplane/usage"
	"github.com/gatehouse/gatehouse/controlplane/webhooks"
	"github.com/gatehouse/gatehouse/dashboard"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/outbox"
	"github.com/gatehouse/gatehouse/internal/secretbox"
	"github.com/gatehouse/gatehouse/internal/ssrf"
	"github.com/gatehouse/gatehouse/internal/wire"
	"github.com/gatehouse/gatehouse/migrations"
)

func (a *app) serve(args []string) error {
	c := a.command("controlplane serve", "[--addr ADDR]")
	addr := c.fs.String("addr", config.String("CONTROLPLANE_ADDR", server.DefaultAddr), "listen `address` (env CONTROLPLANE_ADDR)")
	if err := c.parse(args, nil); err != nil {
		return err
	}
	if err := config.RequireSecrets("IDENTITY_SECRET", "MASTER_KEY"); err != nil {
		return usageErrorf(c.name, "%v", err)
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
	retention, err := ingest.RetentionFromEnv()
	if err != nil {
		return usageErrorf(c.name, "%v", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	logIngester, err := ingest.New(db, ingest.Config{
		Brokers: a.cfg.KafkaBrokers, Topic: config.String("KAFKA_TOPIC_REQUEST_LOGS", wire.TopicRequestLogs),
		Retention: retention, Registerer: reg, Logger: log.Named("ingest"),
	})
	if err != nil {
		return c.fail(err)
	}
	lim, err := a.limits()
	if err != nil {
		return c.fail(err)
	}
	limitsSync := &limits.Syncer{Service: lim, Logger: log.Named("limits")}
	// Topic names are binding (DESIGN §7); the variables exist so that
	// several stacks can share one Kafka cluster, as the tests do.
	eventsTopic := config.String("KAFKA_TOPIC_EVENTS", wire.TopicEvents)
	eventIngester, err := events.NewWorker(events.WorkerConfig{
		Brokers: a.cfg.KafkaBrokers, Topic: eventsTopic, DB: db, Registerer: reg, Logger: log.Named("events"),
	})
	if err != nil {
		return c.fail(err)
	}
	// Events created through the API are produced like the gateway's: never
	// blocking a request on Kafka, spooled to disk while it is away.
	sender := outbox.NewKafkaSender(a.cfg.KafkaBrokers)
	defer sender.Close()
	producer, err := outbox.New(outbox.Config{
		Dir: filepath.Join(config.String("DATA_DIR", ".data"), "spool", "controlplane-events"), Logger: log.Named("outbox"),
	}, sender)
	if err != nil {
		return c.fail(err)
	}
	box, err := secretbox.New(a.cfg.MasterKey, a.cfg.PreviousMasterKeys...)
	if err != nil {
		return usageErrorf(c.name, "%v", err)
	}
	if n := len(a.cfg.PreviousMasterKeys); n > 0 {
		// A rotation left half done keeps the old key able to read every
		// secret sealed before it.
		log.Warn("MASTER_KEY_PREVIOUS is set: a master-key rotation is under way; finish it with `controlplane master-key rotate`, then restart without it",
			zap.Int("previous_keys", n))
	}
	allow, err := ssrf.ParseAllowlist(config.String("WEBHOOK_ALLOW_CIDRS", ""))
	if err != nil {
		return usageErrorf(c.name, "WEBHOOK_ALLOW_CIDRS: %v", err)
	}
	proxies, err := ssrf.ParseAllowlist(config.String("TRUSTED_PROXIES", "")) // the same address list syntax
	if err != nil {
		return usageErrorf(c.name, "TRUSTED_PROXIES: %v", err)
	}
	requireHTTPS, err := config.Bool("WEBHOOK_REQUIRE_HTTPS", false)
	if err != nil {
		return usageErrorf(c.name, "%v", err)
	}
	dash, err := dashboard.New(dashboard.Config{
		DB:           db,
		Logger:       log.Named("dashboard"),
		Accounts:     accounts.New(db, nil),
		Keys:         keys.New(db, nil).WithLimits(lim),
		Quotas:       lim,
		LogRetention: retention,
		Audit:        audit.NewLog(db),
		Webhooks: &dashboard.SQLWebhooks{DB: db, Box: box, URLPolicy: ssrf.Policy{
			Allow: allow, RequireHTTPS: requireHTTPS,
		}},
		Box:            box,
		GatewayURL:     config.String("GATEWAY_PUBLIC_URL", "http://localhost:8080"),
		TrustedProxies: proxies,
	})
	if err != nil {
		return c.fail(err)
	}

	srv := server.New(server.Config{
		Addr:           *addr,
		DB:             db,
		Logger:         log,
		IdentitySecret: a.cfg.IdentitySecret,
		API: []router.Routes{
			requestlogs.New(db, log.Named("request-logs")),
			usageapi.New(db, log.Named("usage"), nil),
			events.NewAPI(events.Config{DB: db, Producer: producer, Topic: eventsTopic, Logger: log.Named("events")}),
			webhooks.NewAPI(webhooks.Config{DB: db, Box: box, Logger: log.Named("webhooks"), URLPolicy: ssrf.Policy{
				Allow: allow, RequireHTTPS: requireHTTPS,
			}}),
		},
		Metrics:   promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		Dashboard: dash,
	})
	// The HTTP server and the background workers share one fate: when one
	// fails the others stop, and all of them stop with the context.
	g, ctx := errgroup.WithContext(a.ctx)
	g.Go(func() error { return srv.Run(ctx) })
	g.Go(func() error { return logIngester.Run(ctx) })
	g.Go(func() error { return limitsSync.Run(ctx) })
	g.Go(func() error { return eventIngester.Run(ctx) })
	g.Go(func() error { return producer.Run(ctx) })
	republisher := &events.Republisher{DB: db, Producer: producer, Topic: eventsTopic, Logger: log.Named("events")}
	g.Go(func() error { return republisher.Run(ctx) })
	return c.fail(g.Wait())
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
		if err := migrations.Up(a.ctx, a.cfg.DatabaseURL); err != nil {
			return &failure{cmd: cmd, err: err}
		}
		fmt.Fprintln(a.stdout, "migrations applied")
	case "down":
		if err := migrations.Down(a.ctx, a.cfg.DatabaseURL); err != nil {
			return &failure{cmd: cmd, err: err}
		}
		fmt.Fprintln(a.stdout, "migrations reverted")
	default:
		return usageErrorf(cmd, "unknown direction %q (use up or down)", dir)
	}
	return nil
}
