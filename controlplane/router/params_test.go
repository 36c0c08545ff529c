package router

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/apierror"
)

// readJSON reads body as a JSON request body.
func readJSON(body string) (Params, error) {
	r := httptest.NewRequest("POST", "/v1/widgets", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	return ReadParams(httptest.NewRecorder(), r)
}

// A JSON key sent twice must be refused like a form or query parameter sent
// twice: decoding would keep the last value and drop the other silently.
func TestReadParamsRefusesDuplicateJSONKeys(t *testing.T) {
	for _, tc := range []struct {
		name, body, param string
	}{
		{"top level", `{"url":"https://a.example","url":"https://b.example"}`, "url"},
		{"nested object", `{"data":{"a":1,"b":2,"a":3}}`, "data"},
		{"object in a list", `{"items":[{"x":1},{"x":1,"x":2}]}`, "items"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readJSON(tc.body)
			if err == nil {
				t.Fatalf("accepted %s", tc.body)
			}
			e := apierror.From(err)
			if e.Status != 400 || e.Code != "parameter_invalid" || e.Param != tc.param || !strings.Contains(e.Message, "more than once") {
				t.Errorf("%d %s param %q: %s", e.Status, e.Code, e.Param, e.Message)
			}
		})
	}
	// The same key in sibling objects is no duplicate.
	if _, err := readJSON(`{"a":{"x":1},"b":{"x":1},"c":[{"x":1},{"x":2}]}`); err != nil {
		t.Errorf("sibling objects: %v", err)
	}
}

func TestReadParamsKeepsNumbersBeyondFloat64(t *testing.T) {
	p, err := readJSON(`{"data":{"n":1e999999}}`)
	if err != nil || string(p["data"]) != `{"n":1e999999}` {
		t.Fatalf("%s %v", p["data"], err)
	}
}
