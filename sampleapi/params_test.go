package sampleapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

const (
	ctJSON = "application/json"
	ctForm = "application/x-www-form-urlencoded"
)

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// metadataJSON is {"metadata":{…}} with n keys made by key(i) and value v.
func metadataJSON(t *testing.T, n int, key func(int) string, v string) string {
	md := map[string]string{}
	for i := range n {
		md[key(i)] = v
	}
	return mustJSON(t, map[string]any{"metadata": md})
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	existing := e.mustCreate(orgA, `{}`)
	one := "/v1/customers/" + existing.ID

	invalid := func(param string) wantError {
		return wantError{400, "invalid_request_error", "parameter_invalid", param}
	}
	unknown := func(param string) wantError {
		return wantError{400, "invalid_request_error", "parameter_unknown", param}
	}
	bodyInvalid := wantError{400, "invalid_request_error", "body_invalid", ""}

	cases := []struct {
		name        string
		method      string
		target      string
		contentType string
		body        string
		want        wantError
	}{
		// Body format.
		{"malformed json", "POST", "/v1/customers", ctJSON, `{"email":`, bodyInvalid},
		{"json array", "POST", "/v1/customers", ctJSON, `[{"email":"a@example.com"}]`, bodyInvalid},
		{"json null body", "POST", "/v1/customers", ctJSON, `null`, bodyInvalid},
		{"json trailing data", "POST", "/v1/customers", ctJSON, `{} {}`, bodyInvalid},
		{"text/plain body", "POST", "/v1/customers", "text/plain", `email=a@example.com`, bodyInvalid},
		{"no content type with body", "POST", "/v1/customers", "", `{"email":"a@example.com"}`, bodyInvalid},
		{"non-utf8 charset", "POST", "/v1/customers", ctJSON + "; charset=latin1", `{}`, bodyInvalid},
		{"malformed form escape", "POST", "/v1/customers", ctForm, `email=%zz`, bodyInvalid},
		{"body over 1 MB", "POST", "/v1/customers", ctJSON, `{"description":"` + strings.Repeat("a", maxBodyBytes) + `"}`,
			wantError{413, "invalid_request_error", "body_too_large", ""}},
		{"body of exactly 1 MB is read", "POST", "/v1/customers", ctJSON, `{"description":"` + strings.Repeat("a", maxBodyBytes-len(`{"description":"`)-len(`"}`)) + `"}`,
			invalid("description")},
		{"body over 1 MB on update", "POST", one, ctForm, strings.Repeat("a", maxBodyBytes+1),
			wantError{413, "invalid_request_error", "body_too_large", ""}},

		// Unknown parameters.
		{"json unknown field", "POST", "/v1/customers", ctJSON, `{"email":"a@example.com","shoe_size":"42"}`, unknown("shoe_size")},
		{"form unknown field", "POST", "/v1/customers", ctForm, `email=a%40example.com&shoe_size=42`, unknown("shoe_size")},
		{"json id is not writable", "POST", one, ctJSON, `{"id":"cus_x"}`, unknown("id")},
		{"form nested unknown", "POST", "/v1/customers", ctForm, `address[city]=Paris`, unknown("address[city]")},
		{"query param on create", "POST", "/v1/customers?email=a%40example.com", "", "", unknown("email")},
		{"list unknown query", "GET", "/v1/customers?created=1", "", "", unknown("created")},
		{"get takes no query", "GET", one + "?expand=x", "", "", unknown("expand")},

		// Types.
		{"json email number", "POST", "/v1/customers", ctJSON, `{"email":5}`, invalid("email")},
		{"json name object", "POST", "/v1/customers", ctJSON, `{"name":{"first":"A"}}`, invalid("name")},
		{"json metadata array", "POST", "/v1/customers", ctJSON, `{"metadata":["a"]}`, invalid("metadata")},
		{"json metadata string", "POST", "/v1/customers", ctJSON, `{"metadata":"plan"}`, invalid("metadata")},
		{"json metadata number value", "POST", "/v1/customers", ctJSON, `{"metadata":{"seats":5}}`, invalid("metadata[seats]")},
		{"form metadata scalar", "POST", "/v1/customers", ctForm, `metadata=plan`, invalid("metadata")},
		{"form repeated param", "POST", "/v1/customers", ctForm, `email=a%40example.com&email=b%40example.com`, invalid("email")},
		{"json repeated param", "POST", "/v1/customers", ctJSON, `{"email":"a@example.com","email":"b@example.com"}`, invalid("email")},
		{"json repeated metadata key", "POST", "/v1/customers", ctJSON, `{"metadata":{"k":"a","k":"b"}}`, invalid("metadata")},
		{"json repeated param on update", "POST", one, ctJSON, `{"name":"A","name":"B"}`, invalid("name")},

		// Email.
		{"bad email", "POST", "/v1/customers", ctJSON, `{"email":"not-an-email"}`, invalid("email")},
		{"email with display name", "POST", "/v1/customers", ctJSON, `{"email":"Ann <ann@example.com>"}`, invalid("email")},
		{"email with spaces", "POST", "/v1/customers", ctForm, `email=+ann%40example.com`, invalid("email")},
		{"email too long", "POST", "/v1/customers", ctJSON, `{"email":"` + strings.Repeat("a", 501) + `@example.com"}`, invalid("email")},
		{"bad email on update", "POST", one, ctForm, `email=nope`, invalid("email")},

		// Lengths.
		{"name too long", "POST", "/v1/customers", ctJSON, `{"name":"` + strings.Repeat("n", maxNameLen+1) + `"}`, invalid("name")},
		{"description too long", "POST", "/v1/customers", ctJSON, `{"description":"` + strings.Repeat("d", maxDescriptionLen+1) + `"}`, invalid("description")},
		{"phone too long", "POST", "/v1/customers", ctForm, `phone=` + strings.Repeat("1", maxPhoneLen+1), invalid("phone")},

		// Metadata limits.
		{"51 metadata keys", "POST", "/v1/customers", ctJSON, metadataJSON(t, 51, func(i int) string { return fmt.Sprintf("k%d", i) }, "v"), invalid("metadata")},
		{"41-char key", "POST", "/v1/customers", ctJSON, `{"metadata":{"` + strings.Repeat("k", 41) + `":"v"}}`, invalid("metadata")},
		{"501-char value", "POST", "/v1/customers", ctJSON, `{"metadata":{"k":"` + strings.Repeat("v", 501) + `"}}`, invalid("metadata[k]")},
		{"form 501-char value", "POST", "/v1/customers", ctForm, `metadata[k]=` + strings.Repeat("v", 501), invalid("metadata[k]")},
		{"key with bracket", "POST", "/v1/customers", ctJSON, `{"metadata":{"a[b]":"v"}}`, invalid("metadata")},
		{"form nested metadata", "POST", "/v1/customers", ctForm, `metadata[a][b]=v`, invalid("metadata")},
		{"empty key", "POST", "/v1/customers", ctJSON, `{"metadata":{"":"v"}}`, invalid("metadata")},

		// Encoding.
		{"json non-utf8 name", "POST", "/v1/customers", ctJSON, "{\"name\":\"caf\xe9\"}", invalid("name")},
		{"form non-utf8 name", "POST", "/v1/customers", ctForm, `name=caf%E9`, invalid("name")},
		{"form non-utf8 metadata value", "POST", "/v1/customers", ctForm, `metadata[k]=%FF`, invalid("metadata[k]")},
		{"json non-utf8 metadata", "POST", "/v1/customers", ctJSON, "{\"metadata\":{\"k\":\"\xff\"}}", invalid("metadata")},
		{"json NUL in name", "POST", "/v1/customers", ctJSON, `{"name":"a\u0000b"}`, invalid("name")},
		{"json lone surrogate in name", "POST", "/v1/customers", ctJSON, `{"name":"a\ud800b"}`, invalid("name")},
		{"json lone low surrogate in email", "POST", "/v1/customers", ctJSON, `{"email":"\udc00@example.com"}`, invalid("email")},
		{"json lone surrogate in metadata key", "POST", "/v1/customers", ctJSON, `{"metadata":{"\ud800":"v"}}`, invalid("metadata")},
		{"json lone surrogate in metadata value", "POST", one, ctJSON, `{"metadata":{"k":"\uD83D"}}`, invalid("metadata")},
		{"form NUL in description", "POST", "/v1/customers", ctForm, `description=a%00b`, invalid("description")},
		{"NUL in metadata key", "POST", "/v1/customers", ctJSON, `{"metadata":{"a\u0000":"v"}}`, invalid("metadata")},
		{"NUL in email filter", "GET", "/v1/customers?email=a%00%40example.com", "", "", invalid("email")},

		// List parameters.
		{"limit zero", "GET", "/v1/customers?limit=0", "", "", invalid("limit")},
		{"limit 101", "GET", "/v1/customers?limit=101", "", "", invalid("limit")},
		{"limit not a number", "GET", "/v1/customers?limit=ten", "", "", invalid("limit")},
		{"limit negative", "GET", "/v1/customers?limit=-1", "", "", invalid("limit")},
		{"limit repeated", "GET", "/v1/customers?limit=1&limit=2", "", "", invalid("limit")},
		{"both cursors", "GET", "/v1/customers?starting_after=" + existing.ID + "&ending_before=" + existing.ID, "", "", invalid("ending_before")},
		{"malformed cursor", "GET", "/v1/customers?starting_after=42", "", "", invalid("starting_after")},
		{"cursor of another type", "GET", "/v1/customers?ending_before=evt_0000000000000000000000", "", "", invalid("ending_before")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := e.do(request{id: &orgA, method: tc.method, target: tc.target, contentType: tc.contentType, body: tc.body})
			res.assertError(t, tc.want)
		})
	}

	// None of the refused writes changed anything.
	var l listJSON
	e.get(orgA, "/v1/customers?limit=100").decode(t, http.StatusOK, &l)
	if len(l.Data) != 1 || l.Data[0].ID != existing.ID || l.Data[0].Email != nil || len(l.Data[0].Metadata) != 0 {
		t.Errorf("refused requests changed data: %+v", l.Data)
	}
}
