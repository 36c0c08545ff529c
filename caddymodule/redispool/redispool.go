// Package redispool shares one go-redis client per Redis URL between every
// Gatehouse module and across Caddy config reloads, so a reload neither
// drops connections nor leaks them.
package redispool

import (
	"context"
	"fmt"
	neturl "net/url"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"

	"github.com/gatehouse/gatehouse/internal/redact"
)

var pool = caddy.NewUsagePool()

func init() {
	// go-redis logs every failed dial; during a Redis outage that is a line
	// per request. Modules log outages themselves, once per interval.
	redis.SetLogger(quietLogger{})
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// Client is the shared client for one Redis URL: direct commands on the
// embedded go-redis client, script calls through Scripts, which coalesces
// concurrent ones into pipelines (see Batcher).
type Client struct {
	*redis.Client
	Scripts *Batcher
}

func (c Client) Destruct() error {
	c.Scripts.close()
	return c.Client.Close()
}

// Timeouts bound every Redis call on the request path: a slow or dead Redis
// must never hang a client request. Each module also puts its own, usually
// shorter, deadline on the context of its calls (rate_limit's and
// idempotency's `timeout`), which the client honours; IOTimeout is only the
// backstop for calls without one.
const (
	DialTimeout = 250 * time.Millisecond
	IOTimeout   = time.Second
)

// Get returns the shared client for url. Callers must call Release with the
// same url in their Cleanup.
func Get(url string) (Client, error) {
	v, _, err := pool.LoadOrNew(url, func() (caddy.Destructor, error) {
		opts, err := redis.ParseURL(url)
		if err != nil {
			return nil, fmt.Errorf("parsing redis url: %w", redact.URLError(url, err))
		}
		// Defaults for what the URL leaves out; what it sets is kept.
		set := urlOptions(url)
		if !set.Has("dial_timeout") {
			opts.DialTimeout = DialTimeout
		}
		if !set.Has("read_timeout") {
			opts.ReadTimeout = IOTimeout
		}
		if !set.Has("write_timeout") {
			opts.WriteTimeout = IOTimeout
		}
		opts.ContextTimeoutEnabled = true
		// -1 disables retries (0 would mean go-redis's default of 3): a retried
		// Lua script would run twice — a false 409 from idempotency, budget
		// consumed twice by rate_limit — and multiply the worst-case latency.
		opts.MaxRetries = -1
		opts.DialerRetries = 1
		if !set.Has("pool_size") {
			opts.PoolSize = 256
		}
		if !set.Has("min_idle_conns") {
			opts.MinIdleConns = 8
		}
		rdb := redis.NewClient(opts)
		return Client{Client: rdb, Scripts: newBatcher(rdb)}, nil
	})
	if err != nil {
		return Client{}, err
	}
	return v.(Client), nil
}

// urlOptions are the options given in a Redis URL's query (pool_size,
// read_timeout…), which go-redis has parsed.
func urlOptions(raw string) neturl.Values {
	u, err := neturl.Parse(raw)
	if err != nil {
		return nil
	}
	return u.Query()
}

// Release drops one reference to the client for url.
func Release(url string) {
	_, _ = pool.Delete(url)
}
