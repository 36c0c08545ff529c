package redact

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// Planted secrets. The key is well formed (its checksum does not matter to
// redaction); the card number is Luhn-valid.
const (
	plantedSecret = "QuxPlantedSecretValue"
	plantedKey    = "sk_live_7fGh2KpQ9zXw4LmN8rTb3VcY6dSa1EoUiJ5nBAB1Cd"
	plantedCard   = "4000056655665556"
)

// FuzzRedactJSON checks, for any input, that redaction neither panics nor
// emits invalid UTF-8 or breaks valid JSON, and that secrets planted in a
// document built around the input — under sensitive fields at every depth,
// as keys and card numbers in plain strings and numbers — never survive,
// whole or truncated at any point.
func FuzzRedactJSON(f *testing.F) {
	f.Add([]byte(`{"email":"a@b.c","metadata":{"plan":"pro"}}`), uint16(10))
	f.Add([]byte(`[1,"two",{"three":[3]},null,true]`), uint16(7))
	f.Add([]byte(`"just a string"`), uint16(3))
	r := New(Config{})
	f.Fuzz(func(t *testing.T, data []byte, cut uint16) {
		for _, truncated := range []bool{false, true} {
			out := r.JSON(data, truncated)
			if !utf8.ValidString(out) {
				t.Fatalf("invalid UTF-8 out of %q", data)
			}
			if !truncated && json.Valid(data) && !json.Valid([]byte(out)) {
				t.Fatalf("valid JSON in, invalid out:\n in %s\nout %s", data, out)
			}
		}
		for _, s := range []string{plantedSecret, plantedKey[8:], plantedCard} {
			if bytes.Contains(data, []byte(s)) {
				return // the input itself holds the marker outside a sensitive field
			}
		}

		var v any
		if json.Unmarshal(data, &v) != nil {
			v = string(data)
		}
		doc, err := json.Marshal(map[string]any{
			"data":        plant(v),
			"password":    plantedSecret,
			"Api_Key":     map[string]any{"nested": []any{plantedSecret, 1}},
			"note":        "the key is " + plantedKey + ", the card " + plantedCard,
			"amount":      json.Number(plantedCard),
			"user_passwd": plantedSecret,
			plantedKey:    true,
		})
		if err != nil {
			return
		}
		// A field name escaped in the document is still a field name.
		doc = bytes.ReplaceAll(doc, []byte(`"user_passwd"`), []byte(`"user_pass\u0077d"`))

		check := func(in []byte, truncated bool) {
			out := r.JSON(in, truncated)
			for _, s := range []string{plantedSecret, plantedKey[8:20], plantedCard} {
				if strings.Contains(out, s) {
					t.Fatalf("%q survived redaction (truncated=%v):\n in %s\nout %s", s, truncated, in, out)
				}
			}
		}
		check(doc, false)
		n := int(cut) % (len(doc) + 1)
		check(doc[:n], n < len(doc))
	})
}

// plant adds the secret under sensitive fields to every object and array in v.
func plant(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = plant(e)
		}
		x["client_secret"] = plantedSecret
		x["card"] = map[string]any{"cvc": plantedSecret, "card_number": plantedCard}
		return x
	case []any:
		for i, e := range x {
			x[i] = plant(e)
		}
		return append(x, map[string]any{"token": []any{plantedSecret}}, plantedKey)
	}
	return v
}

// FuzzRedactXML checks, for any input, that XML redaction neither panics
// nor emits invalid UTF-8 from valid UTF-8, and that a secret planted in a
// password element and a token attribute placed after the input never
// survives in a document whose input leaves them as elements.
func FuzzRedactXML(f *testing.F) {
	f.Add("<a><b>x</b></a>")
	f.Add(`<s:E xmlns:s="x"><![CDATA[<y>]]><!-- c --><?p q?></s:E>`)
	f.Add(`<a b='1' c="2"/>`)
	r := New(Config{})
	f.Fuzz(func(t *testing.T, in string) {
		out := r.XML(in)
		if utf8.ValidString(in) && !utf8.ValidString(out) {
			t.Fatalf("invalid UTF-8 out of %q", in)
		}
		if strings.Contains(in, plantedSecret) || strings.ContainsAny(in, "<>&\"'") {
			return // markup around the planted secret could be the input's
		}
		doc := "<r>" + in + `<password>` + plantedSecret + `</password><x token="` + plantedSecret + `"/></r>`
		if out := r.XML(doc); strings.Contains(out, plantedSecret) {
			t.Fatalf("planted secret survived:\n in %s\nout %s", doc, out)
		}
	})
}
