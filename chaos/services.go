package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// services stops and starts the chaos run's own Postgres, Redis and Kafka
// through scripts/services.sh, whose environment (DATA_DIR, PGPORT,
// REDIS_PORT, KAFKA_PORT, KAFKA_CONTROLLER_PORT) scripts/chaos.sh set to
// an isolated data directory and ports. Other people's services on the
// default ports are never touched: before every stop, ss must show that
// the process listening on the port is the one in our own pid file.
type services struct {
	script  string
	dataDir string
	ports   map[string]int
}

// defaultPorts belong to the shared services of `make services`.
var defaultPorts = []int{5432, 6379, 9092, 9093}

func newServices(script string) (*services, error) {
	s := &services{script: script, dataDir: os.Getenv("DATA_DIR"), ports: map[string]int{}}
	if s.dataDir == "" {
		return nil, fmt.Errorf("DATA_DIR is not set: run through scripts/chaos.sh, which isolates the chaos services")
	}
	abs, _ := filepath.Abs(s.dataDir)
	if shared, _ := filepath.Abs(filepath.Join(filepath.Dir(filepath.Dir(script)), ".data")); abs == shared {
		return nil, fmt.Errorf("DATA_DIR %s is the shared services' directory; chaos needs its own", abs)
	}
	s.dataDir = abs
	for name, env := range map[string]string{"postgres": "PGPORT", "redis": "REDIS_PORT", "kafka": "KAFKA_PORT", "kafka-controller": "KAFKA_CONTROLLER_PORT"} {
		p, err := strconv.Atoi(os.Getenv(env))
		if err != nil {
			return nil, fmt.Errorf("%s is not set: run through scripts/chaos.sh", env)
		}
		if slices.Contains(defaultPorts, p) {
			return nil, fmt.Errorf("%s=%d is a shared service's default port; chaos stops its services and must use its own", env, p)
		}
		s.ports[name] = p
	}
	return s, nil
}

// pidFile is where services.sh records the pid of a service it started.
func (s *services) pidFile(name string) string {
	switch name {
	case "postgres":
		return filepath.Join(s.dataDir, "postgres", "postmaster.pid")
	case "redis":
		return filepath.Join(s.dataDir, "redis", "redis.pid")
	default:
		return filepath.Join(s.dataDir, "kafka", "kafka.pid")
	}
}

func (s *services) ownPid(name string) (int, error) {
	b, err := os.ReadFile(s.pidFile(name))
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strconv.Atoi(strings.TrimSpace(line))
}

var ssPid = regexp.MustCompile(`pid=(\d+)`)

// listeners returns the pids listening on 127.0.0.1:port, from ss -ltnp.
func listeners(port int) ([]int, error) {
	out, err := exec.Command("ss", "-Hltnp", fmt.Sprintf("sport = :%d", port)).Output()
	if err != nil {
		return nil, fmt.Errorf("ss: %w", err)
	}
	var pids []int
	for _, m := range ssPid.FindAllStringSubmatch(string(out), -1) {
		p, _ := strconv.Atoi(m[1])
		if !slices.Contains(pids, p) {
			pids = append(pids, p)
		}
	}
	return pids, nil
}

// verifyOwn checks, with ss, that name's port is served by our own pid
// and nothing else; it returns a line for the timeline.
func (s *services) verifyOwn(name string) (string, error) {
	port := s.ports[name]
	own, err := s.ownPid(name)
	if err != nil {
		return "", fmt.Errorf("refusing to stop %s: no pid file of ours (%v)", name, err)
	}
	pids, err := listeners(port)
	if err != nil {
		return "", err
	}
	if len(pids) != 1 || pids[0] != own {
		return "", fmt.Errorf("refusing to stop %s: ss shows pids %v on port %d, our pid file says %d", name, pids, port, own)
	}
	return fmt.Sprintf("ss -ltnp: port %d is pid %d, ours (%s)", port, own, s.pidFile(name)), nil
}

func (s *services) run(ctx context.Context, timeout time.Duration, cmd string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := exec.CommandContext(ctx, s.script, cmd)
	c.Env = os.Environ() // DATA_DIR and the ports: ours
	out, err := c.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", s.script, cmd, err, tailString(string(out), 2000))
	}
	return nil
}

// stop stops one of our services after checking it is ours.
func (s *services) stop(ctx context.Context, name string, note func(string)) error {
	line, err := s.verifyOwn(name)
	if err != nil {
		return err
	}
	note(line)
	if err := s.run(ctx, 90*time.Second, name+"-stop"); err != nil {
		return err
	}
	if portOpen(s.ports[name]) {
		return fmt.Errorf("%s still accepts connections on port %d after stopping", name, s.ports[name])
	}
	return nil
}

// start starts one of our services and waits until it is ready.
func (s *services) start(ctx context.Context, name string) error {
	return s.run(ctx, 240*time.Second, name+"-start")
}

// sharedUntouched reports which of the shared default ports still have a
// listener, to show the run left teammates' services alone.
func sharedUntouched() map[string]bool {
	out := map[string]bool{}
	for _, p := range defaultPorts[:3] {
		out[strconv.Itoa(p)] = portOpen(p)
	}
	return out
}

func portOpen(port int) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func tailString(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
