package wire

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// CheckJSONB reports why Postgres would refuse raw (valid JSON) as jsonb,
// or nil: jsonb cannot hold U+0000 or an unpaired UTF-16 surrogate escape,
// and its numbers are numeric, limited to 131072 digits before the decimal
// point and 16383 after. encoding/json accepts all three, so without this
// check one such value would fail a whole batch insert. One pass over the
// bytes, without allocating: the gateway runs it on every event it emits.
func CheckJSONB(raw []byte) error {
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case c == '"':
			end, err := checkString(raw, i+1)
			if err != nil {
				return err
			}
			i = end
		case c == '-' || c >= '0' && c <= '9':
			j := i + 1
			for j < len(raw) && strings.IndexByte("0123456789+-.eE", raw[j]) >= 0 {
				j++
			}
			// Without an exponent, only a number longer than numeric's
			// fraction limit can be out of range.
			if n := raw[i:j]; (len(n) > 16383 || bytes.ContainsAny(n, "eE")) && !numericFits(string(n)) {
				return fmt.Errorf("the number %.40s… is out of Postgres numeric range", n)
			}
			i = j - 1
		}
	}
	return nil
}

// checkString checks the \u escapes of the string starting at raw[i] (after
// its opening quote) and returns the index of its closing quote.
func checkString(raw []byte, i int) (int, error) {
	for ; i < len(raw); i++ {
		switch raw[i] {
		case '"':
			return i, nil
		case '\\':
			if i+1 < len(raw) && raw[i+1] == 'u' {
				r, ok := hex4(raw, i+2)
				switch {
				case !ok:
				case r == 0:
					return 0, errors.New(`a string contains \u0000 (NUL)`)
				case r >= 0xD800 && r <= 0xDBFF:
					low, ok := hex4(raw, i+8)
					if i+7 >= len(raw) || raw[i+6] != '\\' || raw[i+7] != 'u' || !ok || low < 0xDC00 || low > 0xDFFF {
						return 0, errors.New("a string contains an unpaired UTF-16 surrogate escape")
					}
					i += 6
				case r >= 0xDC00 && r <= 0xDFFF:
					return 0, errors.New("a string contains an unpaired UTF-16 surrogate escape")
				}
			}
			i++ // skip the escaped character
		}
	}
	return i, nil
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
