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

// readForm reads body as a form request body.
func readForm(body string) (Params, error) {
	r := httptest.NewRequest("POST", "/v1/widgets", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return ReadParams(httptest.NewRecorder(), r)
}

// A parameter sent in a form as an object keyed 0, 1, … stays an object
// (metadata[0]=a is the key "0", as in JSON) until its reader asks for a
// list.
func TestFormIndexesAreListsOnlyWhereAListIsExpected(t *testing.T) {
	p, err := readForm("metadata[0]=a&metadata[1]=b&data[tags][0]=x&data[tags][1]=y&events[1]=b.c&events[0]=a.b")
	if err != nil {
		t.Fatal(err)
	}
	if got := string(p["metadata"]); got != `{"0":"a","1":"b"}` {
		t.Errorf("metadata = %s", got)
	}
	if got := string(p["data"]); got != `{"tags":["x","y"]}` { // inside a parameter, indexes make a list
		t.Errorf("data = %s", got)
	}
	if v, _, err := p.Strings("events"); err != nil || strings.Join(v, ",") != "a.b,b.c" {
		t.Errorf("events = %q, %v", v, err)
	}
	for _, body := range []string{"events[0]=a&events[2]=b", "events[x]=a", "events[01]=a", "events[0][x]=a"} {
		p, err := readForm(body)
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		if _, _, err := p.Strings("events"); apierror.From(err).Param != "events" {
			t.Errorf("%s: %v, want a list refused", body, err)
		}
	}
}
