package keyspace

import (
	"errors"
	"strings"
	"testing"
)

func TestOverrideEncoding(t *testing.T) {
	tests := []struct {
		name string
		in   Override
		want string
	}{
		{"rate with burst", Override{Quota: 500, Window: 1, Burst: 1000}, "500 1 1000"},
		{"burst defaults", Override{Quota: 10, Window: 60}, "10 60 0"},
	}
	for _, tt := range tests {
		got := Encode(tt.in)
		if got != tt.want {
			t.Errorf("%s: Encode = %q, want %q", tt.name, got, tt.want)
		}
		back, err := Decode(got)
		if err != nil || back != tt.in {
			t.Errorf("%s: Decode(%q) = %+v, %v", tt.name, got, back, err)
		}
	}
	for _, bad := range []string{"", "5", "5 1", "0 1 0", "5 0 0", "-1 1 0", "a b c", "5 1 0 9", "9223372036854775807 1 0", "1 31622401 0", "1 1 1000000000001"} {
		if _, err := Decode(bad); err == nil {
			t.Errorf("Decode(%q) accepted", bad)
		}
	}
}

func TestCheckBounds(t *testing.T) {
	tests := []struct {
		quota, window, burst int64
		field                string // "" when within bounds
	}{
		{MaxCount, MaxWindow, MaxCount, ""},
		{1, MaxWindow, 1, ""},
		{100, 1, 100 * MaxWindow, ""},        // a burst that refills in exactly 366 days
		{100, 1, 100*MaxWindow + 1, "burst"}, // a moment longer
		{1, MaxWindow, 2, "burst"},
		{MaxCount + 1, 1, 0, "quota"},
		{1<<63 - 1, 1, 0, "quota"},
		{1, MaxWindow + 1, 0, "window"},
		{1, 1<<63 - 1, 0, "window"},
		{MaxCount, 1, MaxCount + 1, "burst"},
		{MaxCount, 1, 1<<63 - 1, "burst"},
	}
	for _, tt := range tests {
		err := CheckBounds(tt.quota, tt.window, tt.burst)
		var be *BoundError
		switch {
		case tt.field == "" && err != nil:
			t.Errorf("CheckBounds(%d, %d, %d) = %v, want nil", tt.quota, tt.window, tt.burst, err)
		case tt.field != "" && (!errors.As(err, &be) || be.Field != tt.field):
			t.Errorf("CheckBounds(%d, %d, %d) = %v, want a %s error", tt.quota, tt.window, tt.burst, err, tt.field)
		}
	}
}

func TestKeysShareTheRequestsHashTag(t *testing.T) {
	tag := Tag("org_1", "192.0.2.1")
	for _, k := range []string{
		Bucket(DefaultPrefix, tag, Live, "per-ip", "192.0.2.1"),
		Counter(DefaultPrefix, tag, Live, "monthly", "org_1"),
		Overrides(DefaultPrefix, "org_1"),
	} {
		if !strings.Contains(k, "{org_1}") {
			t.Errorf("%s lacks the hash tag {org_1}", k)
		}
	}
	if got := Tag("", "192.0.2.1"); got != "ip:192.0.2.1" {
		t.Errorf("unauthenticated tag = %q", got)
	}
	long := strings.Repeat("/v1/customers/cus_", 20)
	if k := Bucket(DefaultPrefix, tag, Live, "route", long); len(k) > 100 || strings.Contains(k, "cus_") {
		t.Errorf("a long partition value is kept verbatim: %s", k)
	}
}

// A short value is kept verbatim, so keys stay as they were, but it can
// never name the bucket of a long value by being its hashed form.
func TestPartitionValues(t *testing.T) {
	tag := Tag("org_1", "192.0.2.1")
	long := strings.Repeat("/v1/customers/cus_", 20)
	hashed := strings.TrimPrefix(Bucket(DefaultPrefix, tag, Live, "route", long), "gatehouse:rl:{org_1}:live:route:")
	if !strings.HasPrefix(hashed, "sha256:") {
		t.Fatalf("long value not hashed: %s", hashed)
	}
	for _, tc := range []struct{ name, a, b string }{
		{"long value and its hashed form", long, hashed},
		{"64 characters and 65", strings.Repeat("a", 64), strings.Repeat("a", 65)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if a, b := Bucket(DefaultPrefix, tag, Live, "route", tc.a), Bucket(DefaultPrefix, tag, Live, "route", tc.b); a == b {
				t.Errorf("%q and %q share the key %s", tc.a, tc.b, a)
			}
			if a, b := Counter(DefaultPrefix, tag, Live, "monthly", tc.a), Counter(DefaultPrefix, tag, Live, "monthly", tc.b); a == b {
				t.Errorf("%q and %q share the counter %s", tc.a, tc.b, a)
			}
		})
	}
	for _, tc := range []struct{ value, want string }{
		{"192.0.2.1", "gatehouse:rl:{org_1}:live:per-ip:192.0.2.1"},
		{"key_0000000000000000000000", "gatehouse:rl:{org_1}:live:per-ip:key_0000000000000000000000"},
		{strings.Repeat("a", 64), "gatehouse:rl:{org_1}:live:per-ip:" + strings.Repeat("a", 64)},
		{"sha256", "gatehouse:rl:{org_1}:live:per-ip:sha256"},
		{"", "gatehouse:rl:{org_1}:live:per-ip:"},
	} {
		if got := Bucket(DefaultPrefix, tag, Live, "per-ip", tc.value); got != tc.want {
			t.Errorf("Bucket(%q) = %s, want %s", tc.value, got, tc.want)
		}
	}
	// The request path allocates only the key itself for a short value.
	if n := testing.AllocsPerRun(100, func() { _ = Bucket(DefaultPrefix, tag, Live, "per-ip", "192.0.2.1") }); n > 1 {
		t.Errorf("Bucket allocates %v times for a short value, want 1", n)
	}
}
