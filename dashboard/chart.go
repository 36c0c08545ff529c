package dashboard

import (
	"fmt"
	"html"
	"html/template"
	"math"
	"strings"
)

// Server-rendered SVG charts: no script, no external library, readable by
// screen readers through role="img", a label, and a <title> per mark; the
// pages also print the numbers in a table.

// series is one stacked or plotted series.
type series struct {
	Name   string
	Color  string
	Values []int64 // one per label
}

// palette has enough contrast on white for thin marks (WCAG 3:1 for
// graphics).
var palette = []string{"#1f5fbf", "#b5482a", "#2a7d4f", "#7a4bc2", "#a0650a", "#0f7c86", "#b0307a", "#4d5b6b"}

// Status class colours.
var classColors = map[string]string{"2xx": "#2a7d4f", "3xx": "#1f5fbf", "4xx": "#a0650a", "5xx": "#b5332a"}

const (
	chartW      = 760
	chartH      = 220
	chartLeft   = 56
	chartBottom = 28
	chartTop    = 10
	chartRight  = 10
)

// niceMax rounds a maximum up to 1, 2 or 5 times a power of ten.
func niceMax(v int64) int64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(float64(v))))
	for _, m := range []float64{1, 2, 5, 10} {
		if float64(v) <= m*p {
			return int64(m * p)
		}
	}
	return v
}

// ticks is how many grid steps divide max into whole numbers.
func ticks(max int64) int64 {
	for _, n := range []int64{4, 5, 2} {
		if max%n == 0 {
			return n
		}
	}
	return 1
}

func axes(b *strings.Builder, max int64, labels []string, every int) {
	plotH := float64(chartH - chartTop - chartBottom)
	n := ticks(max)
	for i := int64(0); i <= n; i++ {
		y := float64(chartTop) + plotH - plotH*float64(i)/float64(n)
		v := max * i / n
		fmt.Fprintf(b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" class="grid"/>`, chartLeft, chartW-chartRight, y, y)
		fmt.Fprintf(b, `<text x="%d" y="%.1f" class="tick" text-anchor="end">%s</text>`, chartLeft-6, y+4, short(v))
	}
	plotW := float64(chartW - chartLeft - chartRight)
	step := plotW / float64(max1(len(labels)))
	for i, l := range labels {
		if every > 1 && i%every != 0 {
			continue
		}
		x := float64(chartLeft) + step*float64(i) + step/2
		fmt.Fprintf(b, `<text x="%.1f" y="%d" class="tick" text-anchor="middle">%s</text>`, x, chartH-8, html.EscapeString(l))
	}
}

func max1(n int) int {
	if n < 1 {
		return 1
	}
	return n
}

// short prints 1200 as 1.2k.
func short(v int64) string {
	switch {
	case v >= 1_000_000:
		return trimZero(fmt.Sprintf("%.1f", float64(v)/1e6)) + "M"
	case v >= 1000:
		return trimZero(fmt.Sprintf("%.1f", float64(v)/1e3)) + "k"
	}
	return fmt.Sprint(v)
}

func trimZero(s string) string { return strings.TrimSuffix(s, ".0") }

// stackedBars draws one bar per label with the series stacked.
func stackedBars(label string, labels, tooltips []string, ss []series, every int) template.HTML {
	var max int64
	for i := range labels {
		var sum int64
		for _, s := range ss {
			sum += s.Values[i]
		}
		if sum > max {
			max = sum
		}
	}
	max = niceMax(max)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" role="img" aria-label="%s" preserveAspectRatio="xMidYMid meet">`,
		chartW, chartH, html.EscapeString(label))
	axes(&b, max, labels, every)
	plotW := float64(chartW - chartLeft - chartRight)
	plotH := float64(chartH - chartTop - chartBottom)
	step := plotW / float64(max1(len(labels)))
	barW := math.Max(1, step*0.7)
	for i := range labels {
		x := float64(chartLeft) + step*float64(i) + (step-barW)/2
		y := float64(chartTop) + plotH
		for _, s := range ss {
			v := s.Values[i]
			if v == 0 {
				continue
			}
			h := plotH * float64(v) / float64(max)
			y -= h
			tip := labels[i]
			if tooltips != nil {
				tip = tooltips[i]
			}
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s — %s: %s</title></rect>`,
				x, y, barW, math.Max(h, 0.5), s.Color, html.EscapeString(tip), html.EscapeString(s.Name), comma(v))
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// lines draws one polyline per series.
func lines(label string, labels []string, ss []series, every int) template.HTML {
	var max int64
	for _, s := range ss {
		for _, v := range s.Values {
			if v > max {
				max = v
			}
		}
	}
	max = niceMax(max)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" role="img" aria-label="%s" preserveAspectRatio="xMidYMid meet">`,
		chartW, chartH, html.EscapeString(label))
	axes(&b, max, labels, every)
	plotW := float64(chartW - chartLeft - chartRight)
	plotH := float64(chartH - chartTop - chartBottom)
	step := plotW / float64(max1(len(labels)))
	for _, s := range ss {
		var pts []string
		for i, v := range s.Values {
			x := float64(chartLeft) + step*float64(i) + step/2
			y := float64(chartTop) + plotH - plotH*float64(v)/float64(max)
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
		}
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"><title>%s</title></polyline>`,
			strings.Join(pts, " "), s.Color, html.EscapeString(s.Name))
		for i, v := range s.Values {
			if v == 0 {
				continue
			}
			x := float64(chartLeft) + step*float64(i) + step/2
			y := float64(chartTop) + plotH - plotH*float64(v)/float64(max)
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s — %s: %s</title></circle>`,
				x, y, s.Color, html.EscapeString(labels[i]), html.EscapeString(s.Name), comma(v))
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// meter is a horizontal bar of used out of limit.
func meter(label string, used, limit int64) template.HTML {
	frac := 0.0
	if limit > 0 {
		frac = math.Min(1, float64(used)/float64(limit))
	}
	color := "#2a7d4f"
	switch {
	case frac >= 0.9:
		color = "#b5332a"
	case frac >= 0.7:
		color = "#a0650a"
	}
	w := 600.0
	return template.HTML(fmt.Sprintf(`<svg class="meter" viewBox="0 0 600 16" role="img" aria-label="%s">`+
		`<rect x="0" y="0" width="600" height="16" rx="4" fill="#e6e9ef"/>`+
		`<rect x="0" y="0" width="%.1f" height="16" rx="4" fill="%s"/></svg>`,
		html.EscapeString(label), math.Max(w*frac, 0), color))
}
