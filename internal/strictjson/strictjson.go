// Package strictjson refuses what encoding/json accepts silently in a JSON
// object request body but stores as something other than what was sent: a
// key sent twice in one object (the last value wins) and an unpaired UTF-16
// surrogate escape (decoded as U+FFFD). The control plane's API and the
// sample API both refuse them, with the same error objects.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/gatehouse/gatehouse/internal/apierror"
)

// RefuseUnpairedSurrogates refuses a parameter of a decoded JSON object body
// whose value has an unpaired surrogate escape, naming the first such
// parameter in key order: decoding would put U+FFFD in its place silently,
// as it would for invalid UTF-8.
func RefuseUnpairedSurrogates(params map[string]json.RawMessage) error {
	for _, k := range slices.Sorted(maps.Keys(params)) {
		if UnpairedSurrogate(params[k]) {
			return apierror.ParameterInvalid(printable(k), fmt.Sprintf(
				"Invalid %s: a string contains an unpaired UTF-16 surrogate escape (such as \\ud800), which is not a character.", printable(k)))
		}
	}
	return nil
}

// UnpairedSurrogate reports whether the valid JSON raw has a \u escape of
// a UTF-16 surrogate that is not half of a pair.
func UnpairedSurrogate(raw []byte) bool {
	hex4 := func(i int) rune {
		if i+6 > len(raw) || raw[i] != '\\' || raw[i+1] != 'u' {
			return -1
		}
		n, err := strconv.ParseUint(string(raw[i+2:i+6]), 16, 16)
		if err != nil {
			return -1
		}
		return rune(n)
	}
	// In valid JSON a backslash only ever starts an escape in a string.
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		switch r := hex4(i); {
		case r >= 0xD800 && r <= 0xDBFF:
			if low := hex4(i + 6); low < 0xDC00 || low > 0xDFFF {
				return true
			}
			i += 11 // both escapes
		case r >= 0xDC00 && r <= 0xDFFF:
			return true
		default:
			i++ // the escaped character
		}
	}
	return false
}

// RefuseDuplicateKeys refuses a key sent twice in one object of a valid
// JSON object body: decoding keeps the last value and drops the others
// silently, where a form or query parameter sent twice is refused. The
// error names the top-level parameter the object is in.
func RefuseDuplicateKeys(raw []byte) error {
	type frame struct {
		keys    map[string]bool // nil for an array
		wantKey bool            // an object's next token is a key
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // a number beyond float64 is the parameter's to refuse
	var (
		stack []frame
		param string // the top-level key being read
	)
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return apierror.InvalidRequest("body_invalid", "", "The request body is not valid JSON: "+err.Error()+".")
		}
		if key, ok := tok.(string); ok && len(stack) > 0 && stack[len(stack)-1].wantKey {
			n := len(stack)
			if n == 1 {
				param = key
			}
			if stack[n-1].keys[key] {
				if n == 1 {
					return apierror.ParameterInvalid(printable(key), fmt.Sprintf("Parameter %s was sent more than once.", printable(key)))
				}
				return apierror.ParameterInvalid(printable(param),
					fmt.Sprintf("Parameter %s has the key %q more than once.", printable(param), printable(key)))
			}
			stack[n-1].keys[key] = true
			stack[n-1].wantKey = false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, frame{keys: map[string]bool{}, wantKey: true})
			continue
		case json.Delim('['):
			stack = append(stack, frame{})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		// A value ended: the enclosing object's next token is a key.
		if n := len(stack); n > 0 && stack[n-1].keys != nil {
			stack[n-1].wantKey = true
		}
	}
}

// printable keeps invalid UTF-8 out of error messages.
func printable(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }
