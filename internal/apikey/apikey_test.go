package apikey

import (
	"errors"
	"strings"
	"testing"
)

func TestGenerateParsesBack(t *testing.T) {
	for _, tc := range []struct {
		kind Kind
		env  Environment
		pre  string
	}{
		{Secret, Sandbox, "sk_test_"}, {Secret, Live, "sk_live_"},
		{Restricted, Sandbox, "rk_test_"}, {Restricted, Live, "rk_live_"},
	} {
		key, err := Generate(tc.kind, tc.env)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(key, tc.pre) || len(key) != Len {
			t.Fatalf("key %q: want prefix %s and length %d", key, tc.pre, Len)
		}
		p, err := Parse(key)
		if err != nil {
			t.Fatalf("Parse(%q): %v", key, err)
		}
		if p.Kind != tc.kind || p.Environment != tc.env {
			t.Fatalf("Parse(%q) = %+v", key, p)
		}
		if !LooksLikeKey("Bearer " + key) {
			t.Fatalf("LooksLikeKey misses %q", key)
		}
	}
}

func TestParseRefusesMalformedKeys(t *testing.T) {
	good, _ := Generate(Secret, Sandbox)
	flip := []byte(good)
	if flip[20] == 'a' {
		flip[20] = 'b'
	} else {
		flip[20] = 'a'
	}
	for _, tc := range []struct {
		name string
		key  string
		want error
	}{
		{"empty", "", ErrPrefix},
		{"unknown prefix", "pk_test_" + good[8:], ErrPrefix},
		{"truncated", good[:len(good)-1], ErrLength},
		{"10 kB", good + strings.Repeat("a", 10000), ErrLength},
		{"non-ascii", good[:20] + "é" + good[22:], ErrChars},
		{"non-utf8", good[:20] + "\xff" + good[21:], ErrChars},
		{"typo", string(flip), ErrChecksum},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse(tc.key); !errors.Is(err, tc.want) {
				t.Fatalf("Parse = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestKeysAreUnique(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 2000; i++ {
		k, _ := Generate(Restricted, Live)
		if seen[k] {
			t.Fatal("duplicate key")
		}
		seen[k] = true
	}
}

func FuzzParse(f *testing.F) {
	good, _ := Generate(Secret, Live)
	f.Add(good)
	f.Add("sk_test_")
	f.Add("rk_live_" + strings.Repeat("0", 42))
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err == nil && (len(s) != Len || Prefix(p.Kind, p.Environment) != s[:8]) {
			t.Fatalf("accepted malformed key %q", s)
		}
	})
}
