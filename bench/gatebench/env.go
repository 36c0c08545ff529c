package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/gatehouse/gatehouse/e2e"
	"github.com/gatehouse/gatehouse/internal/identity"
)

// env is the platform under test: the e2e stack (fresh database, sample
// API, control plane, deliverer and a demo gateway used for seeding), the
// Kafka topics and Redis key prefix of this run, and a static upstream.
type env struct {
	bin, dir   string
	stack      *e2e.Stack
	rdb        *redis.Client
	brokers    []string
	logTopic   string
	eventTopic string
	prefix     string // Redis key prefix of this run
	static     *staticUpstream
	secret     []byte
	emitEvents bool   // the gateway binary has emit_events
	emitNote   string // why emit_events is not in the full gateway, if it is not
}

// tenant is a seeded organisation with a live secret key.
type tenant struct {
	OrgID    string `json:"org_id"`
	KeyID    string `json:"key_id"`
	Key      string `json:"-"`
	Customer string `json:"customer_id,omitempty"`
}

func startEnv(ctx context.Context, bin, dir string) (*env, error) {
	e := &env{bin: bin, dir: dir}
	s, err := e2e.Start(ctx, e2e.Options{Bin: bin})
	if err != nil {
		return nil, fmt.Errorf("starting the stack: %w", err)
	}
	e.stack = s
	e.secret = []byte(envValue(s.Env, "IDENTITY_SECRET"))
	e.brokers = strings.Split(envValue(s.Env, "KAFKA_BROKERS"), ",")
	opt, err := redis.ParseURL(envValue(s.Env, "REDIS_URL"))
	if err != nil {
		e.close()
		return nil, err
	}
	e.rdb = redis.NewClient(opt)
	run := strconv.FormatInt(time.Now().Unix(), 36)
	e.prefix = "gatehousebench:" + run + ":"
	e.logTopic = "bench.request-logs." + run
	e.eventTopic = "bench.events." + run
	if err := createTopics(e.brokers, e.logTopic, e.eventTopic); err != nil {
		e.close()
		return nil, fmt.Errorf("creating the bench topics: %w", err)
	}
	e.static, err = startStatic()
	if err != nil {
		e.close()
		return nil, err
	}
	e.emitEvents, e.emitNote = hasModule(bin, "http.handlers.emit_events")
	return e, nil
}

// close stops everything the run started and removes its Redis keys and
// Kafka topics.
func (e *env) close() {
	if e.static != nil {
		e.static.close()
	}
	if e.rdb != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		_, _ = deleteKeys(ctx, e.rdb, e.prefix+"*")
		cancel()
		e.rdb.Close()
	}
	if e.logTopic != "" {
		_ = deleteTopics(e.brokers, e.logTopic, e.eventTopic)
	}
	if e.stack != nil {
		e.stack.Stop()
	}
}

// seed creates an organisation with a live secret key, and a customer
// through the demo gateway when withCustomer.
func (e *env) seed(ctx context.Context, name string, withCustomer bool) (tenant, error) {
	var t tenant
	var org struct{ ID string }
	if err := e.stack.CLIJSON(ctx, &org, "orgs", "create", "--name", name); err != nil {
		return t, err
	}
	t.OrgID = org.ID
	var k struct{ ID, Key string }
	if err := e.stack.CLIJSON(ctx, &k, "keys", "create", "--org", org.ID, "--env", "live"); err != nil {
		return t, err
	}
	t.KeyID, t.Key = k.ID, k.Key
	if !withCustomer {
		return t, nil
	}
	req, _ := http.NewRequestWithContext(ctx, "POST", e.stack.Gateway.URL()+"/v1/customers",
		strings.NewReader("email=bench%40example.com&name=Bench+Customer&description=benchmark+fixture"))
	req.Header.Set("Authorization", "Bearer "+t.Key)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return t, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var c struct{ ID string }
	if resp.StatusCode != 200 || json.Unmarshal(b, &c) != nil || c.ID == "" {
		return t, fmt.Errorf("creating the fixture customer: %d %s", resp.StatusCode, b)
	}
	t.Customer = c.ID
	return t, nil
}

// signed returns r with the headers every load request carries: the
// tenant's key (used by api_key) and an identity pre-signed for r's method
// and path (used by the upstream when no api_key runs before it).
// Signatures are valid for identity.DefaultMaxSkew, so they are made afresh
// for every stage.
func (e *env) signed(t tenant, r Request) Request {
	r.Headers = e.headers(t, r.Method, r.Path)
	return r
}

func (e *env) headers(t tenant, method, target string) []string {
	h := http.Header{}
	identity.NewSigner(e.secret, nil).Sign(h, method, target, identity.Identity{
		OrgID: t.OrgID, Livemode: true, KeyID: t.KeyID, Scopes: []string{identity.AllScopes},
		RequestID: "req_benchpresigned", APIVersion: "2026-11-01",
	})
	out := []string{"Authorization: Bearer " + t.Key, "Accept: application/json"}
	for k, vs := range h {
		for _, v := range vs {
			out = append(out, k+": "+v)
		}
	}
	return out
}

// gatewayEnv is the process environment of a variant gateway.
func (e *env) gatewayEnv(dataDir string, extra ...string) []string {
	env := append([]string(nil), e.stack.Env...)
	env = append(env, "DATA_DIR="+dataDir)
	return append(env, extra...)
}

// startVariant renders v's Caddyfile for upstream and starts its gateway.
func (e *env) startVariant(ctx context.Context, tag string, v Variant, upstream string, extraEnv ...string) (*gateway, error) {
	addrs, err := freeAddrs(2)
	if err != nil {
		return nil, err
	}
	name := tag + "-" + v.Name
	dataDir := filepath.Join(e.dir, name)
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, err
	}
	path, err := writeCaddyfile(e.dir, name, caddyParams{
		F: v.Features, Admin: addrs[1], Addr: addrs[0], Upstream: upstream,
		ControlPlane: e.stack.Control.Addr, LogTopic: e.logTopic, EventTopic: e.eventTopic, Prefix: e.prefix,
	})
	if err != nil {
		return nil, err
	}
	g, err := startGateway(ctx, e.bin, e.dir, name, addrs[0], path, e.gatewayEnv(dataDir, extraEnv...))
	if err != nil {
		return nil, err
	}
	g.admin = addrs[1]
	return g, nil
}

func envValue(env []string, name string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == name {
			v = val // the last one wins, as for exec
		}
	}
	return v
}

// hasModule reports whether the gateway binary has a Caddy module.
func hasModule(bin, id string) (bool, string) {
	out, err := execOutput(filepath.Join(bin, "gateway"), "list-modules")
	if err != nil {
		return false, "gateway list-modules failed: " + err.Error()
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == id {
			return true, ""
		}
	}
	return false, id + " is not compiled into bin/gateway yet (caddymodule does not import it), so the full gateway runs without emit_events"
}

func kafkaController(brokers []string) (*kafka.Conn, error) {
	conn, err := kafka.Dial("tcp", brokers[0])
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctrl, err := conn.Controller()
	if err != nil {
		return nil, err
	}
	return kafka.Dial("tcp", net.JoinHostPort(ctrl.Host, strconv.Itoa(ctrl.Port)))
}

func createTopics(brokers []string, topics ...string) error {
	cc, err := kafkaController(brokers)
	if err != nil {
		return err
	}
	defer cc.Close()
	var cfgs []kafka.TopicConfig
	for _, t := range topics {
		cfgs = append(cfgs, kafka.TopicConfig{Topic: t, NumPartitions: 3, ReplicationFactor: 1})
	}
	return cc.CreateTopics(cfgs...)
}

func deleteTopics(brokers []string, topics ...string) error {
	cc, err := kafkaController(brokers)
	if err != nil {
		return err
	}
	defer cc.Close()
	return cc.DeleteTopics(topics...)
}

// countKeys counts the keys matching pattern and samples up to sample of
// their remaining lifetimes.
func countKeys(ctx context.Context, rdb *redis.Client, pattern string, sample int) (int64, []time.Duration, error) {
	var n int64
	var ttls []time.Duration
	iter := rdb.Scan(ctx, 0, pattern, 5000).Iterator()
	for iter.Next(ctx) {
		n++
		if len(ttls) < sample {
			if d, err := rdb.PTTL(ctx, iter.Val()).Result(); err == nil {
				ttls = append(ttls, d)
			}
		}
	}
	return n, ttls, iter.Err()
}

func deleteKeys(ctx context.Context, rdb *redis.Client, pattern string) (int64, error) {
	var n int64
	iter := rdb.Scan(ctx, 0, pattern, 5000).Iterator()
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := rdb.Unlink(ctx, batch...).Err()
		n += int64(len(batch))
		batch = batch[:0]
		return err
	}
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 1000 {
			if err := flush(); err != nil {
				return n, err
			}
		}
	}
	if err := flush(); err != nil {
		return n, err
	}
	return n, iter.Err()
}
