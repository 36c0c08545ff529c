package dashboard

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"

	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/apiversion"
)

// OpenAPI is the OpenAPI 3.1 document of the whole /v1 API, as served at
// /openapi.json and rendered at /docs/api.
func OpenAPI() []byte {
	b, _ := assets.ReadFile("openapi/openapi.json")
	return b
}

// apiDoc is the part of the OpenAPI document the reference page renders.
type apiDoc struct {
	Info struct {
		Title, Version, Description string
	}
	Paths      map[string]map[string]json.RawMessage
	Components struct {
		Schemas    map[string]schema
		Parameters map[string]param
		Responses  map[string]struct {
			Description string
		}
	}
}

type param struct {
	Ref         string `json:"$ref"`
	Name        string
	In          string
	Required    bool
	Description string
	Schema      schema
}

type schema struct {
	Ref         string `json:"$ref"`
	Type        any
	Description string
	Properties  map[string]schema
	Required    []string
	Enum        []any
	Const       any
	Items       *schema
	Pattern     string
	Format      string
}

type operation struct {
	OperationID string `json:"operationId"`
	Summary     string
	Description string
	Tags        []string
	Parameters  []param
	RequestBody *struct {
		Content map[string]struct{ Schema schema }
	} `json:"requestBody"`
	Responses map[string]struct {
		Ref         string `json:"$ref"`
		Description string
		Content     map[string]struct{ Schema schema }
	}
}

// refOp is an operation ready for the template.
type refOp struct {
	Method, Path, ID, Summary, Description string
	Params                                 []field
	Body                                   []field
	BodyName                               string
	Result                                 string
	ResultFields                           []field
	Errors                                 []string
	// Example is the curl example's -d arguments: one per required body
	// parameter, form-encoded, so that the example is a request the API
	// takes once the … are filled in.
	Example []string
}

type field struct {
	Name, Type, In, Description string
	Required                    bool
}

type refTag struct {
	Name string
	Ops  []refOp
}

var (
	apiRef  []refTag
	apiInfo struct{ Title, Version, Description string }
)

// loadOpenAPI parses the embedded document once, at start-up: a broken
// document fails New rather than a page.
func loadOpenAPI() error {
	if apiRef != nil {
		return nil
	}
	var doc apiDoc
	if err := json.Unmarshal(OpenAPI(), &doc); err != nil {
		return fmt.Errorf("dashboard: parsing openapi.json: %w", err)
	}
	apiInfo = doc.Info
	byTag := map[string][]refOp{}
	var tags []string
	paths := make([]string, 0, len(doc.Paths))
	for p := range doc.Paths {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		for _, m := range []string{"get", "post", "delete"} {
			raw, ok := doc.Paths[p][m]
			if !ok {
				continue
			}
			var o operation
			if err := json.Unmarshal(raw, &o); err != nil {
				return fmt.Errorf("dashboard: openapi %s %s: %w", m, p, err)
			}
			ro := refOp{Method: strings.ToUpper(m), Path: p, ID: o.OperationID, Summary: o.Summary, Description: o.Description}
			for _, pr := range o.Parameters {
				if pr.Ref != "" {
					pr = doc.Components.Parameters[strings.TrimPrefix(pr.Ref, "#/components/parameters/")]
				}
				ro.Params = append(ro.Params, field{Name: pr.Name, In: pr.In, Type: typeName(pr.Schema), Description: pr.Description, Required: pr.Required})
			}
			if o.RequestBody != nil {
				for _, ct := range []string{"application/json", "application/x-www-form-urlencoded"} {
					if c, ok := o.RequestBody.Content[ct]; ok {
						name, fs := fields(doc, c.Schema)
						ro.BodyName, ro.Body = name, fs
						ro.Example = formExample(fs)
						break
					}
				}
			}
			codes := make([]string, 0, len(o.Responses))
			for code, r := range o.Responses {
				if code == "200" {
					if c, ok := r.Content["application/json"]; ok {
						ro.Result, ro.ResultFields = fields(doc, c.Schema)
					}
					continue
				}
				codes = append(codes, code)
			}
			sort.Strings(codes)
			ro.Errors = codes
			tag := "Other"
			if len(o.Tags) > 0 {
				tag = o.Tags[0]
			}
			if !slices.Contains(tags, tag) {
				tags = append(tags, tag)
			}
			byTag[tag] = append(byTag[tag], ro)
		}
	}
	for _, t := range tags {
		apiRef = append(apiRef, refTag{Name: t, Ops: byTag[t]})
	}
	return nil
}

func fields(doc apiDoc, s schema) (string, []field) {
	name := ""
	if s.Ref != "" {
		name = strings.TrimPrefix(s.Ref, "#/components/schemas/")
		s = doc.Components.Schemas[name]
	}
	keys := make([]string, 0, len(s.Properties))
	for k := range s.Properties {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		// id and object first, as the objects print them.
		rank := func(k string) int {
			switch k {
			case "id":
				return 0
			case "object":
				return 1
			}
			return 2
		}
		if rank(keys[i]) != rank(keys[j]) {
			return rank(keys[i]) < rank(keys[j])
		}
		return keys[i] < keys[j]
	})
	out := make([]field, 0, len(keys))
	for _, k := range keys {
		p := s.Properties[k]
		out = append(out, field{Name: k, Type: typeName(p), Description: p.Description, Required: slices.Contains(s.Required, k)})
	}
	return name, out
}

// formExample is a curl -d argument for each required field, in form
// encoding: a list as name[]=…, an object as name[key]=….
func formExample(fs []field) []string {
	var out []string
	for _, f := range fs {
		switch {
		case !f.Required:
		case strings.HasPrefix(f.Type, "array"):
			out = append(out, "'"+f.Name+"[]=…'")
		case f.Type == "object":
			out = append(out, "'"+f.Name+"[key]=…'")
		default:
			out = append(out, f.Name+"=…")
		}
	}
	return out
}

func typeName(s schema) string {
	if s.Ref != "" {
		return strings.TrimPrefix(s.Ref, "#/components/schemas/")
	}
	if s.Const != nil {
		// As JSON, so the constant reads as the response carries it:
		// "customer" is a string, true a boolean.
		b, _ := json.Marshal(s.Const)
		return string(b)
	}
	var t string
	switch v := s.Type.(type) {
	case string:
		t = v
	case []any:
		var parts []string
		for _, x := range v {
			parts = append(parts, fmt.Sprint(x))
		}
		t = strings.Join(parts, " | ")
	}
	if t == "array" && s.Items != nil {
		t = "array of " + typeName(*s.Items)
	}
	if len(s.Enum) > 0 {
		var vs []string
		for _, e := range s.Enum {
			if e != nil {
				vs = append(vs, fmt.Sprint(e))
			}
		}
		t += " (" + strings.Join(vs, ", ") + ")"
	}
	return t
}

func (d *Dashboard) docsIndex(w http.ResponseWriter, r *http.Request, s *Session) error {
	d.render(w, r, s, http.StatusOK, "docs_index.html", "Documentation", "docs", nil)
	return nil
}

func (d *Dashboard) docsQuickstart(w http.ResponseWriter, r *http.Request, s *Session) error {
	d.render(w, r, s, http.StatusOK, "docs_quickstart.html", "Quickstart", "docs", map[string]any{
		"Version": apiversion.Latest(),
	})
	return nil
}

func (d *Dashboard) docsAPI(w http.ResponseWriter, r *http.Request, s *Session) error {
	d.render(w, r, s, http.StatusOK, "docs_api.html", "API reference", "docs", map[string]any{
		"Info": apiInfo, "Tags": apiRef, "Versions": apiversion.Supported, "Changes": apiversion.Changes,
	})
	return nil
}

func (d *Dashboard) docsErrors(w http.ResponseWriter, r *http.Request, s *Session) error {
	type group struct {
		Type  apierror.Type
		Codes []apierror.Code
	}
	var groups []group
	for _, c := range apierror.Codes {
		i := slices.IndexFunc(groups, func(g group) bool { return g.Type == c.Type })
		if i < 0 {
			groups = append(groups, group{Type: c.Type})
			i = len(groups) - 1
		}
		groups[i].Codes = append(groups[i].Codes, c)
	}
	d.render(w, r, s, http.StatusOK, "docs_errors.html", "Error codes", "docs", map[string]any{"Groups": groups})
	return nil
}

func (d *Dashboard) docsWebhooks(w http.ResponseWriter, r *http.Request, s *Session) error {
	d.render(w, r, s, http.StatusOK, "docs_webhooks.html", "Verifying webhook signatures", "docs", nil)
	return nil
}

func (d *Dashboard) openAPIJSON(w http.ResponseWriter, r *http.Request, s *Session) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Header().Set("Access-Control-Allow-Origin", "*")
	_, _ = w.Write(OpenAPI())
	return nil
}
