package config

import (
	"strings"
	"testing"
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
