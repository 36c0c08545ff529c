package redact

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// JSON redacts a JSON body: the value of every field whose name is
// sensitive (see SensitiveField) — string, number, object or array, at any
// depth, in arrays too — becomes "[REDACTED]", and keys and card numbers are
// masked in every other string and number. Field names are compared after
// decoding escapes, so "pass\u0077ord" is a password too. The document
// keeps its layout.
//
// truncated says body is only the start of a longer document (a capped
// capture); the cut-off last token is dropped rather than risk keeping a
// partial secret. A body that is not JSON — or, when truncated, not the
// start of JSON — is not kept at all: field redaction needs the structure,
// and guessing it could keep a secret.
func (r *Redactor) JSON(body []byte, truncated bool) string {
	if !validPrefix(body, truncated) {
		return "[invalid JSON body of " + strconv.Itoa(len(body)) + " bytes not captured]"
	}
	type frame struct{ obj, expectKey bool }
	var (
		out      strings.Builder
		stack    []frame
		maskNext bool // the next value belongs to a sensitive field
	)
	out.Grow(len(body) + 32)
	top := func() *frame {
		if len(stack) == 0 {
			return nil
		}
		return &stack[len(stack)-1]
	}
	for i := 0; i < len(body); {
		c := body[i]
		switch c {
		case ' ', '\t', '\n', '\r', ':':
			out.WriteByte(c)
			i++
		case ',':
			if f := top(); f != nil && f.obj {
				f.expectKey = true
			}
			out.WriteByte(c)
			i++
		case '{', '[':
			if maskNext {
				out.WriteString(`"` + Mask + `"`)
				maskNext = false
				i = skipContainer(body, i)
				continue
			}
			stack = append(stack, frame{obj: c == '{', expectKey: c == '{'})
			out.WriteByte(c)
			i++
		case '}', ']':
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			maskNext = false
			out.WriteByte(c)
			i++
		case '"':
			end, closed := scanString(body, i)
			s := decodeString(body[i:end], closed)
			f := top()
			isKey := f != nil && f.obj && f.expectKey
			if isKey {
				f.expectKey = false
			}
			switch {
			case maskNext:
				out.WriteString(`"` + Mask + `"`)
				maskNext = false
			case !closed:
				// Only a truncated capture ends inside a string.
				writeString(&out, r.String(dropPartialTail(s)), false)
			default:
				if m := r.String(s); m != s {
					writeString(&out, m, true)
				} else {
					out.Write(body[i:end])
				}
				if isKey && r.SensitiveField(s) {
					maskNext = true
				}
			}
			i = end
		default:
			// A number or literal (true, false, null).
			j := i
			for j < len(body) && !isDelim(body[j]) {
				j++
			}
			tok := string(body[i:j])
			switch {
			case maskNext:
				out.WriteString(`"` + Mask + `"`)
				maskNext = false
			case j == len(body) && truncated:
				out.WriteString(dropPartialTail(tok))
			case r.String(tok) != tok:
				out.WriteString(`"` + Mask + `"`)
			default:
				out.WriteString(tok)
			}
			i = j
		}
	}
	return Block(out.String(), math.MaxInt)
}

// validPrefix reports whether b is JSON (a sequence of JSON values) or,
// when truncated, the start of JSON.
func validPrefix(b []byte, truncated bool) bool {
	if !truncated {
		dec := json.NewDecoder(bytes.NewReader(b))
		for {
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				return errors.Is(err, io.EOF)
			}
		}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	for {
		_, err := dec.Token()
		if err == nil {
			continue
		}
		return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
	}
}

func isDelim(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\r', '"', '{', '}', '[', ']', ':', ',':
		return true
	}
	return false
}

// scanString returns the end of the string literal starting at b[i] (after
// its closing quote) and whether it was closed before the end of b.
func scanString(b []byte, i int) (end int, closed bool) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, true
		}
	}
	return len(b), false
}

// skipContainer returns the index after the object or array starting at
// b[i], or len(b) when it is not closed.
func skipContainer(b []byte, i int) int {
	depth := 0
	for j := i; j < len(b); j++ {
		switch b[j] {
		case '"':
			end, closed := scanString(b, j)
			if !closed {
				return len(b)
			}
			j = end - 1
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return j + 1
			}
		}
	}
	return len(b)
}

// decodeString decodes a string literal (with its opening quote, and its
// closing one when closed). Malformed escapes are kept as written.
func decodeString(lit []byte, closed bool) string {
	s := lit[1:]
	if closed {
		s = s[:len(s)-1]
	}
	if bytes.IndexByte(s, '\\') < 0 {
		return string(s)
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		i++
		switch s[i] {
		case '"', '\\', '/':
			b.WriteByte(s[i])
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'u':
			r1, ok := hex4(s, i+1)
			if !ok {
				b.WriteString(`\u`)
				continue
			}
			i += 4
			if utf16.IsSurrogate(r1) {
				if i+2 < len(s) && s[i+1] == '\\' && s[i+2] == 'u' {
					if r2, ok := hex4(s, i+3); ok {
						if dec := utf16.DecodeRune(r1, r2); dec != utf8.RuneError {
							b.WriteRune(dec)
							i += 6
							continue
						}
					}
				}
				r1 = utf8.RuneError
			}
			b.WriteRune(r1)
		default:
			b.WriteByte('\\')
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

func hex4(s []byte, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	var r rune
	for _, c := range s[i : i+4] {
		if !isHex(c) {
			return 0, false
		}
		r = r<<4 | rune(unhex(c))
	}
	return r, true
}

// writeString writes s as a JSON string literal, without escaping HTML
// characters; closeQuote is false for a string cut off by truncation.
func writeString(b *strings.Builder, s string, closeQuote bool) {
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if r < 0x20 {
				b.WriteString(`\u00`)
				b.WriteByte(hexDigits[r>>4])
				b.WriteByte(hexDigits[r&0xf])
				continue
			}
			b.WriteRune(r)
		}
	}
	if closeQuote {
		b.WriteByte('"')
	}
}
