package redact

import (
	"regexp"
	"strings"
)

// XML masks, in an XML document, the content of each element and the value
// of each attribute whose (local) name is a sensitive field, as JSON does
// for fields: <password>…</password>, <ns:ClientSecret>…</ns:ClientSecret>
// and token="…" (a SOAP login, an XML API). Keys and card numbers elsewhere
// are left to String. What is not well-formed is not refused, only read as
// far as it goes: an element never closed (a truncated capture) is masked
// to the end, a tag cut off is dropped.
func (r *Redactor) XML(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		lt := strings.IndexByte(s[i:], '<')
		if lt < 0 {
			b.WriteString(s[i:])
			break
		}
		b.WriteString(s[i : i+lt])
		i += lt
		if end, ok := markupEnd(s, i); ok { // a comment, CDATA, declaration or end tag
			if end < 0 {
				break
			}
			b.WriteString(s[i:end])
			i = end
			continue
		}
		gt := tagEnd(s, i)
		if gt < 0 {
			break // a tag cut off
		}
		tag := s[i : gt+1]
		b.WriteString(r.maskAttributes(tag))
		i = gt + 1
		name := tagName(tag)
		if strings.HasSuffix(tag, "/>") || !r.SensitiveField(localName(name)) {
			continue
		}
		b.WriteString(Mask)
		end := endTag(s, i, name)
		if end < 0 {
			break // never closed: masked to the end
		}
		i = end
	}
	return b.String()
}

// markupEnd is, for markup at s[i] that is not a start tag, the index just
// past it (-1 when it is cut off); ok is false for a start tag.
func markupEnd(s string, i int) (end int, ok bool) {
	rest := s[i:]
	var closer string
	switch {
	case strings.HasPrefix(rest, "<!--"):
		closer = "-->"
	case strings.HasPrefix(rest, "<![CDATA["):
		closer = "]]>"
	case strings.HasPrefix(rest, "<?"), strings.HasPrefix(rest, "<!"), strings.HasPrefix(rest, "</"):
		closer = ">"
	default:
		return 0, false
	}
	if n := strings.Index(rest[2:], closer); n >= 0 {
		return i + 2 + n + len(closer), true
	}
	return -1, true
}

// tagEnd is the index of the '>' closing the tag at s[i], outside quoted
// attribute values, or -1.
func tagEnd(s string, i int) int {
	var quote byte
	for j := i + 1; j < len(s); j++ {
		switch c := s[j]; {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '>':
			return j
		}
	}
	return -1
}

// tagName is the name in a start or end tag.
func tagName(tag string) string {
	name := strings.TrimPrefix(strings.TrimPrefix(tag, "<"), "/")
	if n := strings.IndexAny(name, " \t\r\n/>"); n >= 0 {
		name = name[:n]
	}
	return name
}

// localName drops an element's or attribute's namespace prefix.
func localName(name string) string {
	_, local, found := strings.Cut(name, ":")
	if !found {
		return name
	}
	return local
}

// endTag is the index of the end tag closing the element name opened just
// before s[i] (elements of the same name inside it are skipped, and so are
// comments and CDATA sections), or -1.
func endTag(s string, i int, name string) int {
	depth := 1
	for i < len(s) {
		lt := strings.IndexByte(s[i:], '<')
		if lt < 0 {
			return -1
		}
		i += lt
		if end, ok := markupEnd(s, i); ok && !strings.HasPrefix(s[i:], "</") {
			if end < 0 {
				return -1
			}
			i = end
			continue
		}
		closing := strings.HasPrefix(s[i:], "</")
		tag := s[i:]
		if gt := tagEnd(s, i); gt >= 0 {
			tag = s[i : gt+1]
		}
		if tagName(tag) == name {
			switch {
			case closing:
				if depth--; depth == 0 {
					return i
				}
			case !strings.HasSuffix(tag, "/>"):
				depth++
			}
		}
		i++
	}
	return -1
}

var xmlAttribute = regexp.MustCompile(`([\p{L}_][\p{L}\p{N}_.:-]*)(\s*=\s*)("[^"]*"|'[^']*')`)

// maskAttributes masks the values of a tag's sensitive attributes.
func (r *Redactor) maskAttributes(tag string) string {
	if strings.IndexByte(tag, '=') < 0 {
		return tag
	}
	return xmlAttribute.ReplaceAllStringFunc(tag, func(a string) string {
		m := xmlAttribute.FindStringSubmatch(a)
		if !r.SensitiveField(localName(m[1])) {
			return a
		}
		q := m[3][:1]
		return m[1] + m[2] + q + Mask + q
	})
}
