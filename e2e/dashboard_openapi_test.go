package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"

	"github.com/gatehouse/gatehouse/internal/ids"
)

// TestOpenAPIAgainstTheLiveAPI reads the OpenAPI document the control plane
// serves at /openapi.json and checks it against the running platform
// through the gateway: every documented operation is served (it answers
// something other than route_missing or method_not_allowed) and its answer
// matches the documented responses; every other method on a documented
// path, and paths below them, are not served.
func TestOpenAPIAgainstTheLiveAPI(t *testing.T) {
	resp, err := http.Get(stack.Control.URL() + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("/openapi.json: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	doc, err := libopenapi.NewDocument(raw)
	if err != nil {
		t.Fatal(err)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		t.Fatalf("document invalid: %v", verrs)
	}
	var spec struct {
		Paths map[string]map[string]json.RawMessage
	}
	if err := json.Unmarshal(raw, &spec); err != nil {
		t.Fatal(err)
	}

	tn := seed(t)
	// The sweep sends more requests than the sandbox's per-key rate allows:
	// this organisation's plan lifts it, so no answer is a 429.
	if _, err := stack.CLI(context.Background(), "limits", "set", "--org", tn.OrgID, "--env", "sandbox", "--policy", "per-key",
		"--rate", "10000/1s"); err != nil {
		t.Fatal(err)
	}
	prefixRe := regexp.MustCompile(`^/v1/([a-z-]+)/\{id\}`)
	prefixes := map[string]string{"customers": ids.Customer, "events": ids.Event, "webhook-endpoints": ids.WebhookEndpoint,
		"webhook-deliveries": ids.Delivery, "request-logs": ids.Request}
	concrete := func(p string) string {
		m := prefixRe.FindStringSubmatch(p)
		if m == nil {
			return p
		}
		prefix, ok := prefixes[m[1]]
		if !ok {
			t.Fatalf("no id prefix known for %s", p)
		}
		return strings.Replace(p, "{id}", ids.New(prefix), 1)
	}
	send := func(method, path string) (*http.Request, *http.Response, map[string]any) {
		t.Helper()
		var body io.Reader
		if method == "POST" {
			body = strings.NewReader(`{}`)
		}
		req, _ := http.NewRequest(method, stack.Gateway.URL()+path, body)
		req.Header.Set("Authorization", "Bearer "+tn.SandboxKey)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			t.Fatalf("%s %s: rate limited despite the plan: %s", method, path, b)
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
		var out map[string]any
		_ = json.Unmarshal(b, &out)
		return req, resp, out
	}
	code := func(body map[string]any) string {
		e, _ := body["error"].(map[string]any)
		c, _ := e["code"].(string)
		return c
	}

	methods := []string{"GET", "POST", "DELETE", "PUT", "PATCH"}
	for p, ops := range spec.Paths {
		for _, m := range methods {
			documented := ops[strings.ToLower(m)] != nil
			path := concrete(p)
			req, resp, body := send(m, path)
			c := code(body)
			if documented {
				if c == "route_missing" || c == "method_not_allowed" || resp.StatusCode == 405 {
					t.Errorf("documented %s %s is not served: %d %s", m, p, resp.StatusCode, c)
					continue
				}
				if ok, verrs := v.ValidateHttpResponse(req, resp); !ok {
					for _, e := range verrs {
						t.Errorf("%s %s answered %d, which the document does not describe: %s (%s)", m, p, resp.StatusCode, e.Message, e.Reason)
					}
				}
				continue
			}
			if c != "route_missing" && c != "method_not_allowed" {
				t.Errorf("undocumented %s %s is served: %d %v", m, p, resp.StatusCode, body)
			}
		}
		// Nothing is served below a documented path unless documented (a
		// list's path continues with its {id}).
		if _, hasID := spec.Paths[p+"/{id}"]; hasID {
			continue
		}
		below := concrete(p) + "/undocumented"
		if _, resp, body := send("GET", below); code(body) != "route_missing" && code(body) != "method_not_allowed" {
			t.Errorf("undocumented GET %s is served: %d %v", below, resp.StatusCode, body)
		}
	}
	// The routes the gateway names in its request log templates are all
	// documented.
	caddyfile, err := os.ReadFile(filepath.Join(Root(), "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tpl := range regexp.MustCompile(`/v1/[a-z-]+(?:/\{id\})?(?:/[a-z-]+)?`).FindAllString(string(caddyfile), -1) {
		if _, ok := spec.Paths[tpl]; !ok && strings.Contains(tpl, "{id}") {
			t.Errorf("the Caddyfile's route template %s is not documented", tpl)
		}
	}
	if len(spec.Paths) < 15 {
		t.Fatalf("only %d paths documented", len(spec.Paths))
	}
}
