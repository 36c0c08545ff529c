package main

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"
)

// invariant is one property a scenario checks, with its numbers.
type invariant struct {
	Name   string `json:"name"`
	Pass   bool   `json:"pass"`
	Detail string `json:"detail"`
}

type phaseReport struct {
	Name     string         `json:"name"`
	FromS    float64        `json:"from_s"`
	ToS      float64        `json:"to_s"`
	Requests int            `json:"requests"`
	Statuses map[string]int `json:"statuses"`
	Latency  latency        `json:"latency"`
}

type latency struct {
	P50ms float64 `json:"p50_ms"`
	P99ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
}

// report is one scenario's outcome.
type report struct {
	Name    string  `json:"name"`
	Title   string  `json:"title"`
	Pass    bool    `json:"pass"`
	Seconds float64 `json:"seconds"`
	Rate    int     `json:"steady_rate_per_s"`
	// Requests sent with the scenario tenant's key through the gateway
	// (steady load, bursts, probes and setup), and how they ended.
	RequestsSent      int                       `json:"requests_sent"`
	Responses         int                       `json:"responses"`
	ConnectionErrors  int                       `json:"connection_errors"`
	SkippedTicks      int64                     `json:"skipped_ticks"`
	Statuses          map[string]int            `json:"status_histogram"`
	ByOp              map[string]map[string]int `json:"status_by_request_kind"`
	Phases            []phaseReport             `json:"phases"`
	Unexpected        int                       `json:"unexpected_responses"`
	UnexpectedSamples []string                  `json:"unexpected_samples,omitempty"`
	Latency           latency                   `json:"latency"`
	Invariants        []invariant               `json:"invariants"`
	Timeline          []string                  `json:"timeline"`
	Info              map[string]any            `json:"info,omitempty"`
	Error             string                    `json:"error,omitempty"`

	start time.Time
	log   io.Writer
}

func newReport(name, title string, rate int, log io.Writer) *report {
	return &report{Name: name, Title: title, Rate: rate, Info: map[string]any{}, start: time.Now(), log: log}
}

// at is the time t relative to the scenario's start, in seconds.
func (r *report) at(t time.Time) float64 { return t.Sub(r.start).Seconds() }

// note adds a timestamped line to the timeline and echoes it as progress.
func (r *report) note(format string, args ...any) {
	line := fmt.Sprintf("+%6.1fs  %s", time.Since(r.start).Seconds(), fmt.Sprintf(format, args...))
	r.Timeline = append(r.Timeline, line)
	fmt.Fprintf(r.log, "    [%s] %s\n", r.Name, line)
}

func (r *report) check(name string, ok bool, format string, args ...any) {
	r.Invariants = append(r.Invariants, invariant{Name: name, Pass: ok, Detail: fmt.Sprintf(format, args...)})
}

// tally fills the request figures from the results; expect says which
// responses the scenario allows.
func (r *report) tally(rs []result, expect func(result) bool) {
	r.RequestsSent = len(rs)
	r.Statuses = histogram(rs)
	r.ByOp = map[string]map[string]int{}
	var lat []time.Duration
	type ph struct {
		from, to time.Time
		rs       []result
	}
	phases := map[string]*ph{}
	var order []string
	for _, x := range rs {
		if x.Status == 0 {
			r.ConnectionErrors++
		} else {
			r.Responses++
			lat = append(lat, x.Latency)
		}
		if r.ByOp[string(x.Op)] == nil {
			r.ByOp[string(x.Op)] = map[string]int{}
		}
		r.ByOp[string(x.Op)][x.label()]++
		p := phases[x.Phase]
		if p == nil {
			p = &ph{from: x.Sent}
			phases[x.Phase] = p
			order = append(order, x.Phase)
		}
		if x.Sent.Before(p.from) {
			p.from = x.Sent
		}
		if x.Sent.After(p.to) {
			p.to = x.Sent
		}
		p.rs = append(p.rs, x)
		if expect != nil && !expect(x) {
			r.Unexpected++
			if len(r.UnexpectedSamples) < 12 {
				s := fmt.Sprintf("+%.1fs %s [%s] %s", r.at(x.Sent), x.Op, x.Phase, x.label())
				if x.Err != "" {
					s += ": " + x.Err
				}
				if x.BadReplay {
					s += " (replay not answered as the original)"
				}
				r.UnexpectedSamples = append(r.UnexpectedSamples, s)
			}
		}
	}
	sort.SliceStable(order, func(i, j int) bool { return phases[order[i]].from.Before(phases[order[j]].from) })
	for _, name := range order {
		p := phases[name]
		r.Phases = append(r.Phases, phaseReport{Name: name, FromS: round1(r.at(p.from)), ToS: round1(r.at(p.to)),
			Requests: len(p.rs), Statuses: histogram(p.rs)})
	}
	r.Latency = latencyOf(lat)
	for i := range r.Phases {
		var pl []time.Duration
		for _, x := range phases[r.Phases[i].Name].rs {
			if x.Status != 0 {
				pl = append(pl, x.Latency)
			}
		}
		r.Phases[i].Latency = latencyOf(pl)
	}
}

// latencyOf summarises the latencies of answered requests.
func latencyOf(lat []time.Duration) latency {
	if len(lat) == 0 {
		return latency{}
	}
	slices.Sort(lat)
	q := func(f float64) float64 { return float64(lat[int(f*float64(len(lat)-1))].Microseconds()) / 1000 }
	return latency{P50ms: q(0.50), P99ms: q(0.99), MaxMs: float64(lat[len(lat)-1].Microseconds()) / 1000}
}

func (r *report) finish() {
	r.Seconds = round1(time.Since(r.start).Seconds())
	r.Pass = r.Error == "" && len(r.Invariants) > 0
	for _, inv := range r.Invariants {
		r.Pass = r.Pass && inv.Pass
	}
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

// print writes the human-readable block of a finished scenario.
func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "\n=== %s — %s\n", r.Name, r.Title)
	if r.RequestsSent > 0 {
		fmt.Fprintf(w, "requests sent %d (responses %d, connection errors %d, skipped ticks %d) at %d/s steady; latency p50 %.1f ms, p99 %.1f ms, max %.0f ms\n",
			r.RequestsSent, r.Responses, r.ConnectionErrors, r.SkippedTicks, r.Rate, r.Latency.P50ms, r.Latency.P99ms, r.Latency.MaxMs)
		fmt.Fprintf(w, "statuses: %s\n", formatHist(r.Statuses))
		for _, p := range r.Phases {
			fmt.Fprintf(w, "  phase %-12s +%5.1fs..+%5.1fs %6d req  p50 %6.1f ms  p99 %7.1f ms  %s\n", p.Name, p.FromS, p.ToS, p.Requests,
				p.Latency.P50ms, p.Latency.P99ms, formatHist(p.Statuses))
		}
		fmt.Fprintf(w, "unexpected responses: %d\n", r.Unexpected)
		for _, s := range r.UnexpectedSamples {
			fmt.Fprintf(w, "  %s\n", s)
		}
	}
	if len(r.Info) > 0 {
		keys := make([]string, 0, len(r.Info))
		for k := range r.Info {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "info: %s = %v\n", k, r.Info[k])
		}
	}
	if r.Error != "" {
		fmt.Fprintf(w, "error: %s\n", r.Error)
	}
	fmt.Fprintln(w, "invariants:")
	for _, inv := range r.Invariants {
		fmt.Fprintf(w, "  %s  %s: %s\n", verdict(inv.Pass), inv.Name, inv.Detail)
	}
	fmt.Fprintf(w, "RESULT %s: %s (%.0f s)\n", r.Name, verdict(r.Pass), r.Seconds)
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

// sample returns up to n items of s, for failure details.
func sample(s []string, n int) string {
	if len(s) > n {
		return strings.Join(s[:n], ", ") + ", …"
	}
	return strings.Join(s, ", ")
}
