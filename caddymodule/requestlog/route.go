package requestlog

import (
	"fmt"
	"strings"
)

// template is a route template such as /v1/customers/{id}: literal
// segments match themselves, {name} matches any one non-empty segment.
type template struct {
	raw      string
	segs     []string // "" for a parameter
	literals int
}

func parseTemplate(s string) (template, error) {
	if !strings.HasPrefix(s, "/") {
		return template{}, fmt.Errorf("route %q: must start with /", s)
	}
	t := template{raw: s}
	for _, seg := range strings.Split(s[1:], "/") {
		if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") && len(seg) > 2 {
			t.segs = append(t.segs, "")
			continue
		}
		if strings.ContainsAny(seg, "{}*?") {
			return template{}, fmt.Errorf("route %q: segment %q must be a literal or a whole {param}", s, seg)
		}
		t.segs = append(t.segs, seg)
		t.literals++
	}
	return t, nil
}

func (t template) match(segs []string) bool {
	if len(segs) != len(t.segs) {
		return false
	}
	for i, s := range t.segs {
		if s == "" {
			if segs[i] == "" {
				return false
			}
		} else if s != segs[i] {
			return false
		}
	}
	return true
}

// route returns the template matching path — the most specific one, so
// /v1/customers/search wins over /v1/customers/{id} — and true, or the
// path with id-looking segments replaced by {id} and false.
func route(templates []template, path string) (string, bool) {
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	best := -1
	for i, t := range templates {
		if t.match(segs) && (best < 0 || t.literals > templates[best].literals) {
			best = i
		}
	}
	if best >= 0 {
		return templates[best].raw, true
	}
	var b strings.Builder
	b.Grow(len(path))
	for _, s := range segs {
		b.WriteByte('/')
		if idLike(s) {
			b.WriteString("{id}")
		} else {
			b.WriteString(s)
		}
	}
	return b.String(), false
}

// idLike reports whether a path segment looks like an identifier rather
// than a resource name: a prefixed id (cus_9Xk2… — base62, so with a digit
// or capital, unlike webhook_endpoints), a number, a UUID, a long hex
// string, or any long token with digits in it.
func idLike(s string) bool {
	if s == "" {
		return false
	}
	digits, letters, other := 0, 0, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			digits++
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			letters++
		default:
			other++
		}
	}
	switch {
	case digits == len(s):
		return true
	case isUUID(s):
		return true
	case len(s) >= 16 && isHexString(s):
		return true
	}
	if prefix, rest, ok := strings.Cut(s, "_"); ok && len(prefix) >= 2 && len(prefix) <= 8 && len(rest) >= 6 &&
		isLower(prefix) && isAlnum(rest) && strings.ContainsFunc(rest, func(r rune) bool { return r >= '0' && r <= '9' || r >= 'A' && r <= 'Z' }) {
		return true
	}
	return len(s) >= 20 && digits > 0
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if s[i] != '-' {
				return false
			}
		} else if !isHex(s[i]) {
			return false
		}
	}
	return true
}

func isHexString(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isHex(s[i]) {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func isLower(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 'a' || s[i] > 'z' {
			return false
		}
	}
	return true
}

func isAlnum(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}
