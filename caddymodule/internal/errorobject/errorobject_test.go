package errorobject

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/apierror"
)

// TestDocURLFollowsDocsURL: the gateway reads DOCS_URL when its modules load,
// so the test runs itself again in a process started with it set.
func TestDocURLFollowsDocsURL(t *testing.T) {
	const base = "https://docs.example.test/errors"
	if os.Getenv("GATEHOUSE_DOCS_URL_CHILD") == "1" {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, "/v1/nowhere", nil)
		Write(rec, r, ForStatus(http.StatusNotFound))
		var body struct {
			Error struct {
				DocURL string `json:"doc_url"`
			} `json:"error"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatal(err)
		}
		if want := base + "#route_missing"; body.Error.DocURL != want {
			t.Fatalf("doc_url %q, want %q", body.Error.DocURL, want)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestDocURLFollowsDocsURL$", "-test.count=1")
	cmd.Env = append(os.Environ(), "GATEHOUSE_DOCS_URL_CHILD=1", "DOCS_URL="+base)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "PASS") {
		t.Fatalf("with DOCS_URL=%s: %v\n%s", base, err, out)
	}
	// Unset, the default stays (this process has no DOCS_URL unless the
	// environment running the tests sets one).
	if os.Getenv("DOCS_URL") == "" && apierror.DocURL("x") != apierror.DefaultDocsBase+"#x" {
		t.Fatalf("without DOCS_URL: %s", apierror.DocURL("x"))
	}
}
