package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// ingestResult is issue 6's ingestion throughput, from the control plane's
// own Go benchmark (Kafka → Postgres, one worker).
type ingestResult struct {
	Command       string  `json:"command"`
	Entries       int     `json:"entries"`
	EntriesPerSec float64 `json:"entries_per_sec"`
	Target        float64 `json:"target_min_entries_per_sec"`
	Met           bool    `json:"met"`
	Seconds       float64 `json:"wall_seconds"`
	Log           string  `json:"log,omitempty"`
	Settled       settled `json:"machine_before"`
}

var entriesPerSec = regexp.MustCompile(`([0-9.]+) entries/s`)

func runIngest(ctx context.Context, root string, n int) (*ingestResult, error) {
	args := []string{"test", "-run", "^$", "-bench", "BenchmarkIngest", "-benchtime", "1x", "-count", "1", "./controlplane/ingest/"}
	res := &ingestResult{Command: "INGEST_BENCH_N=" + strconv.Itoa(n) + " go " + strings.Join(args, " "), Entries: n, Target: 20000}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "INGEST_BENCH_N="+strconv.Itoa(n))
	start := time.Now()
	out, err := cmd.CombinedOutput()
	res.Seconds = round1(time.Since(start).Seconds())
	if err != nil {
		return nil, fmt.Errorf("%s: %w\n%s", res.Command, err, tailString(string(out), 3000))
	}
	// The benchmark line: "BenchmarkIngest-2  1  … ns/op  45678 entries/s".
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "BenchmarkIngest") {
			if m := entriesPerSec.FindStringSubmatch(line); m != nil {
				res.EntriesPerSec, _ = strconv.ParseFloat(m[1], 64)
			}
		}
		if strings.Contains(line, "entries in") {
			res.Log = strings.TrimSpace(line)
		}
	}
	if res.EntriesPerSec == 0 {
		return nil, fmt.Errorf("no entries/s in the benchmark output:\n%s", tailString(string(out), 3000))
	}
	res.EntriesPerSec = round1(res.EntriesPerSec)
	res.Met = res.EntriesPerSec >= res.Target
	return res, nil
}

// delivererResult wraps the deliverer's bench mode (issue 7): a test in
// deliverer/ guarded by GATEHOUSE_BENCH=1 that prints one JSON line.
type delivererResult struct {
	Command string         `json:"command"`
	Status  string         `json:"status"` // ok, missing, failed
	Figures map[string]any `json:"figures,omitempty"`
	Seconds float64        `json:"wall_seconds,omitempty"`
	Note    string         `json:"note,omitempty"`
	Settled settled        `json:"machine_before"`
}

// runDeliverer is the hook for the deliverer's bench mode: it runs when a
// test in deliverer/ reads GATEHOUSE_BENCH, and reports "missing" otherwise.
func runDeliverer(ctx context.Context, root string, events int) *delivererResult {
	args := []string{"test", "-run", "^TestBenchmark$", "-count", "1", "-v", "-timeout", "15m", "./deliverer/"}
	res := &delivererResult{Command: "GATEHOUSE_BENCH=1 go " + strings.Join(args, " ")}
	if events > 0 {
		res.Command = "GATEHOUSE_BENCH_EVENTS=" + strconv.Itoa(events) + " " + res.Command
	}
	if !hasBenchMode(filepath.Join(root, "deliverer")) {
		res.Status = "missing"
		res.Note = "no test in deliverer/ reads GATEHOUSE_BENCH yet; this hook runs it once it exists"
		return res
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GATEHOUSE_BENCH=1")
	if events > 0 {
		cmd.Env = append(cmd.Env, "GATEHOUSE_BENCH_EVENTS="+strconv.Itoa(events))
	}
	start := time.Now()
	out, err := cmd.CombinedOutput()
	res.Seconds = round1(time.Since(start).Seconds())
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "{") && strings.Contains(line, `"deliverer_bench"`) {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil {
				res.Figures = m
				break
			}
		}
	}
	switch {
	case err != nil:
		res.Status = "failed"
		res.Note = err.Error() + ": " + tailString(string(out), 2000)
	case res.Figures == nil:
		res.Status = "failed"
		res.Note = "the bench test printed no JSON line: " + tailString(string(out), 2000)
	default:
		res.Status = "ok"
	}
	return res
}

func hasBenchMode(dir string) bool {
	files, _ := filepath.Glob(filepath.Join(dir, "*_test.go"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && bytes.Contains(b, []byte("GATEHOUSE_BENCH")) {
			return true
		}
	}
	return false
}

func tailString(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
