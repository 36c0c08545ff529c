package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// gateway is one gateway process of a variant.
type gateway struct {
	name  string
	addr  string // host:port
	admin string // Caddy admin host:port
	cmd   *exec.Cmd
	log   string
	done  chan struct{}
}

// startGateway runs bin/gateway with caddyfile and env and waits for its
// /healthz. The process gets its own process group so that it can be
// signalled without touching anything else.
func startGateway(ctx context.Context, bin, dir, name, addr, caddyfile string, env []string) (*gateway, error) {
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(bin, "gateway"), "run", "--config", caddyfile, "--adapter", "caddyfile")
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting gateway %s: %w", name, err)
	}
	g := &gateway{name: name, addr: addr, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(g.done) }()
	if err := waitHTTP(ctx, "http://"+addr+"/healthz", g.done, 60*time.Second); err != nil {
		g.stop()
		return nil, fmt.Errorf("gateway %s: %w; log:\n%s", name, err, tailFile(logPath, 3000))
	}
	return g, nil
}

func (g *gateway) pid() int { return g.cmd.Process.Pid }

// stop sends SIGTERM to the gateway's process group and waits up to 10 s,
// then SIGKILL.
func (g *gateway) stop() {
	if g == nil || g.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-g.pid(), syscall.SIGTERM)
	select {
	case <-g.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-g.pid(), syscall.SIGKILL)
		<-g.done
	}
}

func waitHTTP(ctx context.Context, url string, exited <-chan struct{}, within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("process exited")
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
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
	return fmt.Errorf("%s not answering 200 within %s", url, within)
}

func tailFile(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		return "…" + string(b[len(b)-n:])
	}
	return string(b)
}

// freeAddrs returns n loopback addresses with free ports.
func freeAddrs(n int) ([]string, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}

// procStat is a process's resource use at one moment.
type procStat struct {
	at        time.Time
	cpuTicks  int64 // utime + stime
	rssKiB    int64 // VmRSS
	hwmKiB    int64 // VmHWM: peak RSS
	threads   int64
	readError error
}

// clockTicks is the kernel's USER_HZ (getconf CLK_TCK), nearly always 100.
var clockTicks = func() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err == nil && v > 0 {
			return v
		}
	}
	return 100
}()

// readProc reads /proc/<pid>/stat (utime, stime) and /proc/<pid>/status.
func readProc(pid int) procStat {
	s := procStat{at: time.Now()}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		s.readError = err
		return s
	}
	// The command name (field 2) may contain spaces; fields after it are
	// counted from the closing parenthesis. utime and stime are fields 14
	// and 15 of the whole line.
	rest := string(b[strings.LastIndexByte(string(b), ')')+2:])
	f := strings.Fields(rest)
	if len(f) > 12 {
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		s.cpuTicks = u + st
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		s.readError = err
		return s
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			s.rssKiB = n
		case "VmHWM":
			s.hwmKiB = n
		case "Threads":
			s.threads = n
		}
	}
	return s
}

// cpuSeconds is the CPU time (user + system) used between two readings.
func cpuSeconds(a, b procStat) float64 {
	return float64(b.cpuTicks-a.cpuTicks) / clockTicks
}

func mib(kib int64) float64 { return round2(float64(kib) / 1024) }

// services are the other processes whose CPU a request costs on this one
// machine: Redis, Kafka, Postgres (postmaster and backends) and the sample
// API. Redis, Kafka and Postgres are shared with whatever else runs here,
// so their figures are approximate.
type services map[string]int // name → pid

func findServices(ctx context.Context, e *env) services {
	s := services{}
	if info, err := e.rdb.Info(ctx, "server").Result(); err == nil {
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
				if pid, err := strconv.Atoi(v); err == nil {
					s["redis"] = pid
				}
			}
		}
	}
	// Kafka and Postgres by the port they listen on: scripts/services.sh
	// reuses servers that another checkout started, whose pid files are in
	// that checkout's .data, not this one's.
	if len(e.brokers) > 0 {
		if pid := listenerPID(portOf(e.brokers[0])); pid > 0 {
			s["kafka"] = pid
		}
	}
	if u, err := url.Parse(envValue(e.stack.Env, "DATABASE_URL")); err == nil {
		port := u.Port()
		if port == "" {
			port = "5432"
		}
		if pid := listenerPID(port); pid > 0 {
			s["postgres"] = pid
		}
	}
	// The sample API is a child of this process (the e2e harness started it).
	entries, _ := os.ReadDir("/proc")
	for _, d := range entries {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) == "sampleapi" && parentPID(pid) == os.Getpid() {
			s["sampleapi"] = pid
		}
	}
	return s
}

// portOf is the port of a host:port address, or "".
func portOf(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	return port
}

// listenerPID is the process with a TCP socket listening on port (IPv4 or
// IPv6), found through /proc/net/tcp* and the processes' open files; 0 if
// none is visible. Where a process and its children share the socket
// (Postgres' backends inherit it), the lowest pid, the parent, wins.
func listenerPID(port string) int {
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return 0
	}
	want := fmt.Sprintf(":%04X", p)
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fs := strings.Fields(line)
			if len(fs) > 9 && strings.HasSuffix(fs[1], want) && fs[3] == "0A" {
				inodes["socket:["+fs[9]+"]"] = true
			}
		}
	}
	if len(inodes) == 0 {
		return 0
	}
	entries, _ := os.ReadDir("/proc")
	best := 0
	for _, d := range entries {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || (best > 0 && pid > best) {
			continue
		}
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			if target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && inodes[target] {
				best = pid
				break
			}
		}
	}
	return best
}

// statFields returns the fields of /proc/<pid>/stat after the command name
// (index 0 is field 3, the state).
func statFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 > len(b) {
		return nil
	}
	return strings.Fields(string(b[i+2:]))
}

func parentPID(pid int) int {
	f := statFields(pid)
	if len(f) < 2 {
		return 0
	}
	p, _ := strconv.Atoi(f[1])
	return p
}

// treeTicks is the CPU time of pid, of its reaped children and of its live
// children (Postgres backends are children of the postmaster).
func treeTicks(pid int) int64 {
	sum := func(f []string, withChildren bool) int64 {
		var t int64
		n := 13 // utime, stime
		if withChildren {
			n = 15 // cutime, cstime
		}
		for i := 11; i < n && i < len(f); i++ {
			v, _ := strconv.ParseInt(f[i], 10, 64)
			t += v
		}
		return t
	}
	total := sum(statFields(pid), true)
	entries, _ := os.ReadDir("/proc")
	for _, d := range entries {
		c, err := strconv.Atoi(d.Name())
		if err != nil || c == pid {
			continue
		}
		if f := statFields(c); len(f) > 1 && f[1] == strconv.Itoa(pid) {
			total += sum(f, true)
		}
	}
	return total
}

// ticks reads every service's CPU time.
func (s services) ticks() map[string]int64 {
	out := make(map[string]int64, len(s))
	for name, pid := range s {
		if name == "postgres" {
			out[name] = treeTicks(pid)
		} else {
			out[name] = readProc(pid).cpuTicks
		}
	}
	return out
}
