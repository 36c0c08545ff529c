package router

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/strictjson"
)

// Params are a request's body parameters as JSON values, whether the body
// was a JSON object or a Stripe-style form: form values become JSON strings
// and bracketed names nest (data[address][city]=Paris, enabled_events[]=a,
// enabled_events[0]=a, metadata[plan]=pro).
type Params map[string]json.RawMessage

// ReadParams reads a JSON or form-encoded body; an empty body has no
// parameters.
func ReadParams(w http.ResponseWriter, r *http.Request) (Params, error) {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, apierror.New(http.StatusRequestEntityTooLarge, apierror.TypeInvalidRequest, "body_too_large",
				fmt.Sprintf("The request body is larger than %d bytes.", MaxBodyBytes))
		}
		return nil, apierror.InvalidRequest("body_invalid", "", "The request body could not be read.")
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return Params{}, nil
	}
	if !utf8.Valid(raw) {
		return nil, apierror.InvalidRequest("body_invalid", "", "The request body must be valid UTF-8.")
	}
	mediaType, mparams, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		mediaType = ""
	}
	if cs, ok := mparams["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return nil, apierror.InvalidRequest("body_invalid", "", "Request bodies must be UTF-8; charset "+cs+" is not supported.")
	}
	switch mediaType {
	case "application/json":
		return parseJSON(raw)
	case "application/x-www-form-urlencoded":
		vals, err := url.ParseQuery(string(raw))
		if err != nil {
			return nil, apierror.InvalidRequest("body_invalid", "", "The form-encoded request body is malformed.")
		}
		return parseForm(vals)
	}
	return nil, apierror.InvalidRequest("body_invalid", "",
		"Send the request body as application/json or application/x-www-form-urlencoded.")
}

// ReadBody reads the parameters of an endpoint that takes them in the body
// only: it refuses any query parameter and any body parameter other than
// allowed (none when allowed is empty).
func ReadBody(w http.ResponseWriter, r *http.Request, allowed ...string) (Params, error) {
	if err := NoQuery(r); err != nil {
		return nil, err
	}
	p, err := ReadParams(w, r)
	if err != nil {
		return nil, err
	}
	if err := p.Only(allowed...); err != nil {
		return nil, err
	}
	return p, nil
}

func parseJSON(raw []byte) (Params, error) {
	var p Params
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&p); err != nil {
		if _, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
			return nil, apierror.InvalidRequest("body_invalid", "", "The JSON request body must be an object.")
		}
		return nil, apierror.InvalidRequest("body_invalid", "", "The request body is not valid JSON: "+err.Error()+".")
	}
	if p == nil {
		return nil, apierror.InvalidRequest("body_invalid", "", "The JSON request body must be an object.")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, apierror.InvalidRequest("body_invalid", "", "The request body has data after the JSON object.")
	}
	if err := strictjson.RefuseDuplicateKeys(raw); err != nil {
		return nil, err
	}
	if err := strictjson.RefuseUnpairedSurrogates(p); err != nil {
		return nil, err
	}
	return p, nil
}

// parseForm turns form values into the same shape as a JSON body.
func parseForm(vals url.Values) (Params, error) {
	root := map[string]any{}
	for _, key := range slices.Sorted(maps.Keys(vals)) {
		path, ok := splitFormKey(key)
		if !ok {
			return nil, apierror.ParameterInvalid(Printable(key),
				fmt.Sprintf("Malformed parameter name %q: use name, name[key] or name[] only.", Printable(key)))
		}
		if !utf8.ValidString(key) || slices.ContainsFunc(vals[key], func(v string) bool { return !utf8.ValidString(v) }) {
			// JSON encoding would turn the bytes into U+FFFD silently.
			return nil, apierror.ParameterInvalid(Printable(path[0]),
				fmt.Sprintf("Parameter %s is not valid UTF-8 once percent-decoded.", Printable(key)))
		}
		conflict := apierror.ParameterInvalid(path[0],
			fmt.Sprintf("Parameter %s is sent both as a value and as a list or object.", Printable(key)))
		vs := vals[key]
		last := path[len(path)-1]
		if last == "" { // name[]=a&name[]=b: a list
			node, err := walk(root, path[:len(path)-2], conflict)
			if err != nil {
				return nil, err
			}
			name := path[len(path)-2]
			list, _ := node[name].([]any)
			if _, exists := node[name]; exists && list == nil {
				return nil, conflict
			}
			for _, v := range vs {
				list = append(list, v)
			}
			node[name] = list
			continue
		}
		if len(vs) > 1 {
			return nil, apierror.ParameterInvalid(path[0],
				fmt.Sprintf("Parameter %s was sent more than once; send a list as %s[].", Printable(key), Printable(key)))
		}
		node, err := walk(root, path[:len(path)-1], conflict)
		if err != nil {
			return nil, err
		}
		if _, exists := node[last]; exists {
			return nil, conflict
		}
		node[last] = vs[0]
	}
	p := make(Params, len(root))
	for k, v := range root {
		// Inside a parameter, name[a][0]=x&name[a][1]=y is a list; the
		// parameter itself stays an object until its reader asks for a list
		// (Params.Strings): metadata[0]=x is metadata with the key "0".
		if m, ok := v.(map[string]any); ok {
			for k, c := range m {
				m[k] = indexedToLists(c)
			}
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("encoding form parameter: %w", err)
		}
		p[k] = b
	}
	return p, nil
}

// walk descends root along path, creating objects as needed.
func walk(root map[string]any, path []string, conflict error) (map[string]any, error) {
	node := root
	for _, seg := range path {
		if seg == "" {
			return nil, conflict // name[][x]: lists of objects take indexes
		}
		child, exists := node[seg]
		if !exists {
			m := map[string]any{}
			node[seg] = m
			node = m
			continue
		}
		m, ok := child.(map[string]any)
		if !ok {
			return nil, conflict
		}
		node = m
	}
	return node, nil
}

// indexedToLists turns objects keyed 0, 1, …, n-1 (name[0]=a&name[1]=b)
// into lists, recursively.
func indexedToLists(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	for k, c := range m {
		m[k] = indexedToLists(c)
	}
	list := make([]any, len(m))
	for k, c := range m {
		i, err := strconv.Atoi(k)
		if err != nil || i < 0 || i >= len(m) || strconv.Itoa(i) != k {
			return m
		}
		list[i] = c
	}
	return list
}

// indexedList is a parameter sent in a form as a list with indexes
// (name[0]=a&name[1]=b): an object keyed 0, 1, …, n-1, in order.
func indexedList(m map[string]string) ([]string, bool) {
	if len(m) == 0 {
		return nil, false
	}
	list := make([]string, len(m))
	for k, v := range m {
		i, err := strconv.Atoi(k)
		if err != nil || i < 0 || i >= len(m) || strconv.Itoa(i) != k {
			return nil, false
		}
		list[i] = v
	}
	return list, true
}

// splitFormKey splits "a[b][c]" into a, b, c and "a[]" into a, "".
func splitFormKey(key string) ([]string, bool) {
	name, rest, _ := strings.Cut(key, "[")
	if name == "" || strings.Contains(name, "]") {
		return nil, false
	}
	path := []string{name}
	if rest == "" && !strings.Contains(key, "[") {
		return path, true
	}
	rest = "[" + rest
	for rest != "" {
		if rest[0] != '[' {
			return nil, false
		}
		seg, after, ok := strings.Cut(rest[1:], "]")
		if !ok || strings.Contains(seg, "[") {
			return nil, false
		}
		if seg == "" && after != "" {
			return nil, false
		}
		path = append(path, seg)
		rest = after
	}
	return path, true
}

// Only refuses parameters other than allowed.
func (p Params) Only(allowed ...string) error {
	for _, k := range slices.Sorted(maps.Keys(p)) {
		if !slices.Contains(allowed, k) {
			return UnknownParam(k)
		}
	}
	return nil
}

// Str returns a string parameter; present is false when it was not sent,
// s is nil when it was sent as null.
func (p Params) Str(name string) (s *string, present bool, err error) {
	raw, ok := p[name]
	if !ok {
		return nil, false, nil
	}
	if IsNull(raw) {
		return nil, true, nil
	}
	var v string
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, true, apierror.ParameterInvalid(name, fmt.Sprintf("Invalid %s: expected a string.", name))
	}
	return &v, true, nil
}

// UnknownParam is the error for a parameter the endpoint does not take.
func UnknownParam(key string) error {
	return apierror.InvalidRequest("parameter_unknown", Printable(key),
		fmt.Sprintf("Received unknown parameter: %s.", Printable(key)))
}

// NoQuery refuses query parameters on endpoints that take none (POST
// parameters belong in the body), so a misplaced one is not ignored.
func NoQuery(r *http.Request) error {
	for _, key := range slices.Sorted(maps.Keys(r.URL.Query())) {
		return UnknownParam(key)
	}
	return nil
}

// Printable keeps invalid bytes in a parameter name out of error messages.
func Printable(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// IsNull says whether a parameter was sent as JSON null.
func IsNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// Bool returns a boolean parameter: true/false, or the strings "true"
// and "false" (form bodies).
func (p Params) Bool(name string) (v, present bool, err error) {
	raw, ok := p[name]
	if !ok {
		return false, false, nil
	}
	var s string
	switch {
	case IsNull(raw): // Unmarshal would leave v false
	case json.Unmarshal(raw, &v) == nil:
		return v, true, nil
	case json.Unmarshal(raw, &s) == nil && (s == "true" || s == "false"):
		return s == "true", true, nil
	}
	return false, true, apierror.ParameterInvalid(name, fmt.Sprintf("Invalid %s: expected true or false.", name))
}

// Int returns a whole-number parameter: a JSON integer or a decimal
// string (form bodies).
func (p Params) Int(name string) (v int64, present bool, err error) {
	raw, ok := p[name]
	if !ok {
		return 0, false, nil
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		s = string(bytes.TrimSpace(raw))
	}
	v, err = strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, true, apierror.ParameterInvalid(name, fmt.Sprintf("Invalid %s: expected a whole number.", name))
	}
	return v, true, nil
}

// Strings returns a list-of-strings parameter (JSON array; form name[] or
// name[0]).
func (p Params) Strings(name string) (v []string, present bool, err error) {
	raw, ok := p[name]
	if !ok {
		return nil, false, nil
	}
	if err := json.Unmarshal(raw, &v); err == nil && v != nil {
		return v, true, nil
	}
	var m map[string]string
	if json.Unmarshal(raw, &m) == nil {
		if v, ok := indexedList(m); ok {
			return v, true, nil
		}
	}
	return nil, true, apierror.ParameterInvalid(name,
		fmt.Sprintf("Invalid %s: expected a list of strings (JSON array, or %s[]=… in a form).", name, name))
}

// WriteJSON writes v as the JSON response with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own types reach here; failing to encode them is a bug.
		apierror.Write(w, fmt.Errorf("encoding response: %w", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// List is the list envelope of DESIGN §5.
type List[T any] struct {
	Object  string `json:"object"` // "list"
	URL     string `json:"url"`
	HasMore bool   `json:"has_more"`
	Data    []T    `json:"data"`
}

// NewList is the envelope of one page of the list at url.
func NewList[T any](url string, data []T, hasMore bool) List[T] {
	if data == nil {
		data = []T{}
	}
	return List[T]{Object: "list", URL: url, HasMore: hasMore, Data: data}
}
