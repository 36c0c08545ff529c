package cli

import (
	"strings"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		bad  bool
		msg  string // in the error of a bad one
	}{
		{in: "30d", want: 30 * 24 * time.Hour},
		{in: "1d12h", want: 36 * time.Hour},
		{in: "36h", want: 36 * time.Hour},
		{in: "90m", want: 90 * time.Minute},
		{in: "0s", want: 0},
		{in: "d", bad: true},
		{in: "3x", bad: true},
		{in: "1d-2h", bad: true},
		{in: "99999999d", bad: true, msg: "out of range"},
		{in: "١d", bad: true, msg: "not a duration"}, // an Arabic-Indic 1
		{in: "١٢d3h", bad: true, msg: "not a duration"},
		{in: "", bad: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseDuration(tc.in)
			if tc.bad != (err != nil) || got != tc.want {
				t.Fatalf("parseDuration(%q) = %v, %v", tc.in, got, err)
			}
			if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("parseDuration(%q): %v, want %q", tc.in, err, tc.msg)
			}
		})
	}
}
