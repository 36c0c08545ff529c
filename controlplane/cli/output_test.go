package cli

import (
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		bad  bool
	}{
		{in: "30d", want: 30 * 24 * time.Hour},
		{in: "1d12h", want: 36 * time.Hour},
		{in: "36h", want: 36 * time.Hour},
		{in: "90m", want: 90 * time.Minute},
		{in: "0s", want: 0},
		{in: "d", bad: true},
		{in: "3x", bad: true},
		{in: "1d-2h", bad: true},
		{in: "99999999d", bad: true},
		{in: "", bad: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseDuration(tc.in)
			if tc.bad != (err != nil) || got != tc.want {
				t.Fatalf("parseDuration(%q) = %v, %v", tc.in, got, err)
			}
		})
	}
}
