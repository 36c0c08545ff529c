package dashboard

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"

	"github.com/gatehouse/gatehouse/internal/apierror"
)

// TestOpenAPIDocumentIsValid runs the document through a real OpenAPI 3.1
// validator (libopenapi-validator checks it against the specification's
// JSON Schema).
func TestOpenAPIDocumentIsValid(t *testing.T) {
	doc, err := libopenapi.NewDocument(OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	if v := doc.GetVersion(); v != "3.1.0" {
		t.Fatalf("openapi version %q, want 3.1.0", v)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("building validator: %v", errs)
	}
	ok, verrs := v.ValidateDocument()
	for _, e := range verrs {
		t.Errorf("%s: %s", e.Message, e.Reason)
		for _, se := range e.SchemaValidationErrors {
			t.Errorf("  %s at %s (line %d)", se.Reason, se.FieldPath, se.Line)
		}
	}
	if !ok {
		t.Fatal("the OpenAPI document is not valid")
	}
	// The validator does refuse a broken document (a guard against a
	// validator that accepts anything).
	broken := strings.Replace(string(OpenAPI()), `"in": "query"`, `"in": "body"`, 1)
	bdoc, err := libopenapi.NewDocument([]byte(broken))
	if err != nil {
		t.Fatal(err)
	}
	bv, _ := validator.NewValidator(bdoc)
	if ok, _ := bv.ValidateDocument(); ok {
		t.Fatal("the validator accepted a parameter in the body (OpenAPI 2 style)")
	}
	m, merrs := doc.BuildV3Model()
	if merrs != nil {
		t.Fatalf("building the model: %v", merrs)
	}
	// Every operation has an id, a summary, a tag and an error response;
	// every $ref resolves (BuildV3Model would have failed otherwise).
	for p, item := range m.Model.Paths.PathItems.FromOldest() {
		for method, op := range item.GetOperations().FromOldest() {
			if op.OperationId == "" || op.Summary == "" || len(op.Tags) == 0 {
				t.Errorf("%s %s: operationId, summary and tags are required", method, p)
			}
			if op.Responses.Codes.GetOrZero("400") == nil {
				t.Errorf("%s %s: no 400 error response", method, p)
			}
			// The gateway answers 502, 503 and 504 too (upstream down, a
			// store down), so server errors are described as a range.
			if op.Responses.Codes.GetOrZero("5XX") == nil || op.Responses.Codes.GetOrZero("500") != nil {
				t.Errorf("%s %s: server errors must be one 5XX response, not 500 alone", method, p)
			}
		}
	}
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// servedRoutes reads the /v1 routes the services register, from their
// source: http.ServeMux patterns such as "GET /v1/customers/{id}".
func servedRoutes(t *testing.T) []string {
	t.Helper()
	re := regexp.MustCompile(`"(GET|POST|DELETE|PUT|PATCH) (/v1/[^"]*)"`)
	var out []string
	for _, dir := range []string{"sampleapi", "controlplane"} {
		err := filepath.WalkDir(filepath.Join(repoRoot(), dir), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			for _, m := range re.FindAllStringSubmatch(string(b), -1) {
				// Doc comments show example patterns; only calls count.
				line := lineOf(string(b), m[0])
				if strings.HasPrefix(strings.TrimSpace(line), "//") {
					continue
				}
				r := m[1] + " " + m[2]
				if !slices.Contains(out, r) {
					out = append(out, r)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(out)
	return out
}

func lineOf(src, needle string) string {
	i := strings.Index(src, needle)
	start := strings.LastIndexByte(src[:i], '\n') + 1
	return src[start:i]
}

// documentedRoutes are the document's operations as mux patterns.
func documentedRoutes(t *testing.T) []string {
	t.Helper()
	var doc struct {
		Paths map[string]map[string]json.RawMessage
	}
	if err := json.Unmarshal(OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	var out []string
	for p, ops := range doc.Paths {
		for m := range ops {
			out = append(out, strings.ToUpper(m)+" "+p)
		}
	}
	slices.Sort(out)
	return out
}

// TestOpenAPIMatchesTheRegisteredRoutes: every route a service registers is
// documented, and every documented route is registered. The end-to-end
// test checks the same against the running gateway.
func TestOpenAPIMatchesTheRegisteredRoutes(t *testing.T) {
	served, documented := servedRoutes(t), documentedRoutes(t)
	if len(served) < 20 {
		t.Fatalf("found only %d registered routes: %v", len(served), served)
	}
	for _, r := range served {
		if !slices.Contains(documented, r) {
			t.Errorf("served but not documented: %s", r)
		}
	}
	for _, r := range documented {
		if !slices.Contains(served, r) {
			t.Errorf("documented but not served: %s", r)
		}
	}
}

// TestErrorCatalogueInTheDocument: the error object's documented codes and
// the catalogue agree on the types.
func TestOpenAPIErrorTypes(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]struct {
					Properties map[string]struct {
						Enum []string
					}
				}
			}
		}
	}
	if err := json.Unmarshal(OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	types := doc.Components.Schemas["Error"].Properties["error"].Properties["type"].Enum
	for _, c := range apierror.Codes {
		if !slices.Contains(types, string(c.Type)) {
			t.Errorf("code %s has type %s, which the document's Error schema lacks", c.Code, c.Type)
		}
	}
}

// TestReferenceShowsConstantsAsJSON: the reference page writes a constant
// as the response carries it, so DeletedObject's deleted reads true, a
// boolean, not "true", a string.
func TestReferenceShowsConstantsAsJSON(t *testing.T) {
	if err := loadOpenAPI(); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"object": `"customer"`, "deleted": "true"}
	got := map[string]string{}
	for _, tag := range apiRef {
		for _, op := range tag.Ops {
			if op.ID != "deleteCustomer" && op.ID != "getCustomer" {
				continue
			}
			for _, f := range op.ResultFields {
				if _, ok := want[f.Name]; ok && (f.Name == "deleted") == (op.ID == "deleteCustomer") {
					got[f.Name] = f.Type
				}
			}
		}
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s is shown as %s, want %s", name, got[name], w)
		}
	}
}

// TestReferenceExamplesSendTheRequiredParameters: each operation's curl
// example sends its required body parameters, so that copying it does not
// end in parameter_missing.
func TestReferenceExamplesSendTheRequiredParameters(t *testing.T) {
	if err := loadOpenAPI(); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"createEvent":                 {"type=…", "'data[key]=…'"},
		"createWebhookEndpoint":       {"'enabled_events[]=…'", "url=…"},
		"recoverWebhookEndpoint":      {"since=…"},
		"createCustomer":              nil,
		"rotateWebhookEndpointSecret": nil,
	}
	for _, tag := range apiRef {
		for _, op := range tag.Ops {
			w, ok := want[op.ID]
			if !ok {
				continue
			}
			delete(want, op.ID)
			slices.Sort(w)
			got := slices.Sorted(slices.Values(op.Example))
			if !slices.Equal(got, w) {
				t.Errorf("%s: example sends %q, want %q", op.ID, got, w)
			}
		}
	}
	for id := range want {
		t.Errorf("operation %s not in the reference", id)
	}
}
