package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// listJSON is the list envelope of DESIGN §5. The CLI prints everything it
// found, so has_more is always false.
type listJSON[T any] struct {
	Object  string `json:"object"`
	Data    []T    `json:"data"`
	HasMore bool   `json:"has_more"`
}

func list[T any](data []T) listJSON[T] {
	if data == nil {
		data = []T{}
	}
	return listJSON[T]{Object: "list", Data: data}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// unix is a timestamp as the API prints it: seconds, or null.
func unix(t *time.Time) *int64 {
	if t == nil {
		return nil
	}
	u := t.Unix()
	return &u
}

// timeText is a timestamp for humans, or none when t is nil.
func timeText(t *time.Time, none string) string {
	if t == nil {
		return none
	}
	return t.UTC().Format(time.RFC3339)
}

// parseDuration accepts Go durations ("36h", "90m") and whole days, alone
// or in front of a Go duration ("30d", "1d12h"), which operators reach for
// when setting key expiries.
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, 'd'); i > 0 && isDigits(s[:i]) {
		days, err := strconv.Atoi(s[:i])
		if err != nil || days > 100*365 {
			return 0, fmt.Errorf("%q is out of range", s)
		}
		d := time.Duration(days) * 24 * time.Hour
		if rest := s[i+1:]; rest != "" {
			r, err := time.ParseDuration(rest)
			if err != nil || r < 0 {
				return 0, fmt.Errorf("%q is not a duration like 30d, 1d12h or 36h", s)
			}
			d += r
		}
		return d, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration like 30d, 1d12h or 36h", s)
	}
	return d, nil
}

// isDigits reports whether s is ASCII digits, all strconv.Atoi reads:
// another script's digits are no number, not an out-of-range one.
func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
