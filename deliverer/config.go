package deliverer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/ssrf"
)

// Env is the deliverer's own configuration from the environment (the shared
// settings — DATABASE_URL, KAFKA_BROKERS, MASTER_KEY, LOG_LEVEL — come from
// internal/config):
//
//	DELIVERER_ADDR                 health and metrics address (:8083)
//	WEBHOOK_ALLOW_CIDRS            ranges reachable despite the SSRF guard, e.g. "127.0.0.0/8,::1" or "loopback" (none)
//	DELIVERY_SCHEDULE_LIVE         retry waits, live mode (5s,5m0s,30m0s,2h0m0s,5h0m0s,10h0m0s,10h0m0s,24h0m0s,24h0m0s)
//	DELIVERY_SCHEDULE_SANDBOX      retry waits, sandbox (5s,1m0s,5m0s)
//	DELIVERY_CONCURRENCY           attempts in flight in all (64)
//	DELIVERY_ENDPOINT_CONCURRENCY  attempts in flight per endpoint (10)
//	DELIVERY_ORG_CONCURRENCY       attempts in flight for one organisation's endpoints (half of DELIVERY_CONCURRENCY, at least twice the per-endpoint one)
//	DELIVERY_TIMEOUT               one attempt, connect to last byte (15s)
//	DELIVERY_LEASE                 how long a claim holds a delivery (30s)
//	DELIVERY_POLL_INTERVAL         how often due deliveries are claimed (250ms)
//	DELIVERY_DISABLE_AFTER         disable endpoints failing continuously this long (120h; off: never)
//	SMTP_ADDR, SMTP_USERNAME, SMTP_PASSWORD, SMTP_FROM, SMTP_TO
//	                               mail alerts; off unless SMTP_ADDR and SMTP_FROM are set
//	DATA_DIR                       local state; the dead-letter spool lives in DATA_DIR/deliverer-spool (.data)
//	DELIVERER_TOPIC, DELIVERER_GROUP, DELIVERER_DEAD_LETTER_TOPIC
//	                               override platform.events.v1, group "deliverer" and webhooks.dead-letter.v1
//	                               (several environments on one Kafka cluster; the chaos test);
//	                               without them, KAFKA_TOPIC_EVENTS and KAFKA_TOPIC_DEAD_LETTER name the topics
type Env struct {
	Addr   string
	Worker WorkerConfig // without DB, Brokers, Box, Logger
	SMTP   SMTPConfig
}

// FromEnv reads Env.
func FromEnv() (Env, error) {
	var e Env
	e.Addr = config.String("DELIVERER_ADDR", DefaultAddr)
	allow, err := ssrf.ParseAllowlist(os.Getenv("WEBHOOK_ALLOW_CIDRS"))
	if err != nil {
		return e, fmt.Errorf("WEBHOOK_ALLOW_CIDRS: %w", err)
	}
	// URL rules (https in live mode, no credentials) are the control
	// plane's, at creation; the deliverer enforces the address rules, at
	// every connection.
	e.Worker.Policy = ssrf.Policy{Allow: allow}
	if e.Worker.LiveSchedule, err = scheduleEnv("DELIVERY_SCHEDULE_LIVE", DefaultLiveSchedule); err != nil {
		return e, err
	}
	if e.Worker.SandboxSchedule, err = scheduleEnv("DELIVERY_SCHEDULE_SANDBOX", DefaultSandboxSchedule); err != nil {
		return e, err
	}
	var errs []error
	positiveInt := func(name string, def int) int {
		n, err := config.Int(name, def)
		if err == nil && n < 1 {
			err = fmt.Errorf("%s: must be positive, got %d", name, n)
		}
		errs = append(errs, err)
		return n
	}
	positiveDuration := func(name string, def time.Duration) time.Duration {
		d, err := config.Duration(name, def)
		if err == nil && d <= 0 {
			err = fmt.Errorf("%s: must be positive, got %s", name, d)
		}
		errs = append(errs, err)
		return d
	}
	e.Worker.Concurrency = positiveInt("DELIVERY_CONCURRENCY", 64)
	e.Worker.EndpointConcurrency = positiveInt("DELIVERY_ENDPOINT_CONCURRENCY", 10)
	if os.Getenv("DELIVERY_ORG_CONCURRENCY") != "" {
		e.Worker.OrgConcurrency = positiveInt("DELIVERY_ORG_CONCURRENCY", 0)
	}
	e.Worker.Timeout = positiveDuration("DELIVERY_TIMEOUT", 15*time.Second)
	e.Worker.Lease = positiveDuration("DELIVERY_LEASE", max(30*time.Second, 2*e.Worker.Timeout))
	e.Worker.PollInterval = positiveDuration("DELIVERY_POLL_INTERVAL", 250*time.Millisecond)
	if os.Getenv("DELIVERY_DISABLE_AFTER") == "off" {
		e.Worker.DisableAfter = -1
	} else {
		e.Worker.DisableAfter = positiveDuration("DELIVERY_DISABLE_AFTER", 5*24*time.Hour)
	}
	if err := errors.Join(errs...); err != nil {
		return e, err
	}
	e.Worker.Topic = config.String("DELIVERER_TOPIC", config.String("KAFKA_TOPIC_EVENTS", ""))
	e.Worker.GroupID = os.Getenv("DELIVERER_GROUP")
	e.Worker.DeadLetterTopic = config.String("DELIVERER_DEAD_LETTER_TOPIC", config.String("KAFKA_TOPIC_DEAD_LETTER", ""))
	e.Worker.SpoolDir = filepath.Join(config.String("DATA_DIR", ".data"), "deliverer-spool")
	e.SMTP = SMTPConfig{
		Addr:     os.Getenv("SMTP_ADDR"),
		Username: os.Getenv("SMTP_USERNAME"),
		Password: os.Getenv("SMTP_PASSWORD"),
		From:     os.Getenv("SMTP_FROM"),
	}
	for _, a := range strings.Split(os.Getenv("SMTP_TO"), ",") {
		if a = strings.TrimSpace(a); a != "" {
			e.SMTP.To = append(e.SMTP.To, a)
		}
	}
	return e, nil
}

func scheduleEnv(name string, def Schedule) (Schedule, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	s, err := ParseSchedule(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return s, nil
}
