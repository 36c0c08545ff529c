package redact

import (
	"strings"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// Text makes s safe to put in a log line or on a page: invalid UTF-8 bytes
// become U+FFFD, control characters (C0, DEL, C1 and the Unicode line and
// paragraph separators) are written as \uNNNN escapes — valid inside JSON
// strings too, so a redacted JSON body stays JSON —, and the
// result is at most max bytes, cut on a character boundary and ended with
// "…" when it was longer. A log reader never sees a forged line break or a
// terminal escape sequence.
func Text(s string, max int) string {
	return sanitize(s, max, false)
}

// Block is Text for multi-line text such as bodies: line breaks and tabs
// are kept, since blocks are shown as blocks rather than in one line.
func Block(s string, max int) string {
	return sanitize(s, max, true)
}

func sanitize(s string, max int, keepLines bool) string {
	if max <= 0 {
		return ""
	}
	if clean(s, keepLines) {
		return cut(s, max)
	}
	var b strings.Builder
	b.Grow(min(len(s)+16, max))
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		var piece string
		switch {
		case r == utf8.RuneError && size <= 1:
			piece = "\uFFFD"
		case keepLines && (r == '\n' || r == '\r' || r == '\t'):
			piece = s[i : i+size]
		case r < 0x20, r >= 0x7f && r <= 0x9f, r == 0x2028, r == 0x2029:
			piece = `\u` + string(hexDigits[r>>12&0xf]) + string(hexDigits[r>>8&0xf]) +
				string(hexDigits[r>>4&0xf]) + string(hexDigits[r&0xf])
		default:
			piece = s[i : i+size]
		}
		if b.Len()+len(piece) > max {
			return finish(b.String(), max)
		}
		b.WriteString(piece)
		i += size
	}
	return b.String()
}

// clean reports whether s needs no escaping.
func clean(s string, keepLines bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 {
			if keepLines && (c == '\n' || c == '\r' || c == '\t') {
				continue
			}
			return false
		}
		if c == 0x7f {
			return false
		}
		if c >= 0x80 {
			// Multi-byte: check validity and the few escaped code points.
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size <= 1 || r <= 0x9f || r == 0x2028 || r == 0x2029 {
				return false
			}
			i += size - 1
		}
	}
	return true
}

// cut returns valid UTF-8 s unchanged when it fits in max bytes, otherwise
// its longest prefix ending on a character boundary followed by "…" so that
// the whole is at most max bytes.
func cut(s string, max int) string {
	if len(s) <= max {
		return s
	}
	return finish(s, max)
}

func finish(s string, max int) string {
	const ellipsis = "…"
	if max < len(ellipsis) {
		return ""
	}
	n := min(len(s), max-len(ellipsis))
	for n > 0 && n < len(s) && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + ellipsis
}
