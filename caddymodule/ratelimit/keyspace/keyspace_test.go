package keyspace

import (
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
	for _, bad := range []string{"", "5", "5 1", "0 1 0", "5 0 0", "-1 1 0", "a b c", "5 1 0 9"} {
		if _, err := Decode(bad); err == nil {
			t.Errorf("Decode(%q) accepted", bad)
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
