package sampleapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/mail"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/strictjson"
)

// Limits on customer input. They are Stripe's published maximums for the
// same Customer fields, so a client written against Stripe never meets a
// stricter limit here. Lengths count characters (runes), not bytes.
const (
	maxBodyBytes        = 1 << 20 // 1 MB, the /v1 body limit of the platform
	maxEmailLen         = 254
	maxNameLen          = 256
	maxDescriptionLen   = 5000 // Stripe's generic limit for free-text strings
	maxPhoneLen         = 20
	maxMetadataKeys     = 50
	maxMetadataKeyLen   = 40
	maxMetadataValueLen = 500
)

// optString is a string parameter that may be absent. When present, a nil
// value (JSON null or "") unsets the field, as in Stripe.
type optString struct {
	set   bool
	value *string
}

// metadataChange is what a request does to metadata: optionally clear it
// all, then set keys; a key with value "" is deleted.
type metadataChange struct {
	clear bool
	keys  map[string]string
}

// apply returns m changed by the request; m itself is not modified.
func (mc metadataChange) apply(m map[string]string) map[string]string {
	out := map[string]string{}
	if !mc.clear {
		maps.Copy(out, m)
	}
	for k, v := range mc.keys {
		if v == "" {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

// customerParams are the parameters of create and update, parsed and
// validated.
type customerParams struct {
	email, name, description, phone optString
	metadata                        metadataChange
}

// apply sets on c the fields the request named.
func (p customerParams) apply(c *customer) error {
	for _, f := range []struct {
		in  optString
		out **string
	}{{p.email, &c.Email}, {p.name, &c.Name}, {p.description, &c.Description}, {p.phone, &c.Phone}} {
		if f.in.set {
			*f.out = f.in.value
		}
	}
	c.Metadata = p.metadata.apply(c.Metadata)
	if len(c.Metadata) > maxMetadataKeys {
		return apierror.ParameterInvalid("metadata",
			fmt.Sprintf("Metadata can have at most %d keys; this request would leave %d.", maxMetadataKeys, len(c.Metadata)))
	}
	return nil
}

// stringField names a string parameter and how to check it.
type stringField struct {
	dst      *optString
	maxLen   int
	validate func(param, v string) error
}

// fields maps the wire names of the string parameters, which depend on the
// API version (nameField), to their destinations.
func (p *customerParams) fields(nameField string) map[string]stringField {
	return map[string]stringField{
		"email":       {&p.email, maxEmailLen, validateEmail},
		nameField:     {&p.name, maxNameLen, nil},
		"description": {&p.description, maxDescriptionLen, nil},
		"phone":       {&p.phone, maxPhoneLen, nil},
	}
}

// readCustomerParams reads and validates a create or update body, JSON or
// form-encoded. An empty body is a request with no parameters.
func readCustomerParams(w http.ResponseWriter, r *http.Request, c caller) (customerParams, error) {
	body, err := readBody(w, r)
	if err != nil {
		return customerParams{}, err
	}
	p := customerParams{}
	if len(body) == 0 {
		return p, nil
	}
	mediaType, mparams, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		mediaType = ""
	}
	if cs, ok := mparams["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return p, apierror.InvalidRequest("body_invalid", "", "Request bodies must be UTF-8; charset "+cs+" is not supported.")
	}
	switch mediaType {
	case "application/json":
		err = p.parseJSON(body, c.nameField)
	case "application/x-www-form-urlencoded":
		err = p.parseForm(body, c.nameField)
	default:
		err = apierror.InvalidRequest("body_invalid", "",
			"Send the request body as application/json or application/x-www-form-urlencoded.")
	}
	return p, err
}

// readBody reads a request body of at most maxBodyBytes.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, apierror.New(http.StatusRequestEntityTooLarge, apierror.TypeInvalidRequest, "body_too_large",
				fmt.Sprintf("The request body is larger than %d bytes.", maxBodyBytes))
		}
		return nil, apierror.InvalidRequest("body_invalid", "", "The request body could not be read.")
	}
	return body, nil
}

// noBody refuses a body with parameters, for endpoints that take none, as
// create and update refuse an unknown one; an empty body, or an empty JSON
// object or form, is fine.
func noBody(w http.ResponseWriter, r *http.Request, nameField string) error {
	body, err := readBody(w, r)
	if err != nil || len(bytes.TrimSpace(body)) == 0 {
		return err
	}
	var keys []string
	mediaType, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch mediaType {
	case "application/json":
		var m map[string]json.RawMessage
		if err := json.Unmarshal(body, &m); err != nil || m == nil {
			return apierror.InvalidRequest("body_invalid", "", "The request body must be a JSON object.")
		}
		keys = slices.Sorted(maps.Keys(m))
	case "application/x-www-form-urlencoded":
		v, err := url.ParseQuery(string(body))
		if err != nil {
			return apierror.InvalidRequest("body_invalid", "", "The form body could not be parsed: "+err.Error()+".")
		}
		keys = slices.Sorted(maps.Keys(v))
	default:
		return apierror.InvalidRequest("body_invalid", "",
			"Send the request body as application/json or application/x-www-form-urlencoded.")
	}
	if len(keys) > 0 {
		return unknownParam(keys[0], nameField)
	}
	return nil
}

func (p *customerParams) parseJSON(body []byte, nameField string) error {
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&raw); err != nil {
		if _, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
			return apierror.InvalidRequest("body_invalid", "", "The JSON request body must be an object.")
		}
		return apierror.InvalidRequest("body_invalid", "", "The request body is not valid JSON: "+err.Error()+".")
	}
	if raw == nil {
		return apierror.InvalidRequest("body_invalid", "", "The JSON request body must be an object.")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return apierror.InvalidRequest("body_invalid", "", "The request body has data after the JSON object.")
	}
	if err := strictjson.RefuseDuplicateKeys(body); err != nil {
		return err
	}
	if err := strictjson.RefuseUnpairedSurrogates(raw); err != nil {
		return err
	}
	fields := p.fields(nameField)
	for _, key := range slices.Sorted(maps.Keys(raw)) {
		val := raw[key]
		if f, ok := fields[key]; ok {
			// encoding/json silently turns invalid UTF-8 into U+FFFD; refuse
			// it instead of storing something other than what was sent.
			if !utf8.Valid(val) {
				return invalidUTF8(key)
			}
			if isNull(val) {
				*f.dst = optString{set: true}
				continue
			}
			var s string
			if err := json.Unmarshal(val, &s); err != nil {
				return apierror.ParameterInvalid(key, fmt.Sprintf("Invalid %s: expected a string.", key))
			}
			if err := f.set(key, s); err != nil {
				return err
			}
			continue
		}
		if key == "metadata" {
			if err := p.parseJSONMetadata(val); err != nil {
				return err
			}
			continue
		}
		return unknownParam(key, nameField)
	}
	return nil
}

func (p *customerParams) parseJSONMetadata(val json.RawMessage) error {
	if !utf8.Valid(val) {
		return invalidUTF8("metadata")
	}
	var s string
	if isNull(val) || (json.Unmarshal(val, &s) == nil && s == "") {
		p.metadata.clear = true
		return nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(val, &obj); err != nil || obj == nil {
		return apierror.ParameterInvalid("metadata",
			"Invalid metadata: expected an object of string values, or null or \"\" to clear it.")
	}
	p.metadata.keys = make(map[string]string, len(obj))
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		param := "metadata[" + k + "]"
		var v string
		// A null value deletes the key, like "".
		if !isNull(obj[k]) {
			if err := json.Unmarshal(obj[k], &v); err != nil {
				return apierror.ParameterInvalid(param, fmt.Sprintf("Invalid %s: metadata values must be strings.", param))
			}
		}
		if err := p.setMetadata(k, v); err != nil {
			return err
		}
	}
	return nil
}

// parseForm reads Stripe-style form bodies: email=…&metadata[plan]=pro, and
// metadata= (empty) to clear all metadata.
func (p *customerParams) parseForm(body []byte, nameField string) error {
	vals, err := url.ParseQuery(string(body))
	if err != nil {
		return apierror.InvalidRequest("body_invalid", "", "The form-encoded request body is malformed.")
	}
	fields := p.fields(nameField)
	for _, key := range slices.Sorted(maps.Keys(vals)) {
		if len(vals[key]) > 1 {
			return apierror.ParameterInvalid(key, fmt.Sprintf("Parameter %s was sent more than once.", printable(key)))
		}
		v := vals[key][0]
		if f, ok := fields[key]; ok {
			if err := f.set(key, v); err != nil {
				return err
			}
			continue
		}
		if key == "metadata" {
			if v != "" {
				return apierror.ParameterInvalid("metadata",
					"Invalid metadata: send metadata[key]=value, or metadata= (empty) to clear it.")
			}
			p.metadata.clear = true
			continue
		}
		if inner, ok := strings.CutPrefix(key, "metadata["); ok && strings.HasSuffix(inner, "]") {
			if p.metadata.keys == nil {
				p.metadata.keys = map[string]string{}
			}
			if err := p.setMetadata(strings.TrimSuffix(inner, "]"), v); err != nil {
				return err
			}
			continue
		}
		return unknownParam(key, nameField)
	}
	return nil
}

// set validates v and stores it; "" unsets the field.
func (f stringField) set(param, v string) error {
	if v == "" {
		*f.dst = optString{set: true}
		return nil
	}
	if err := validateText(param, v, f.maxLen); err != nil {
		return err
	}
	if f.validate != nil {
		if err := f.validate(param, v); err != nil {
			return err
		}
	}
	*f.dst = optString{set: true, value: &v}
	return nil
}

// setMetadata validates one metadata entry against Stripe's limits.
func (p *customerParams) setMetadata(k, v string) error {
	switch {
	case k == "":
		return apierror.ParameterInvalid("metadata", "Metadata keys must not be empty.")
	case strings.ContainsAny(k, "[]"):
		return apierror.ParameterInvalid("metadata", "Metadata keys must not contain '[' or ']'.")
	}
	if err := validateText("metadata", k, maxMetadataKeyLen); err != nil {
		return apierror.ParameterInvalid("metadata",
			fmt.Sprintf("Invalid metadata key: keys must be valid UTF-8 without NUL and at most %d characters.", maxMetadataKeyLen))
	}
	if err := validateText("metadata["+k+"]", v, maxMetadataValueLen); err != nil {
		return err
	}
	if p.metadata.keys == nil {
		p.metadata.keys = map[string]string{}
	}
	p.metadata.keys[k] = v
	return nil
}

// validateText checks what every stored string must satisfy. Postgres text
// and jsonb cannot hold NUL, so catching it here keeps it a 400, not a 500.
func validateText(param, v string, maxLen int) error {
	if err := apierror.CheckText(param, v); err != nil {
		return err
	}
	if n := utf8.RuneCountInString(v); n > maxLen {
		return apierror.ParameterInvalid(param,
			fmt.Sprintf("Invalid %s: must be at most %d characters (got %d).", param, maxLen, n))
	}
	return nil
}

// validateEmail accepts a bare address only: "Ann <ann@example.com>" parses
// but is not an email address, so the parsed address must equal the input.
func validateEmail(param, v string) error {
	addr, err := mail.ParseAddress(v)
	if err != nil || addr.Address != v {
		return apierror.ParameterInvalid(param, fmt.Sprintf("Invalid email address: %s.", v))
	}
	return nil
}

func invalidUTF8(param string) error {
	return apierror.ParameterInvalid(param, fmt.Sprintf("Invalid %s: strings must be valid UTF-8.", param))
}

// unknownParam names the parameter, and points at the rename when the caller
// used the other API version's name for the customer's display name.
func unknownParam(key, nameField string) error {
	msg := fmt.Sprintf("Received unknown parameter: %s.", printable(key))
	switch {
	case key == "name" && nameField == "full_name":
		msg += " In API version " + apiVersionBeforeRename + " and earlier the customer's name is full_name."
	case key == "full_name" && nameField == "name":
		msg += " Since API version " + versionNameRenamed + " full_name is called name."
	}
	return apierror.InvalidRequest("parameter_unknown", printable(key), msg)
}

// apiVersionBeforeRename is the last version with full_name, for messages.
const apiVersionBeforeRename = "2026-06-01"

// printable keeps invalid bytes in a parameter name out of error messages.
func printable(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }
