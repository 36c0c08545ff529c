// Command deliverer is the webhook delivery worker, with health and
// Prometheus metrics on DELIVERER_ADDR (default :8083).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/gatehouse/gatehouse/deliverer"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/redact"
	"github.com/gatehouse/gatehouse/internal/secretbox"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "deliverer:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	cfg := config.Load()
	lvl, err := zapcore.ParseLevel(cfg.LogLevel)
	if err != nil {
		return fmt.Errorf("LOG_LEVEL: %w", err)
	}
	zcfg := zap.NewProductionConfig()
	zcfg.Level = zap.NewAtomicLevelAt(lvl)
	zcfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	log, err := zcfg.Build()
	if err != nil {
		return fmt.Errorf("building logger: %w", err)
	}
	log = log.Named("deliverer")
	defer func() { _ = log.Sync() }()
	apierror.SetDocsBase(cfg.DocsURL)
	env, err := deliverer.FromEnv()
	if err != nil {
		return err
	}
	if err := config.RequireSecrets("MASTER_KEY"); err != nil {
		return err
	}
	box, err := secretbox.New(cfg.MasterKey, cfg.PreviousMasterKeys...)
	if err != nil {
		return err // names MASTER_KEY or MASTER_KEY_PREVIOUS
	}
	if n := len(cfg.PreviousMasterKeys); n > 0 {
		// A rotation left half done keeps the old key able to read every
		// secret sealed before it.
		log.Warn("MASTER_KEY_PREVIOUS is set: a master-key rotation is under way; finish it with `controlplane master-key rotate`, then restart without it",
			zap.Int("previous_keys", n))
	}

	if err := redact.CheckURL(cfg.DatabaseURL); err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	pc, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", redact.URLError(cfg.DatabaseURL, err))
	}
	if !strings.Contains(cfg.DatabaseURL, "pool_max_conns") {
		// Consumer, poller, result writer, lease renewer and secret loads
		// each want a connection; the 4 of the default would queue them.
		pc.MaxConns = 16
	}
	db, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return fmt.Errorf("connecting to postgres: %w", err)
	}
	defer db.Close()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := db.Ping(pctx); err != nil {
		return fmt.Errorf("connecting to postgres (DATABASE_URL): %w", err)
	}

	notifiers := deliverer.Notifiers{deliverer.LogNotifier{Logger: log.Named("alerts")}}
	if env.SMTP.Enabled() {
		notifiers = append(notifiers, &deliverer.SMTPNotifier{Config: env.SMTP, Recipients: deliverer.OrgAdmins(db)})
	}
	wc := env.Worker
	wc.Box = box
	wc.Notifier = notifiers
	svc, err := deliverer.New(deliverer.Config{
		Addr:    env.Addr,
		Brokers: cfg.KafkaBrokers,
		DB:      db,
		Logger:  log,
		Worker:  wc,
	})
	if err != nil {
		return err
	}
	return svc.Run(ctx)
}
