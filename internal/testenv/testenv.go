// Package testenv gives integration tests the real Postgres, Redis and Kafka
// that `make services` starts. A missing service fails the test with a hint;
// it never skips, so CI cannot go green without them.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/migrations"
)

const hint = " (start the services with `make services`, or run `make test`)"

// Postgres creates a fresh, migrated database for the test and returns its
// URL; the database is dropped when the test ends.
func Postgres(t testing.TB) string {
	t.Helper()
	base := config.String("DATABASE_URL", config.DefaultDatabaseURL)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("postgres unreachable at %s: %v"+hint, redact(base), err)
	}
	defer admin.Close(ctx)
	name := "test_" + Suffix()
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("creating test database: %v", err)
	}
	u, _ := url.Parse(base)
	u.Path = "/" + name
	dsn := u.String()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, base)
		if err != nil {
			return
		}
		defer c.Close(ctx)
		_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	if err := migrations.Up(context.Background(), dsn); err != nil {
		t.Fatalf("migrating test database: %v", err)
	}
	return dsn
}

// Pool is Postgres plus a connection pool closed at the end of the test.
func Pool(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	dsn := Postgres(t)
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool, dsn
}

// Redis returns a client to the test Redis and a key prefix unique to the
// test, so tests can share one server without seeing each other's keys.
func Redis(t testing.TB) (*redis.Client, string) {
	t.Helper()
	raw := config.String("REDIS_URL", config.DefaultRedisURL)
	opts, err := redis.ParseURL(raw)
	if err != nil {
		t.Fatalf("REDIS_URL: %v", err)
	}
	c := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("redis unreachable at %s: %v"+hint, raw, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, "test:" + Suffix() + ":"
}

// RedisURL is the URL of the test Redis, checked to answer.
func RedisURL(t testing.TB) string {
	t.Helper()
	Redis(t)
	return config.String("REDIS_URL", config.DefaultRedisURL)
}

// Kafka returns the broker list after checking the first broker accepts
// connections and can coordinate consumer groups (groupsReady).
func Kafka(t testing.TB) []string {
	t.Helper()
	brokers := config.KafkaBrokers()
	c, err := net.DialTimeout("tcp", brokers[0], 5*time.Second)
	if err != nil {
		t.Fatalf("kafka unreachable at %s: %v"+hint, brokers[0], err)
	}
	c.Close()
	groupsOnce.Do(func() { groupsErr = groupsReady(brokers, 60*time.Second) })
	if groupsErr != nil {
		t.Fatalf("kafka at %s cannot coordinate consumer groups: %v", brokers[0], groupsErr)
	}
	return brokers
}

var (
	groupsOnce sync.Once
	groupsErr  error
)

// groupsReady waits until the brokers answer a consumer group's offset
// fetch. A freshly formatted broker creates its offsets topic on the first
// group request and answers "coordinator not available" or "not coordinator
// for group" until that topic is loaded; a test that reads its group's
// offsets then would fail on the broker's start-up, not on the code.
func groupsReady(brokers []string, within time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	tr := &kafka.Transport{} // not the default one: see partitionsServed
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 5 * time.Second, Transport: tr}
	req := &kafka.OffsetFetchRequest{GroupID: "testenv-probe", Topics: map[string][]int{"testenv-probe": {0}}}
	for {
		res, err := c.OffsetFetch(ctx, req)
		if err == nil {
			err = res.Error
		}
		if err == nil {
			return nil
		}
		var kerr kafka.Error
		if !errors.As(err, &kerr) || !kerr.Temporary() || ctx.Err() != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond) // the broker is loading its offsets topic
	}
}

// Suffix is a short random lowercase hex string for unique names.
func Suffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparseable DATABASE_URL)"
	}
	return u.Redacted()
}

// FreeAddr returns a loopback address ("127.0.0.1:port") where nothing
// listened a moment ago: for a server the test starts itself (an in-process
// Caddy, say), or as an address where nothing answers.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// FreePort is FreeAddr's port.
func FreePort(t testing.TB) int {
	t.Helper()
	_, port, _ := net.SplitHostPort(FreeAddr(t))
	n, _ := strconv.Atoi(port)
	return n
}

// KafkaTopic creates a topic unique to the test ("test.<name>.<suffix>")
// with partitions partitions, waits until every partition has a leader (or
// the first write could fail with Unknown Topic), and deletes it when the
// test ends. Tests never read each other's messages.
func KafkaTopic(t testing.TB, brokers []string, name string, partitions int) string {
	t.Helper()
	topic := "test." + name + "." + Suffix()
	conn, err := kafka.Dial("tcp", brokers[0])
	if err != nil {
		t.Fatalf("kafka unreachable at %s: %v"+hint, brokers[0], err)
	}
	defer conn.Close()
	ctrl, err := conn.Controller()
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(ctrl.Host, strconv.Itoa(ctrl.Port))
	cc, err := kafka.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if err := cc.CreateTopics(kafka.TopicConfig{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, err := kafka.Dial("tcp", addr); err == nil {
			_ = c.DeleteTopics(topic)
			c.Close()
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for !partitionsServed(brokers, topic, partitions) {
		if time.Now().After(deadline) {
			t.Fatalf("topic %s has not every partition served by its leader after 30 s", topic)
		}
		time.Sleep(20 * time.Millisecond) // polling the broker
	}
	return topic
}

// partitionsServed reports whether every partition of a new topic answers
// an offsets request at its leader. Metadata names a leader a moment
// before the leader has opened the partition's log; a write in that moment
// fails with Unknown Topic Or Partition.
func partitionsServed(brokers []string, topic string, partitions int) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req := make([]kafka.OffsetRequest, partitions)
	for i := range req {
		req[i] = kafka.FirstOffsetOf(i)
	}
	// Its own transport: kafka-go's default one caches metadata for seconds,
	// and the test's writers, which use it, would then not see the topic.
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr}
	res, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: req}})
	if err != nil || len(res.Topics[topic]) != partitions {
		return false
	}
	for _, p := range res.Topics[topic] {
		if p.Error != nil {
			return false
		}
	}
	return true
}
