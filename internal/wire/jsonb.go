package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// CheckJSONB reports why Postgres would refuse raw (valid JSON) as jsonb,
// or nil: jsonb cannot hold U+0000 or an unpaired UTF-16 surrogate escape,
// and its numbers are numeric, limited to 131072 digits before the decimal
// point and 16383 after. encoding/json accepts all three, so without this
// check one such value would fail a whole batch insert.
func CheckJSONB(raw []byte) error {
	if bytes.Contains(raw, []byte(`\u`)) {
		if err := checkEscapes(raw); err != nil {
			return err
		}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil // the caller has checked that raw is valid JSON
		}
		if n, ok := tok.(json.Number); ok && !numericFits(string(n)) {
			return fmt.Errorf("the number %.40s… is out of Postgres numeric range", n)
		}
	}
}

// checkEscapes scans the \u escapes of raw's strings.
func checkEscapes(raw []byte) error {
	inString := false
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if !inString {
			inString = c == '"'
			continue
		}
		switch c {
		case '"':
			inString = false
		case '\\':
			if i+1 < len(raw) && raw[i+1] == 'u' {
				r, ok := hex4(raw, i+2)
				switch {
				case !ok:
				case r == 0:
					return errors.New(`a string contains \u0000 (NUL)`)
				case r >= 0xD800 && r <= 0xDBFF:
					low, ok := hex4(raw, i+8)
					if i+7 >= len(raw) || raw[i+6] != '\\' || raw[i+7] != 'u' || !ok || low < 0xDC00 || low > 0xDFFF {
						return errors.New("a string contains an unpaired UTF-16 surrogate escape")
					}
					i += 6
				case r >= 0xDC00 && r <= 0xDFFF:
					return errors.New("a string contains an unpaired UTF-16 surrogate escape")
				}
			}
			i++ // skip the escaped character
		}
	}
	return nil
}

func hex4(b []byte, at int) (rune, bool) {
	if at+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[at : at+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// numericFits reports whether a JSON number is within Postgres numeric's
// range: at most 131072 digits before the decimal point, 16383 after.
func numericFits(n string) bool {
	n = strings.TrimPrefix(n, "-")
	mant, exp, hasExp := strings.Cut(strings.ToLower(n), "e")
	intPart, frac, _ := strings.Cut(mant, ".")
	digits := strings.TrimLeft(intPart+frac, "0")
	point := len(intPart) - (len(intPart+frac) - len(digits)) // leading zeros move the point left
	digits = strings.TrimRight(digits, "0")
	if digits == "" {
		return true // zero, whatever the exponent
	}
	if hasExp {
		e, err := strconv.Atoi(exp)
		if err != nil || e > 1<<20 || e < -(1<<20) {
			return false
		}
		point += e
	}
	return point <= 131072 && len(digits)-point <= 16383
}
