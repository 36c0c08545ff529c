package redact

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gatehouse/gatehouse/internal/apikey"
)

func newKey(t testing.TB, env apikey.Environment) string {
	t.Helper()
	k, err := apikey.Generate(apikey.Secret, env)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestHeaders(t *testing.T) {
	key := newKey(t, apikey.Live)
	r := New(Config{Headers: []string{"x-tenant", "content-location"}, QueryParams: []string{"signature"}})
	tests := []struct {
		name   string
		header http.Header
		want   map[string]string
	}{
		{"authorization is masked", http.Header{"Authorization": {"Bearer " + key}}, map[string]string{"Authorization": Mask}},
		{"cookies are masked", http.Header{"Cookie": {"s=1"}, "Set-Cookie": {"s=2; HttpOnly"}},
			map[string]string{"Cookie": Mask, "Set-Cookie": Mask}},
		{"proxy authorization is masked", http.Header{"Proxy-Authorization": {"Basic eDp5"}}, map[string]string{"Proxy-Authorization": Mask}},
		{"unknown headers are left out", http.Header{"X-Custom": {key}, "X-Other": {"hello"}}, nil},
		{"allowlisted headers are kept", http.Header{"Content-Type": {"application/json"}, "User-Agent": {"curl/8"}},
			map[string]string{"Content-Type": "application/json", "User-Agent": "curl/8"}},
		{"an allowlisted header carrying a key is masked", http.Header{"User-Agent": {"sdk " + key}}, map[string]string{"User-Agent": Mask}},
		{"a truncated key is still masked", http.Header{"User-Agent": {"sdk " + key[:20]}}, map[string]string{"User-Agent": "sdk " + Mask}},
		{"configured headers are kept", http.Header{"X-Tenant": {"acme"}}, map[string]string{"X-Tenant": "acme"}},
		{"several values are joined", http.Header{"Accept": {"a/b", "c/d"}}, map[string]string{"Accept": "a/b, c/d"}},
		{"control characters are escaped", http.Header{"User-Agent": {"evil\r\nX-Injected: 1"}},
			map[string]string{"User-Agent": `evil\u000d\u000aX-Injected: 1`}},
		{"card numbers are masked", http.Header{"Idempotency-Key": {"order-4242424242424242"}},
			map[string]string{"Idempotency-Key": "order-" + Mask}},
		{"a Location's query is redacted", http.Header{"Location": {"https://app.test/cb?code=1&access_token=abc"}},
			map[string]string{"Location": "https://app.test/cb?code=1&access_token=" + Mask}},
		{"a Location's fragment and credentials are redacted", http.Header{"Location": {"https://u:pw@app.test/cb#token=abc"}},
			map[string]string{"Location": "https://" + Mask + "@app.test/cb#token=" + Mask}},
		{"an allowlisted Content-Location is redacted too", http.Header{"Content-Location": {"/v1/files/1?x=1;signature=abc"}},
			map[string]string{"Content-Location": "/v1/files/1?x=1;signature=" + Mask}},
		{"several URLs are redacted one by one", http.Header{"Location": {"/a?x=1", "/b?token=abc"}},
			map[string]string{"Location": "/a?x=1, /b?token=" + Mask}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := r.Headers(tt.header)
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
	t.Run("long values are bounded", func(t *testing.T) {
		got := r.Headers(http.Header{"User-Agent": {strings.Repeat("é", 2000)}})["User-Agent"]
		if len(got) > MaxHeaderValue || !utf8.ValidString(got) || !strings.HasSuffix(got, "…") {
			t.Fatalf("len %d, valid %v", len(got), utf8.ValidString(got))
		}
	})
}

func TestPath(t *testing.T) {
	key := newKey(t, apikey.Sandbox)
	r := New(Config{QueryParams: []string{"sig"}, SecretPathParents: []string{"magic"}})
	tests := []struct{ name, in, want string }{
		{"plain path", "/v1/customers?limit=3", "/v1/customers?limit=3"},
		{"api_key value", "/v1/x?api_key=abc&limit=3", "/v1/x?api_key=" + Mask + "&limit=3"},
		{"names compare loosely", "/v1/x?API-Key=abc&Access_Token=zz", "/v1/x?API-Key=" + Mask + "&Access_Token=" + Mask},
		{"sensitive field names too", "/v1/x?client_secret=abc", "/v1/x?client_secret=" + Mask},
		{"configured names", "/v1/x?sig=abc&sigma=1", "/v1/x?sig=" + Mask + "&sigma=1"},
		{"a key in any value", "/v1/x?q=" + key, "/v1/x?q=" + Mask},
		{"a percent-encoded key", "/v1/x?q=" + strings.ReplaceAll(key, "_", "%5F"), "/v1/x?q=" + Mask},
		{"a key as a parameter name", "/v1/x?" + key, "/v1/x?" + Mask},
		{"a key in the path", "/v1/keys/" + key + "/roll", "/v1/keys/" + Mask + "/roll"},
		{"a card in the path", "/v1/cards/4242-4242-4242-4242", "/v1/cards/" + Mask},
		{"a card grouped by form-encoded spaces", "/v1/x?number=4242+4242+4242+4242&a=1", "/v1/x?number=" + Mask + "&a=1"},
		{"control characters", "/v1/x\n\x1b[31m", `/v1/x\u000a\u001b[31m`},
		{"empty value", "/v1/x?token=&a", "/v1/x?token=" + Mask + "&a"},
		{"semicolons separate parameters too", "/v1/x?x=1;api_key=abc;password=p&limit=3",
			"/v1/x?x=1;api_key=" + Mask + ";password=" + Mask + "&limit=3"},
		{"a key after a semicolon", "/v1/x?a=1;" + key, "/v1/x?a=1;" + Mask},
		{"credentials in an absolute URI", "http://user:hunter2@api.test/v1/x?limit=3", "http://" + Mask + "@api.test/v1/x?limit=3"},
		{"a token in the fragment", "/v1/x?a=1#access_token=abc&state=s", "/v1/x?a=1#access_token=" + Mask + "&state=s"},
		{"configured secret path parents", "/v1/magic/abc/x", "/v1/magic/" + Mask + "/x"},
		{"in any case", "/v1/MAGIC/abc", "/v1/MAGIC/" + Mask},
		{"nothing after them", "/v1/magic/", "/v1/magic/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.Path(tt.in); got != tt.want {
				t.Errorf("Path(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
	t.Run("long paths are bounded", func(t *testing.T) {
		got := r.Path("/" + strings.Repeat("a", 5000) + "?token=" + key)
		if len(got) > MaxPath || strings.Contains(got, key) {
			t.Fatalf("len %d", len(got))
		}
	})
}

func TestString(t *testing.T) {
	key := newKey(t, apikey.Live)
	r := New(Config{})
	tests := []struct{ name, in, want string }{
		{"nothing to mask", "hello world 12345", "hello world 12345"},
		{"secret key", "use " + key + " please", "use " + Mask + " please"},
		{"restricted key", "rk_test_abcd1234", Mask},
		{"webhook secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw=", Mask},
		{"prefix alone is not a key", "sk_test_ is the prefix", "sk_test_ is the prefix"},
		{"visa", "card 4242424242424242 ok", "card " + Mask + " ok"},
		{"grouped with spaces", "4000 0566 5566 5556", Mask},
		{"grouped with dashes", "5555-5555-5555-4444", Mask},
		{"amex", "378282246310005", Mask},
		{"two cards", "4242424242424242 5555555555554444", Mask + " " + Mask},
		{"not luhn", "4242424242424241", "4242424242424241"},
		{"millisecond timestamp", "1767225600000", "1767225600000"},
		{"too long a run", "42424242424242424242424", "42424242424242424242424"},
		{"too short", "424242424242", "424242424242"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.String(tt.in); got != tt.want {
				t.Errorf("String(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestJSON(t *testing.T) {
	r := New(Config{Fields: []string{"dob"}})
	key := newKey(t, apikey.Sandbox)
	// A random key can spell a sensitive field name ("…CvVc…" holds cvv):
	// as a field name, its value would then be masked as well, rightly.
	for r.SensitiveField(key) {
		key = newKey(t, apikey.Sandbox)
	}
	m := `"` + Mask + `"`
	tests := []struct {
		name      string
		in        string
		truncated bool
		want      string
	}{
		{"no secrets", `{"email":"a@b.c","n":1,"ok":true,"x":null}`, false, `{"email":"a@b.c","n":1,"ok":true,"x":null}`},
		{"password", `{"email":"a@b.c","password":"hunter2"}`, false, `{"email":"a@b.c","password":` + m + `}`},
		{"case and separators", `{"Password":"a","API-KEY":"b","clientSecret":"c","username":"d"}`, false,
			`{"Password":` + m + `,"API-KEY":` + m + `,"clientSecret":` + m + `,"username":"d"}`},
		{"nested and in arrays", `{"a":{"b":[{"token":"t1"},{"c":{"cvc":123}}]}}`, false,
			`{"a":{"b":[{"token":` + m + `},{"c":{"cvc":` + m + `}}]}}`},
		{"whole objects and arrays", `{"card_number":{"x":[1,2,{"y":"z"}]},"ssn":["1","2"],"next":1}`, false,
			`{"card_number":` + m + `,"ssn":` + m + `,"next":1}`},
		{"escaped field name", `{"pass\u0077ord":"hunter2"}`, false, `{"pass\u0077ord":` + m + `}`},
		// Go's encoding/json fills Password and Token from these (Unicode
		// case folding: a long s, the Kelvin sign), escaped or not.
		{"folded field names", `{"pa\u017fsword":"a","to\u212aen":"b","paſsword":"c"}`, false,
			`{"pa\u017fsword":` + m + `,"to\u212aen":` + m + `,"paſsword":` + m + `}`},
		{"named like a key", `{"key":"a","signing_key":"b","encryptionKey":"c","idempotency_key":"d","keys":"e"}`, false,
			`{"key":` + m + `,"signing_key":` + m + `,"encryptionKey":` + m + `,"idempotency_key":"d","keys":"e"}`},
		{"configured fields", `{"dob":"1990-01-01"}`, false, `{"dob":` + m + `}`},
		{"key in any string", `{"note":"my key is ` + key + `"}`, false, `{"note":"my key is ` + Mask + `"}`},
		{"escaped key in a string", `{"note":"` + strings.Replace(key, "_", `\u005f`, 1) + `"}`, false, `{"note":"` + Mask + `"}`},
		{"key as a field name", `{"` + key + `":1}`, false, `{"` + Mask + `":1}`},
		{"card as a number", `{"n":4242424242424242}`, false, `{"n":` + m + `}`},
		{"card in a string", `["4242 4242 4242 4242"]`, false, `["` + Mask + `"]`},
		{"layout is kept", "{\n  \"password\": \"x\",\n  \"a\": [1, 2]\n}", false, "{\n  \"password\": " + m + ",\n  \"a\": [1, 2]\n}"},
		{"truncated inside a secret value", `{"a":1,"password":"hunt`, true, `{"a":1,"password":` + m},
		{"truncated after a sensitive key", `{"a":1,"password":`, true, `{"a":1,"password":`},
		{"truncated inside a sensitive object", `{"secret":{"a":"b`, true, `{"secret":` + m},
		{"truncated inside a key", `{"a":"` + key[:30], true, `{"a":"`},
		{"truncated inside a card", `{"a":"4242 4242 4242 42`, true, `{"a":"`},
		{"truncated number", `{"a":42424242424`, true, `{"a":`},
		{"invalid JSON is not kept", `{"password" "hunter2"}`, false, "[invalid JSON body of 22 bytes not captured]"},
		{"a truncated valid document is not truncated", `{"a":1}`, true, `{"a":1}`},
		{"control characters in strings", "{\"a\":\"x\u0085y\"}", false, `{"a":"x\u0085y"}`},
		{"html is not escaped", `{"a":"<b>&` + key + `"}`, false, `{"a":"<b>&` + Mask + `"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := r.JSON([]byte(tt.in), tt.truncated)
			if got != tt.want {
				t.Errorf("JSON(%s)\n got %s\nwant %s", tt.in, got, tt.want)
			}
			if !tt.truncated && json.Valid([]byte(tt.in)) && !json.Valid([]byte(got)) {
				t.Errorf("valid JSON in, invalid out: %s", got)
			}
		})
	}
}

func TestBody(t *testing.T) {
	key := newKey(t, apikey.Live)
	r := New(Config{})
	tests := []struct {
		name, contentType, in string
		truncated             bool
		max                   int
		want                  string
	}{
		{"json", "application/json; charset=utf-8", `{"token":"x"}`, false, 100, `{"token":"` + Mask + `"}`},
		{"json suffix", "application/problem+json", `{"token":"x"}`, false, 100, `{"token":"` + Mask + `"}`},
		{"form", "application/x-www-form-urlencoded", "email=a%40b.c&password=x&card=4242424242424242", false, 100,
			"email=a%40b.c&password=" + Mask + "&card=" + Mask},
		{"form card grouped by encoded spaces", "application/x-www-form-urlencoded", "name=A+B&number=4242+4242+4242+4242", false, 100,
			"name=A+B&number=" + Mask},
		{"truncated form", "application/x-www-form-urlencoded", "a=1&b=" + key[:20], true, 100, "a=1&"},
		{"text", "text/plain", "key " + key + "\nline two", false, 100, "key " + Mask + "\nline two"},
		// fetch() sends a string body as text/plain unless told otherwise.
		{"json sent as text", "text/plain;charset=UTF-8", `{"email":"a@b.c","password":"hunter2"}`, false, 100,
			`{"email":"a@b.c","password":"` + Mask + `"}`},
		{"truncated json sent as text", "text/plain", ` [{"token":"abc"},{"pass`, true, 100, ` [{"token":"` + Mask + `"},{"`},
		// curl -d '{…}' labels a JSON body as a form.
		{"json sent as a form", "application/x-www-form-urlencoded", `{"email":"a@b.c","password":"hunter2=x&y"}`, false, 100,
			`{"email":"a@b.c","password":"` + Mask + `"}`},
		// …which its backend reads as a form: what that reading finds is masked too.
		{"json sent as a form, read as a form", "application/x-www-form-urlencoded", `{"description":"x&password=hunter2"}`, false, 100,
			`{"description":"x&password=` + Mask},
		{"truncated json sent as a form", "application/x-www-form-urlencoded", `{"email":"a@b.c","token":"abc","na`, true, 100,
			`{"email":"a@b.c","token":"` + Mask + `","`},
		{"xml", "application/xml", `<login><user>ann</user><password>hunter2</password></login>`, false, 200,
			`<login><user>ann</user><password>` + Mask + `</password></login>`},
		{"soap, namespaces, attributes, cdata", "application/soap+xml; charset=utf-8",
			`<s:Envelope xmlns:s="x"><s:Body><a:Auth a:token='t1' user="ann"><a:ClientSecret><![CDATA[s</x>]]></a:ClientSecret></a:Auth></s:Body></s:Envelope>`, false, 300,
			`<s:Envelope xmlns:s="x"><s:Body><a:Auth a:token='` + Mask + `' user="ann"><a:ClientSecret>` + Mask + `</a:ClientSecret></a:Auth></s:Body></s:Envelope>`},
		{"xml as text, comments kept, empty element", "text/xml", `<!-- a --><auth><Token/><note>` + key + `</note></auth>`, false, 200,
			`<!-- a --><auth><Token/><note>` + Mask + `</note></auth>`},
		{"nested sensitive element, comment inside one, folded attribute name", "application/xml",
			`<r><secret><secret>a</secret>b</secret><password><!-- </password> -->c</password><l paſsword="d"/></r>`, false, 300,
			`<r><secret>` + Mask + `</secret><password>` + Mask + `</password><l paſsword="` + Mask + `"/></r>`},
		{"truncated inside a secret element", "application/xml", `<a><secret>hunt`, true, 100, `<a><secret>` + Mask},
		{"truncated inside a tag", "application/xml", `<a><b x="1`, true, 100, `<a>`},
		{"binary", "image/png", "\x89PNG", false, 100, "[body of type image/png not captured]"},
		{"capped", "text/plain", strings.Repeat("a", 50), false, 10, "aaaaaaa…"},
		{"empty", "application/json", "", false, 100, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.Body(tt.contentType, []byte(tt.in), tt.truncated, tt.max); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestText(t *testing.T) {
	tests := []struct {
		name, in string
		max      int
		want     string
	}{
		{"clean", "hello", 10, "hello"},
		{"invalid utf-8", "a\xffb", 10, "a\uFFFDb"},
		{"newline", "a\nb", 10, `a\u000ab`},
		{"escape sequence", "\x1b[2J", 20, `\u001b[2J`},
		{"line separator", "a\u2028b", 20, `a\u2028b`},
		{"cut on a rune boundary", "ééééé", 8, "éé…"},
		{"cut while escaping", "\n\n\n\n", 10, `\u000a…`},
		{"zero", "abc", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Text(tt.in, tt.max)
			if got != tt.want {
				t.Errorf("Text(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
			}
			if len(got) > tt.max || !utf8.ValidString(got) {
				t.Errorf("result too long or invalid: %q", got)
			}
		})
	}
}

func TestEndpointURL(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"plain", "https://hooks.example.com/in", "https://hooks.example.com/in"},
		{"query token", "https://hooks.example.com/in?token=s3cret&x=1", "https://hooks.example.com/in"},
		{"fragment", "https://hooks.example.com/in#s3cret", "https://hooks.example.com/in"},
		{"user info", "https://user:s3cret@hooks.example.com:8443/in", "https://hooks.example.com:8443/in"},
		// Decoded, %00 would be a NUL, which Postgres refuses in jsonb.
		{"escaped path", "https://hooks.example.com/in%00x/a%2Fb", "https://hooks.example.com/in%00x/a%2Fb"},
		{"unparsable", "https://hooks.example.com/%zz?token=s3cret", ""},
		{"not absolute", "/in?token=s3cret", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := EndpointURL(tc.in); got != tc.want {
				t.Fatalf("EndpointURL(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// Process logs mask the platform's own bearer tokens in paths; request
// logs of the proxied API keep the backend's paths.
func TestLogPathMasksInvitationTokens(t *testing.T) {
	token := "Xk9_2mQ-abcdefghijklmnopqrstuvwxyz0123456"
	r := httptest.NewRequest("GET", "/invitations/"+token, nil)
	if got := LogPath(r); got != "/invitations/"+Mask {
		t.Errorf("LogPath = %q", got)
	}
	if got := New(Config{}).Path("/v1/invitations/inv_123"); got != "/v1/invitations/inv_123" {
		t.Errorf("a request log's path = %q", got)
	}
}

// A field named like a key is masked in every body format, as the query
// parameter of that name is.
func TestFieldsNamedLikeAKey(t *testing.T) {
	const secret = "AKIAIOSFODNN7EXAMPLEhunter2"
	r := New(Config{})
	for _, tc := range []struct{ ct, body string }{
		{"application/json", `{"key":"` + secret + `"}`},
		{"application/x-www-form-urlencoded", `signing_key=` + secret},
		{"application/x-www-form-urlencoded", `key=` + secret},
		{"application/xml", `<cfg><key>` + secret + `</key></cfg>`},
		{"application/xml", `<cfg signingKey="` + secret + `"/>`},
	} {
		if got := r.Body(tc.ct, []byte(tc.body), false, 8<<10); strings.Contains(got, secret) {
			t.Errorf("%s body %s: the key survives redaction: %s", tc.ct, tc.body, got)
		}
	}
}
