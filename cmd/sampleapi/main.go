// Command sampleapi runs the demo "existing backend", the customers service
// the gateway fronts. Configuration comes from the environment: DATABASE_URL,
// IDENTITY_SECRET, SAMPLEAPI_ADDR (default :8082) and LOG_LEVEL.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/redact"
	"github.com/gatehouse/gatehouse/sampleapi"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sampleapi:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if err := config.RequireSecrets("IDENTITY_SECRET"); err != nil {
		return err
	}
	cfg := config.Load()
	addr := config.String("SAMPLEAPI_ADDR", sampleapi.DefaultAddr)
	apierror.SetDocsBase(cfg.DocsURL)

	level, err := zapcore.ParseLevel(cfg.LogLevel)
	if err != nil {
		return fmt.Errorf("LOG_LEVEL: %w", err)
	}
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(level)
	log, err := zc.Build()
	if err != nil {
		return fmt.Errorf("building logger: %w", err)
	}
	defer func() { _ = log.Sync() }()

	if err := redact.CheckURL(cfg.DatabaseURL); err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	pool, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("configuring database pool: %w", redact.URLError(cfg.DatabaseURL, err))
	}
	defer pool.Close()
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		return fmt.Errorf("connecting to the database: %w", err)
	}

	srv := sampleapi.NewServer(sampleapi.Config{Addr: addr, IdentitySecret: cfg.IdentitySecret}, pool, log)
	if err := srv.Run(ctx); err != nil {
		return err
	}
	log.Info("sampleapi stopped")
	return nil
}
