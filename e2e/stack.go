// Package e2e starts the whole platform — gateway, control plane, sample API
// and deliverer as real processes built from this tree — against the real
// Postgres, Redis and Kafka of `make services`, on free loopback ports and a
// fresh database. The end-to-end tests and the benchmarks both use it.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/wire"
	"github.com/gatehouse/gatehouse/migrations"
)

// e2eMasterKey encrypts the stack's webhook secrets: a value of its own, as
// the processes refuse the published development key (config.RequireSecrets).
const e2eMasterKey = "ZTJlLW1hc3Rlci1rZXktMzItYnl0ZXMtbG9uZy4uLi4="

// Root is the repository root, found from this file's location.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// Build compiles the four binaries into dir.
func Build(dir string) error {
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/gateway", "./cmd/controlplane", "./cmd/sampleapi", "./cmd/deliverer")
	cmd.Dir = Root()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out)
	}
	return nil
}

// Proc is one running process of the stack.
type Proc struct {
	Name string
	Addr string // host:port it listens on
	cmd  *exec.Cmd
	log  *os.File
}

// Stack is a running platform.
type Stack struct {
	Bin         string
	Dir         string // per-stack scratch directory (logs, spool)
	DatabaseURL string
	Env         []string
	Gateway     *Proc
	Admin       string // Caddy admin address
	Control     *Proc
	Sample      *Proc
	Deliverer   *Proc

	dropDB     func()
	dropTopics func()
	mu         sync.Mutex
	procs      []*Proc
	stopOnce   sync.Once
}

// Options tune a stack.
type Options struct {
	Bin       string   // directory with the built binaries
	Caddyfile string   // path; default the repository's Caddyfile
	ExtraEnv  []string // appended to every process's environment
}

// Start creates a fresh database, migrates it, and starts the processes.
// The caller must Stop it.
func Start(ctx context.Context, o Options) (*Stack, error) {
	dir, err := os.MkdirTemp("", "gatehouse-e2e-")
	if err != nil {
		return nil, err
	}
	s := &Stack{Bin: o.Bin, Dir: dir}
	dsn, drop, err := freshDatabase(ctx)
	if err != nil {
		return nil, err
	}
	s.DatabaseURL, s.dropDB = dsn, drop
	if err := migrations.Up(ctx, dsn); err != nil {
		s.Stop()
		return nil, err
	}
	// Topics of its own, so that stacks sharing the Kafka of `make services`
	// (tests, benchmarks, `make run`) never consume each other's messages.
	topics, drop, err := freshTopics(config.String("KAFKA_BROKERS", config.DefaultKafkaBrokers))
	if err != nil {
		s.Stop()
		return nil, err
	}
	s.dropTopics = drop
	ports, err := freePorts(5)
	if err != nil {
		s.Stop()
		return nil, err
	}
	addr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", ports[i]) }
	s.Admin = addr(4)
	s.Env = append(os.Environ(),
		"DATABASE_URL="+dsn,
		"REDIS_URL="+config.String("REDIS_URL", config.DefaultRedisURL),
		"KAFKA_BROKERS="+config.String("KAFKA_BROKERS", config.DefaultKafkaBrokers),
		"IDENTITY_SECRET=e2e-identity-secret",
		"MASTER_KEY="+e2eMasterKey,
		"GATEWAY_BIND=127.0.0.1",
		fmt.Sprintf("GATEWAY_PORT=%d", ports[0]),
		"CONTROLPLANE_ADDR="+addr(1),
		"SAMPLEAPI_ADDR="+addr(2),
		"DELIVERER_ADDR="+addr(3),
		"CADDY_ADMIN="+s.Admin,
		"SAMPLEAPI_URL=http://"+addr(2),
		"CONTROLPLANE_URL=http://"+addr(1),
		"DATA_DIR="+dir,
		"LOG_LEVEL=info",
		"KAFKA_TOPIC_REQUEST_LOGS="+topics[0],
		"KAFKA_TOPIC_EVENTS="+topics[1],
		"KAFKA_TOPIC_DEAD_LETTER="+topics[2],
		"WEBHOOK_ALLOW_CIDRS=127.0.0.0/8,::1/128",
	)
	s.Env = append(s.Env, o.ExtraEnv...)
	caddyfile := o.Caddyfile
	if caddyfile == "" {
		caddyfile = filepath.Join(Root(), "Caddyfile")
	}
	steps := []struct {
		p    **Proc
		name string
		addr string
		args []string
	}{
		{&s.Sample, "sampleapi", addr(2), nil},
		{&s.Control, "controlplane", addr(1), []string{"serve"}},
		{&s.Deliverer, "deliverer", addr(3), nil},
		{&s.Gateway, "gateway", addr(0), []string{"run", "--config", caddyfile, "--adapter", "caddyfile"}},
	}
	for _, st := range steps {
		p, err := s.start(st.name, st.addr, st.args...)
		if err != nil {
			s.Stop()
			return nil, err
		}
		*st.p = p
	}
	for _, p := range s.procs {
		if err := waitHealthy(ctx, p); err != nil {
			s.Stop()
			return nil, err
		}
	}
	return s, nil
}

func (s *Stack) start(name, addr string, args ...string) (*Proc, error) {
	// Appended, so that a restarted process (Restart after Kill) does not
	// erase what the previous one logged before it died.
	logf, err := os.OpenFile(filepath.Join(s.Dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(s.Bin, name), args...)
	cmd.Env = s.Env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Proc{Name: name, Addr: addr, cmd: cmd, log: logf}
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return p, nil
}

// URL is the base URL of a process.
func (p *Proc) URL() string { return "http://" + p.Addr }

// Log returns what the process wrote so far.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.log.Name())
	return string(b)
}

// Kill stops the process with SIGKILL and waits for it.
func (p *Proc) Kill() {
	if p.cmd.Process != nil {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		_, _ = p.cmd.Process.Wait()
	}
}

// Terminate asks the process to stop (SIGTERM) and waits up to 10 s.
func (p *Proc) Terminate() error {
	if p.cmd.Process == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { _, err := p.cmd.Process.Wait(); done <- err }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		p.Kill()
		return errors.New(p.Name + " did not stop within 10s of SIGTERM")
	}
}

// Restart starts a stopped process again with the same arguments.
func (s *Stack) Restart(ctx context.Context, p *Proc) error {
	np, err := s.start(p.Name, p.Addr, p.cmd.Args[1:]...)
	if err != nil {
		return err
	}
	*p = *np
	return waitHealthy(ctx, p)
}

// Stop terminates every process and drops the database.
func (s *Stack) Stop() {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		procs := s.procs
		s.mu.Unlock()
		for i := len(procs) - 1; i >= 0; i-- {
			_ = procs[i].Terminate()
			procs[i].log.Close()
		}
		if s.dropDB != nil {
			s.dropDB()
		}
		if s.dropTopics != nil {
			s.dropTopics()
		}
	})
}

// freshTopics creates the three platform topics under a unique suffix and
// returns their names (request logs, events, dead letter).
func freshTopics(brokers string) ([]string, func(), error) {
	broker := strings.Split(brokers, ",")[0]
	conn, err := kafka.Dial("tcp", broker)
	if err != nil {
		return nil, nil, fmt.Errorf("kafka unreachable (start it with `make services`): %w", err)
	}
	defer conn.Close()
	ctrl, err := conn.Controller()
	if err != nil {
		return nil, nil, err
	}
	cc, err := kafka.Dial("tcp", net.JoinHostPort(ctrl.Host, strconv.Itoa(ctrl.Port)))
	if err != nil {
		return nil, nil, err
	}
	defer cc.Close()
	suffix := fmt.Sprintf(".e2e-%d-%d", os.Getpid(), time.Now().UnixNano()%1e9)
	names := []string{wire.TopicRequestLogs + suffix, wire.TopicEvents + suffix, wire.TopicDeadLetter + suffix}
	var cfgs []kafka.TopicConfig
	for _, n := range names {
		cfgs = append(cfgs, kafka.TopicConfig{Topic: n, NumPartitions: 3, ReplicationFactor: 1})
	}
	if err := cc.CreateTopics(cfgs...); err != nil {
		return nil, nil, fmt.Errorf("creating topics: %w", err)
	}
	drop := func() {
		if c, err := kafka.Dial("tcp", net.JoinHostPort(ctrl.Host, strconv.Itoa(ctrl.Port))); err == nil {
			_ = c.DeleteTopics(names...)
			c.Close()
		}
	}
	return names, drop, nil
}

// Logs concatenates every process log, for failure messages.
func (s *Stack) Logs() string {
	var b strings.Builder
	for _, p := range s.procs {
		fmt.Fprintf(&b, "===== %s =====\n%s\n", p.Name, tail(p.Log(), 4000))
	}
	return b.String()
}

// CLI runs the controlplane binary with args and returns stdout.
func (s *Stack) CLI(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(s.Bin, "controlplane"), args...)
	cmd.Env = s.Env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("controlplane %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// CLIJSON runs the controlplane CLI with --json and decodes its object.
func (s *Stack) CLIJSON(ctx context.Context, v any, args ...string) error {
	out, err := s.CLI(ctx, append(args, "--json")...)
	if err != nil {
		return err
	}
	return json.Unmarshal(out, v)
}

// Tenant is a seeded organisation with keys.
type Tenant struct {
	OrgID      string
	SandboxKey string
	LiveKey    string
}

// Seed creates an organisation with a sandbox and a live secret key.
func (s *Stack) Seed(ctx context.Context, name string) (Tenant, error) {
	var t Tenant
	var org struct{ ID string }
	if err := s.CLIJSON(ctx, &org, "orgs", "create", "--name", name); err != nil {
		return t, err
	}
	t.OrgID = org.ID
	for _, env := range []string{"sandbox", "live"} {
		var k struct{ Key string }
		if err := s.CLIJSON(ctx, &k, "keys", "create", "--org", org.ID, "--env", env); err != nil {
			return t, err
		}
		if env == "sandbox" {
			t.SandboxKey = k.Key
		} else {
			t.LiveKey = k.Key
		}
	}
	return t, nil
}

func waitHealthy(ctx context.Context, p *Proc) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if p.cmd.ProcessState != nil {
			break
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", p.URL()+"/healthz", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not healthy on %s within 60s; log:\n%s", p.Name, p.Addr, tail(p.Log(), 4000))
}

func freshDatabase(ctx context.Context) (string, func(), error) {
	base := config.String("DATABASE_URL", config.DefaultDatabaseURL)
	c, err := pgx.Connect(ctx, base)
	if err != nil {
		return "", nil, fmt.Errorf("postgres unreachable (start it with `make services`): %w", err)
	}
	defer c.Close(ctx)
	name := fmt.Sprintf("e2e_%d_%d", os.Getpid(), time.Now().UnixNano()%1e9)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", nil, err
	}
	u, _ := url.Parse(base)
	u.Path = "/" + name
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, base); err == nil {
			_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			c.Close(ctx)
		}
	}
	return u.String(), drop, nil
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
