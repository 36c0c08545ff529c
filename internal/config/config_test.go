package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRequireSecretsRefusesPublishedValues(t *testing.T) {
	for _, tc := range []struct {
		identity, master string
		refused          string // the variable named in the error, "" for none
	}{
		{"", "", "IDENTITY_SECRET"},
		{DefaultIdentitySecret, "a-master-key", "IDENTITY_SECRET"},
		{"an-identity-secret", "", "MASTER_KEY"},
		{"an-identity-secret", DefaultMasterKey, "MASTER_KEY"},
		{"an-identity-secret", "a-master-key", ""},
	} {
		t.Setenv("IDENTITY_SECRET", tc.identity)
		t.Setenv("MASTER_KEY", tc.master)
		err := RequireSecrets("IDENTITY_SECRET", "MASTER_KEY")
		switch {
		case tc.refused == "" && err != nil:
			t.Errorf("%q/%q: refused: %v", tc.identity, tc.master, err)
		case tc.refused != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.refused+" ")):
			t.Errorf("%q/%q: got %v, want %s refused", tc.identity, tc.master, err, tc.refused)
		}
	}
}

// A value that does not parse is an error naming the variable, not the
// default; unset is the default.
func TestTypedValuesRefuseTypos(t *testing.T) {
	t.Setenv("GH_TEST_D", "1sec")
	t.Setenv("GH_TEST_I", "12x")
	t.Setenv("GH_TEST_B", "maybe")
	if _, err := Duration("GH_TEST_D", time.Second); err == nil || !strings.Contains(err.Error(), "GH_TEST_D") {
		t.Errorf("Duration: %v", err)
	}
	if _, err := Int("GH_TEST_I", 1); err == nil || !strings.Contains(err.Error(), "GH_TEST_I") {
		t.Errorf("Int: %v", err)
	}
	if _, err := Bool("GH_TEST_B", false); err == nil || !strings.Contains(err.Error(), "GH_TEST_B") {
		t.Errorf("Bool: %v", err)
	}
	for v, want := range map[string]bool{"yes": true, "on": true, "TRUE": true, "1": true, "no": false, "off": false, "0": false} {
		t.Setenv("GH_TEST_B", v)
		if b, err := Bool("GH_TEST_B", !want); err != nil || b != want {
			t.Errorf("Bool(%q) = %v, %v", v, b, err)
		}
	}
	if d, err := Duration("GH_TEST_UNSET", 3*time.Second); err != nil || d != 3*time.Second {
		t.Errorf("unset: %v, %v", d, err)
	}
	t.Setenv("KAFKA_BROKERS", "a:9092, b:9092 ,")
	if got := Load().KafkaBrokers; strings.Join(got, "|") != "a:9092|b:9092" {
		t.Errorf("KafkaBrokers = %q", got)
	}
}

// One set of brokers, however it is written: the gateway keeps a spool per
// set, and a reordered KAFKA_BROKERS must find its spool again.
func TestBrokerSet(t *testing.T) {
	want := []string{"a:9092", "b:9092"}
	for _, lists := range [][]string{{"a:9092,b:9092"}, {"b:9092, a:9092"}, {"b:9092", "a:9092,,b:9092 "}} {
		if got := BrokerSet(lists...); !slices.Equal(got, want) {
			t.Errorf("BrokerSet(%q) = %q, want %q", lists, got, want)
		}
	}
	if got := BrokerSet(" , "); len(got) != 0 {
		t.Errorf("BrokerSet of nothing = %q", got)
	}
}
