package events

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/gatehouse/gatehouse/internal/apiversion"
	"github.com/gatehouse/gatehouse/internal/wire"
)

// versionNameRenamed is the API version that renamed the customer's
// full_name to name (internal/apiversion.Changes).
const versionNameRenamed = "2026-11-01"

// PayloadFor is the webhook body for e as an endpoint pinned to
// endpointVersion ("" for none) receives it (DESIGN §8: the public event
// object, exactly what GET /v1/events/{id} shows). When the endpoint pins
// an API version other than the event's, the body is rendered in the
// endpoint's version: api_version says so and data follows that version's
// shapes. The deliverer sends it; the dashboard shows it.
func PayloadFor(e wire.Event, endpointVersion string) ([]byte, error) {
	obj := Payload(e)
	if endpointVersion != "" && endpointVersion != e.APIVersion && apiversion.Valid(endpointVersion) {
		data, err := convertData(e.Data, e.APIVersion, endpointVersion)
		if err != nil {
			return nil, err
		}
		obj.APIVersion = endpointVersion
		obj.Data = data
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("encoding event %s: %w", e.ID, err)
	}
	return b, nil
}

// PayloadVersionSQL is, in SQL, the API version the webhook endpoint row
// ep (a table alias) receives payloads in, for PayloadFor: its own pin,
// else its organisation's version (as Stripe renders an unpinned
// endpoint's events in the account's version, so a request trying a newer
// version does not change what the receivers get), else empty (the event's
// own version: the organisation has made no request yet).
func PayloadVersionSQL(ep string) string {
	return `COALESCE(` + ep + `.api_version, (SELECT o.api_version FROM organizations o WHERE o.id = ` + ep + `.organization_id), '')`
}

// convertData rewrites data ({"object": {...}, "previous_attributes": …})
// from version from to version to. Only the changes listed in
// internal/apiversion need handling; unknown objects pass unchanged.
func convertData(data json.RawMessage, from, to string) (json.RawMessage, error) {
	if from == "" {
		from = apiversion.Latest()
	}
	var rename [2]string
	switch {
	case !apiversion.Before(from, versionNameRenamed) && apiversion.Before(to, versionNameRenamed):
		rename = [2]string{"name", "full_name"}
	case apiversion.Before(from, versionNameRenamed) && !apiversion.Before(to, versionNameRenamed):
		rename = [2]string{"full_name", "name"}
	default:
		return data, nil
	}
	fields, err := orderedObject(data)
	if err != nil {
		return data, nil // not an object: nothing we know how to convert
	}
	var obj struct {
		Object string `json:"object"`
	}
	for _, f := range fields {
		if f.key == "object" {
			_ = json.Unmarshal(f.value, &obj)
		}
	}
	if obj.Object != "customer" {
		return data, nil
	}
	for i, f := range fields {
		if f.key != "object" && f.key != "previous_attributes" {
			continue
		}
		inner, err := orderedObject(f.value)
		if err != nil {
			continue
		}
		fields[i].value = encodeObject(renameField(inner, rename[0], rename[1]))
	}
	return encodeObject(fields), nil
}

// renameField renames from to to. A member already named to, which from's
// version does not define (data an event's sender wrote), gives way: one
// object never carries a name twice.
func renameField(fields []field, from, to string) []field {
	has := false
	for _, f := range fields {
		has = has || f.key == from
	}
	if !has {
		return fields
	}
	out := fields[:0]
	for _, f := range fields {
		switch f.key {
		case to:
			continue
		case from:
			f.key = to
		}
		out = append(out, f)
	}
	return out
}

type field struct {
	key   string
	value json.RawMessage
}

// orderedObject splits a JSON object into its members, keeping their order.
func orderedObject(raw json.RawMessage) ([]field, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("not an object")
	}
	var out []field
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := k.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		out = append(out, field{key, v})
	}
	return out, nil
}

func encodeObject(fs []field) json.RawMessage {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range fs {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(f.key)
		b.Write(k)
		b.WriteByte(':')
		b.Write(f.value)
	}
	b.WriteByte('}')
	return b.Bytes()
}
