// Package config is the single place that names the environment variables
// shared by the platform's processes and their defaults, which match the
// local services of `make services` (DESIGN §3).
package config

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Defaults for local development.
const (
	DefaultDatabaseURL    = "postgres://gatehouse:gatehouse@127.0.0.1:5432/gatehouse?sslmode=disable"
	DefaultRedisURL       = "redis://127.0.0.1:6379/0"
	DefaultKafkaBrokers   = "127.0.0.1:9092"
	DefaultIdentitySecret = "dev-identity-secret-change-me"
	// DefaultMasterKey is 32 bytes, base64; production must set MASTER_KEY.
	DefaultMasterKey = "ZGV2LW1hc3Rlci1rZXktMzItYnl0ZXMtbG9uZyEhISE="
)

// Shared holds the settings every process reads.
type Shared struct {
	DatabaseURL    string   // DATABASE_URL
	RedisURL       string   // REDIS_URL
	KafkaBrokers   []string // KAFKA_BROKERS, comma separated
	IdentitySecret []byte   // IDENTITY_SECRET, HMAC key for gateway → upstream identity
	MasterKey      string   // MASTER_KEY, base64 32 bytes, encrypts webhook secrets
	// PreviousMasterKeys (MASTER_KEY_PREVIOUS, comma separated) open secrets
	// sealed before a master-key rotation; they never seal.
	PreviousMasterKeys []string
	LogLevel           string // LOG_LEVEL: debug, info, warn, error
	DocsURL            string // DOCS_URL: base of error doc_url anchors
	// RateLimitKeyPrefix (RATE_LIMIT_KEY_PREFIX) starts the rate limiter's
	// Redis keys; "" is the limiter's default (keyspace.DefaultPrefix).
	RateLimitKeyPrefix string
}

// Load reads the shared settings.
func Load() Shared {
	return Shared{
		DatabaseURL:        String("DATABASE_URL", DefaultDatabaseURL),
		RedisURL:           String("REDIS_URL", DefaultRedisURL),
		KafkaBrokers:       KafkaBrokers(),
		IdentitySecret:     []byte(String("IDENTITY_SECRET", DefaultIdentitySecret)),
		MasterKey:          String("MASTER_KEY", DefaultMasterKey),
		PreviousMasterKeys: List("MASTER_KEY_PREVIOUS"),
		LogLevel:           String("LOG_LEVEL", "info"),
		DocsURL:            String("DOCS_URL", "http://localhost:8081/docs/errors"),
		RateLimitKeyPrefix: os.Getenv("RATE_LIMIT_KEY_PREFIX"),
	}
}

// KafkaBrokers is KAFKA_BROKERS as a list ("a:9092, b:9092" included),
// else DefaultKafkaBrokers: every process reads it so, the gateway's
// modules included.
func KafkaBrokers() []string {
	if l := BrokerSet(os.Getenv("KAFKA_BROKERS")); len(l) > 0 {
		return l
	}
	return strings.Split(DefaultKafkaBrokers, ",")
}

// BrokerSet is the Kafka brokers in lists (each comma-separated), trimmed,
// sorted and without repeats: one set, however it is written, so that
// what is kept per set of brokers (the gateway's spools) is found again
// when a list is reordered.
func BrokerSet(lists ...string) []string {
	var out []string
	for _, l := range lists {
		for _, v := range strings.Split(l, ",") {
			if v = strings.TrimSpace(v); v != "" {
				out = append(out, v)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// devSecrets are the secret settings whose defaults above are published
// with the source.
var devSecrets = map[string]string{
	"IDENTITY_SECRET": DefaultIdentitySecret,
	"MASTER_KEY":      DefaultMasterKey,
}

// RequireSecrets refuses to let a server run on a published development
// secret. A control plane verifying identities with DefaultIdentitySecret
// accepts requests anyone signs for any organisation; webhook secrets
// encrypted under DefaultMasterKey are readable by anyone who reads the
// database. So each named variable (IDENTITY_SECRET, MASTER_KEY) must be set,
// to something other than its default. Tools and tests may still use the
// defaults; `make run` generates both secrets into .data/secrets.env.
func RequireSecrets(names ...string) error {
	for _, name := range names {
		dev, ok := devSecrets[name]
		if !ok {
			panic("config: " + name + " is not a secret setting")
		}
		switch v := os.Getenv(name); v {
		case "":
			return fmt.Errorf("%s is not set; generate one with `head -c 32 /dev/urandom | base64` (`make run` keeps one in .data/secrets.env)", name)
		case dev:
			return fmt.Errorf("%s is the published development value; generate one with `head -c 32 /dev/urandom | base64`", name)
		}
	}
	return nil
}

// String is the value of the environment variable name, or def when unset.
func String(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

// List is the comma-separated values of the environment variable name,
// without empty ones.
func List(name string) []string {
	var out []string
	for _, v := range strings.Split(os.Getenv(name), ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// Duration parses name as a Go duration ("15s", "2m"), or returns def when
// it is unset. A value that does not parse is an error naming the
// variable: a typo must not become the default without a word.
func Duration(name string, def time.Duration) (time.Duration, error) {
	return parsed(name, def, time.ParseDuration, "a duration such as 15s or 2m")
}

// Int parses name as an integer, or returns def when it is unset; a value
// that does not parse is an error naming the variable.
func Int(name string, def int) (int, error) {
	return parsed(name, def, strconv.Atoi, "a whole number")
}

// parsed reads name with parse, def when unset; a value parse refuses is an
// error saying what was expected (what).
func parsed[T any](name string, def T, parse func(string) (T, error), what string) (T, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	x, err := parse(strings.TrimSpace(v))
	if err != nil {
		return def, fmt.Errorf("%s: %q is not %s", name, v, what)
	}
	return x, nil
}

// Bool parses name as a boolean (true, false, 1, 0, yes, no, on, off), or
// returns def when it is unset; another value is an error naming the
// variable.
func Bool(name string, def bool) (bool, error) {
	v := os.Getenv(name)
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "":
		return def, nil
	case "yes", "on":
		return true, nil
	case "no", "off":
		return false, nil
	}
	b, err := strconv.ParseBool(strings.TrimSpace(v))
	if err != nil {
		return def, fmt.Errorf("%s: %q is not true or false", name, v)
	}
	return b, nil
}
