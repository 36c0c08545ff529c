package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Request is what the load generators send.
type Request struct {
	Name        string   // "GET", "POST", "POST+Idempotency-Key"
	Method      string   // GET or POST
	Path        string   // path and query
	Body        string   // POST body
	ContentType string   // POST body type
	Headers     []string // "Name: value", sent on every request
	// IdempotencyKeys gives every request its own Idempotency-Key (a retry
	// storm is not what is measured: each is a first execution).
	IdempotencyKeys bool
	// DistinctIPs gives every request its own X-Forwarded-For address,
	// numbered from IPOffset.
	DistinctIPs bool
	IPOffset    int64
}

// Load is one load-generator run's figures. Latencies are in microseconds.
type Load struct {
	Generator string  `json:"generator"` // wrk (closed loop, max) or vegeta (open loop, fixed rate)
	Mode      string  `json:"mode"`      // "max" or "rate"
	Rate      int     `json:"target_rate,omitempty"`
	Seconds   float64 `json:"seconds"`
	Requests  int64   `json:"requests"`
	RPS       float64 `json:"rps"`
	Errors    int64   `json:"errors"` // connect, read, write and timeout errors
	Non2xx    int64   `json:"non_2xx"`
	P50us     float64 `json:"p50_us"`
	P99us     float64 `json:"p99_us"`
	P999us    float64 `json:"p999_us"`
	// GeneratorCPU is the load generator's own CPU time, seconds.
	GeneratorCPU float64 `json:"generator_cpu_seconds"`
	// Status counts responses by code (vegeta only; wrk counts non-2xx only).
	Status map[int]int64 `json:"status,omitempty"`
	// AchievedRPS is responses per second from the first request sent to
	// the last response received (vegeta's "throughput", counting every
	// response): below the target rate, the system completed less than it
	// was offered and requests queued (vegeta only).
	AchievedRPS float64 `json:"achieved_rps,omitempty"`
	// Saturated: the rate was not held (sent or achieved below 97 % of the
	// target), so latencies include queueing in front of a saturated system
	// (vegeta only). vegeta keeps sending on time while it has idle workers
	// (up to 512 in flight), so the sent count alone flags a run only once
	// 512 requests queue; a queue of a few hundred shows in AchievedRPS.
	Saturated bool `json:"saturated,omitempty"`
	// ErrorSamples are the first distinct non-2xx answers (vegeta only).
	ErrorSamples []string `json:"error_samples,omitempty"`
	// First and Last are when the first and last request were sent, End
	// when the last response arrived (vegeta).
	First time.Time `json:"-"`
	Last  time.Time `json:"-"`
	End   time.Time `json:"-"`
	// latencies are every request's latency, µs, sorted (vegeta), for
	// percentiles pooled over rounds.
	latencies []float64
}

// wrkScript drives wrk. It sets method and body, gives POSTs unique
// Idempotency-Keys or requests distinct X-Forwarded-For addresses when asked,
// and prints a machine-readable summary. request() runs for every variant
// alike, so the generator's own cost is the same whatever is measured.
const wrkScript = `
wrk.method = %q
wrk.body = %q
%s
local idem = %t
local xff = %t
local prefix = %q
local nthreads = %d
local offset = %d
local counter = 0
local thread_id = 0
function setup(thread)
  thread:set("tid", thread_id)
  thread_id = thread_id + 1
end
function request()
  counter = counter + 1
  if idem then
    wrk.headers["Idempotency-Key"] = prefix .. "-" .. tid .. "-" .. counter
  end
  if xff then
    -- Consecutive distinct addresses in 10.0.0.0/8 per thread; threads
    -- interleave, so no address repeats below 2^24 requests.
    local n = (offset + (counter - 1) * nthreads + tid) %% 16777216
    wrk.headers["X-Forwarded-For"] = string.format("10.%%d.%%d.%%d", math.floor(n / 65536) %% 256, math.floor(n / 256) %% 256, n %% 256)
  end
  return wrk.format(nil, nil, nil, nil)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRKJSON {\"requests\":%%d,\"duration_us\":%%d,\"errors\":%%d,\"non2xx\":%%d,\"p50\":%%f,\"p99\":%%f,\"p999\":%%f}\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
`

// wrkMax drives base+req.Path as fast as wrk can with conns connections.
func wrkMax(ctx context.Context, dir, base string, req Request, threads, conns int, d time.Duration) (Load, error) {
	ct := ""
	if req.ContentType != "" {
		ct = fmt.Sprintf("wrk.headers[%q] = %q", "Content-Type", req.ContentType)
	}
	prefix := fmt.Sprintf("bench%d", time.Now().UnixNano())
	script := fmt.Sprintf(wrkScript, req.Method, req.Body, ct, req.IdempotencyKeys, req.DistinctIPs, prefix, threads, req.IPOffset)
	f, err := os.CreateTemp(dir, "wrk-*.lua")
	if err != nil {
		return Load{}, err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(script); err != nil {
		return Load{}, err
	}
	f.Close()
	args := []string{fmt.Sprintf("-t%d", threads), fmt.Sprintf("-c%d", conns), fmt.Sprintf("-d%ds", int(d.Seconds())), "--timeout", "5s", "-s", f.Name()}
	for _, h := range req.Headers {
		args = append(args, "-H", h)
	}
	args = append(args, base+req.Path)
	cmd := exec.CommandContext(ctx, "wrk", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return Load{}, fmt.Errorf("wrk: %w\n%s", err, out)
	}
	genCPU := (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "WRKJSON ")
		if !ok {
			continue
		}
		var r struct {
			Requests   int64   `json:"requests"`
			DurationUS int64   `json:"duration_us"`
			Errors     int64   `json:"errors"`
			Non2xx     int64   `json:"non2xx"`
			P50        float64 `json:"p50"`
			P99        float64 `json:"p99"`
			P999       float64 `json:"p999"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return Load{}, fmt.Errorf("wrk summary %q: %w", line, err)
		}
		secs := float64(r.DurationUS) / 1e6
		return Load{Generator: "wrk", Mode: "max", Seconds: round2(secs), Requests: r.Requests, RPS: round1(float64(r.Requests) / secs),
			Errors: r.Errors, Non2xx: r.Non2xx, P50us: r.P50, P99us: r.P99, P999us: r.P999, GeneratorCPU: round3(genCPU)}, nil
	}
	return Load{}, fmt.Errorf("wrk printed no summary:\n%s", out)
}

// vegetaTarget is vegeta's JSON target format.
type vegetaTarget struct {
	Method string              `json:"method"`
	URL    string              `json:"url"`
	Body   string              `json:"body,omitempty"` // base64
	Header map[string][]string `json:"header,omitempty"`
}

// vegetaRate drives base+req.Path at a fixed rate (open model: a slow
// response does not delay the next request, so queueing shows in the
// latencies, unlike wrk's closed loop).
func vegetaRate(ctx context.Context, vegeta, dir, base string, req Request, rate int, d time.Duration) (Load, error) {
	header := map[string][]string{}
	for _, h := range req.Headers {
		k, v, _ := strings.Cut(h, ":")
		header[strings.TrimSpace(k)] = append(header[strings.TrimSpace(k)], strings.TrimSpace(v))
	}
	if req.ContentType != "" {
		header["Content-Type"] = []string{req.ContentType}
	}
	t := vegetaTarget{Method: req.Method, URL: base + req.Path, Header: header}
	if req.Body != "" {
		t.Body = base64.StdEncoding.EncodeToString([]byte(req.Body))
	}
	var targets bytes.Buffer
	enc := json.NewEncoder(&targets)
	n := 1
	if req.IdempotencyKeys {
		// vegeta cycles through its targets: one per request, with margin.
		n = int(float64(rate)*d.Seconds()*1.1) + 100
	}
	prefix := fmt.Sprintf("bench%d", time.Now().UnixNano())
	for i := range n {
		if req.IdempotencyKeys {
			h := make(map[string][]string, len(header)+1)
			for k, v := range header {
				h[k] = v
			}
			h["Idempotency-Key"] = []string{fmt.Sprintf("%s-%d", prefix, i)}
			t.Header = h
		}
		if err := enc.Encode(t); err != nil {
			return Load{}, err
		}
	}
	resultsPath := filepath.Join(dir, "vegeta.bin")
	defer os.Remove(resultsPath)
	attack := exec.CommandContext(ctx, vegeta, "attack", "-format=json", fmt.Sprintf("-rate=%d/s", rate),
		"-duration="+d.String(), "-timeout=5s", "-max-workers=512", "-output="+resultsPath)
	attack.Stdin = &targets
	if out, err := attack.CombinedOutput(); err != nil {
		return Load{}, fmt.Errorf("vegeta attack: %w: %s", err, out)
	}
	genCPU := (attack.ProcessState.UserTime() + attack.ProcessState.SystemTime()).Seconds()
	encode := exec.CommandContext(ctx, vegeta, "encode", "--to", "json", resultsPath)
	stdout, err := encode.StdoutPipe()
	if err != nil {
		return Load{}, err
	}
	var stderr bytes.Buffer
	encode.Stderr = &stderr
	if err := encode.Start(); err != nil {
		return Load{}, err
	}
	l, perr := parseVegeta(stdout)
	if err := encode.Wait(); err != nil {
		return Load{}, fmt.Errorf("vegeta encode: %w: %s", err, stderr.String())
	}
	if perr != nil {
		return Load{}, perr
	}
	l.Rate = rate
	l.GeneratorCPU = round3(genCPU)
	l.Seconds = round2(d.Seconds())
	l.RPS = round1(float64(l.Requests) / d.Seconds())
	l.AchievedRPS, l.Saturated = saturation(l, rate, d)
	return l, nil
}

// saturation tells whether a fixed-rate run held rate for d: enough
// requests sent, and as many answered per second as were offered.
func saturation(l Load, rate int, d time.Duration) (achieved float64, saturated bool) {
	if span := l.End.Sub(l.First).Seconds(); span > 0 {
		achieved = float64(l.Requests) / span
	}
	want := float64(rate)
	return round1(achieved), float64(l.Requests) < 0.97*want*d.Seconds() || achieved < 0.97*want
}

func parseVegeta(r io.Reader) (Load, error) {
	l := Load{Generator: "vegeta", Mode: "rate", Status: map[int]int64{}}
	var lat []float64
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var v struct {
			Code      int       `json:"code"`
			Timestamp time.Time `json:"timestamp"`
			Latency   int64     `json:"latency"`
			Error     string    `json:"error"`
			Body      []byte    `json:"body"`
		}
		if json.Unmarshal(sc.Bytes(), &v) != nil {
			continue
		}
		lat = append(lat, float64(v.Latency)/1e3)
		l.Status[v.Code]++
		switch {
		case v.Code == 0:
			l.Errors++
		case v.Code < 200 || v.Code > 299:
			l.Non2xx++
		}
		if (v.Code < 200 || v.Code > 299) && len(l.ErrorSamples) < 3 {
			sample := fmt.Sprintf("%d %s %s", v.Code, v.Error, truncate(string(v.Body), 300))
			if !slices.ContainsFunc(l.ErrorSamples, func(s string) bool { return s[:3] == sample[:3] }) {
				l.ErrorSamples = append(l.ErrorSamples, sample)
			}
		}
		if l.First.IsZero() || v.Timestamp.Before(l.First) {
			l.First = v.Timestamp
		}
		if v.Timestamp.After(l.Last) {
			l.Last = v.Timestamp
		}
		if end := v.Timestamp.Add(time.Duration(v.Latency)); end.After(l.End) {
			l.End = end
		}
	}
	if err := sc.Err(); err != nil {
		return l, err
	}
	if len(lat) == 0 {
		return l, fmt.Errorf("vegeta produced no results")
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return percentile(lat, p) }
	l.Requests = int64(len(lat))
	l.P50us, l.P99us, l.P999us = round1(pct(50)), round1(pct(99)), round1(pct(99.9))
	l.latencies = lat
	return l, nil
}

// probe sends one request like the load generators will and fails unless
// it gets a 2xx, so that a misconfigured stage stops the run instead of
// measuring error pages.
func probe(ctx context.Context, base string, req Request) error {
	var body io.Reader
	if req.Body != "" {
		body = strings.NewReader(req.Body)
	}
	r, err := http.NewRequestWithContext(ctx, req.Method, base+req.Path, body)
	if err != nil {
		return err
	}
	for _, h := range req.Headers {
		k, v, _ := strings.Cut(h, ":")
		r.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	if req.ContentType != "" {
		r.Header.Set("Content-Type", req.ContentType)
	}
	if req.IdempotencyKeys {
		r.Header.Set("Idempotency-Key", fmt.Sprintf("probe-%d", time.Now().UnixNano()))
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 2000))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: status %d: %s", req.Method, base+req.Path, resp.StatusCode, b)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }
func round2(f float64) float64 { return math.Round(f*100) / 100 }
func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

// percentile of sorted values, p in percent.
func percentile(sorted []float64, p float64) float64 {
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p/100))]
}
