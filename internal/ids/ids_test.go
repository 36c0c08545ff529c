package ids

import (
	"sort"
	"testing"
	"time"
)

func TestNewIsPrefixedSortableAndValid(t *testing.T) {
	base := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	var got []string
	for i := 0; i < 100; i++ {
		got = append(got, NewAt(Customer, base.Add(time.Duration(i)*time.Millisecond)))
	}
	if !sort.StringsAreSorted(got) {
		t.Fatalf("ids created later must sort later: %v", got[:5])
	}
	for _, id := range got {
		if !Valid(id, Customer) {
			t.Fatalf("Valid(%q) = false", id)
		}
	}
}

func TestValidRejects(t *testing.T) {
	good := New(Customer)
	for name, id := range map[string]string{
		"wrong prefix": "evt_" + good[4:],
		"short":        good[:len(good)-1],
		"long":         good + "A",
		"bad char":     good[:10] + "-" + good[11:],
		"empty":        "",
		"no body":      "cus_",
	} {
		if Valid(id, Customer) {
			t.Errorf("%s: Valid(%q) = true", name, id)
		}
	}
}

func TestNewIsUnique(t *testing.T) {
	seen := map[string]bool{}
	now := time.Now()
	for i := 0; i < 10000; i++ {
		id := NewAt(Request, now)
		if seen[id] {
			t.Fatalf("duplicate id %s", id)
		}
		seen[id] = true
	}
}
