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

// An unpaired surrogate escape is no character: decoding would store
// U+FFFD in its place silently, where invalid UTF-8 is refused.
func TestReadParamsRefusesUnpairedSurrogates(t *testing.T) {
	for _, tc := range []struct {
		name, body, param string
	}{
		{"lone high", `{"description":"a\ud800b"}`, "description"},
		{"lone low", `{"description":"\udc00"}`, "description"},
		{"high at the end", `{"description":"\uD83D"}`, "description"},
		{"high then non-low", `{"description":"\ud83d\u0041"}`, "description"},
		{"in a nested key", `{"metadata":{"\ud800":"x"}}`, "metadata"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readJSON(tc.body)
			if err == nil {
				t.Fatalf("accepted %s", tc.body)
			}
			if e := apierror.From(err); e.Status != 400 || e.Code != "parameter_invalid" || e.Param != tc.param {
				t.Errorf("%d %s param %q: %s", e.Status, e.Code, e.Param, e.Message)
			}
		})
	}
	for _, ok := range []string{`{"d":"\ud83d\ude00"}`, `{"d":"\\ud800"}`, `{"d":"é\u00e9"}`} {
		if _, err := readJSON(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}
