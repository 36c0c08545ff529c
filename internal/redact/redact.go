// Package redact removes secrets from what the platform records about a
// request (DESIGN §9) and makes what is left safe to display: header
// allowlists, query values and JSON body fields that carry credentials,
// our API keys and webhook secrets wherever they appear, and card numbers.
// It also defends log readers against injection: every string comes out as
// valid UTF-8 with control characters escaped and a bounded length.
//
// The gateway's request_log redacts before anything leaves the process; the
// log ingester and anything else that displays request data can run the
// same code again as a second line of defence.
package redact

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gatehouse/gatehouse/internal/apikey"
)

// Mask replaces whatever was redacted.
const Mask = "[REDACTED]"

// Length limits of the strings of a request log, in bytes.
const (
	MaxPath        = 2048
	MaxUserAgent   = 512
	MaxHeaderValue = 1024
	// An error object's message and param (the rest of its body is kept
	// only with body capture).
	MaxErrorMessage = 512
	MaxErrorParam   = 128
)

// DefaultHeaders are the headers kept (redacted) in a request log. Anything
// else is left out: an unknown header may carry anything.
var DefaultHeaders = []string{
	"Accept", "Accept-Encoding", "Accept-Language", "Api-Version", "Cache-Control",
	"Content-Encoding", "Content-Length", "Content-Type", "Idempotency-Key",
	"Idempotent-Replayed", "Location", "Original-Request-Id", "Request-Id", "RateLimit", "RateLimit-Policy",
	"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "Retry-After",
	"X-Ratelimit-Limit", "X-Ratelimit-Remaining", "X-Ratelimit-Reset",
	"User-Agent", "Vary",
}

// SecretHeaders are always shown as Mask when present, even when an operator
// adds them to the allowlist: that a credential was sent is useful when
// debugging, the credential never is.
var SecretHeaders = []string{
	"Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie",
	"X-Api-Key", "Api-Key", "X-Auth-Token", "X-Gateway-Signature", "Webhook-Signature",
}

// DefaultQueryParams are the query parameter names whose values are always
// redacted (compared case-insensitively, ignoring '_' and '-').
var DefaultQueryParams = []string{"api_key", "key", "token", "secret", "password", "access_token"}

// LogSecretPathParents are the platform's own path segments (compared
// case-insensitively) whose next segment is a bearer credential, redacted
// in process logs (LogPath): the dashboard's invitation links
// (/invitations/<token>) let whoever holds one join the organisation. Ids
// after them (/members/invitations/<id>/revoke) are masked as well; an id
// in a log is worth less than a token kept out. Request logs of the
// proxied API are not affected: its paths are the backend's.
var LogSecretPathParents = []string{"invitations"}

// DefaultFields are the JSON body fields (and form fields) whose values are
// redacted. A field matches when its name, lower-cased and without '_' and
// '-', contains one of these likewise normalised: "new_password",
// "clientSecret" and "x-api-key" all match; so does any name ending in key
// (SensitiveField). Over-redacting a debug log costs little; leaking a
// credential does not.
var DefaultFields = []string{
	"password", "passwd", "secret", "token", "api_key", "access_key", "private_key",
	"authorization", "credential", "cookie", "card_number", "cvc", "cvv", "ssn",
	"account_number", "iban",
}

// Config extends the defaults. Nothing can be removed from them.
type Config struct {
	// Headers are kept in addition to DefaultHeaders.
	Headers []string
	// QueryParams are redacted in addition to DefaultQueryParams.
	QueryParams []string
	// Fields are redacted in addition to DefaultFields.
	Fields []string
	// SecretPathParents are path segments whose next segment is always
	// redacted (compared case-insensitively).
	SecretPathParents []string
}

// Redactor applies one configuration. It is safe for concurrent use.
type Redactor struct {
	headers map[string]bool // canonical name → kept
	secret  map[string]bool // canonical name → always masked
	query   map[string]bool // normalised names
	fields  []string        // normalised substrings
	parents []string        // path segments followed by a secret
}

// New returns a redactor with the defaults plus cfg.
func New(cfg Config) *Redactor {
	r := &Redactor{headers: map[string]bool{}, secret: map[string]bool{}, query: map[string]bool{},
		parents: slices.Clone(cfg.SecretPathParents)}
	for _, h := range slices.Concat(DefaultHeaders, cfg.Headers) {
		r.headers[http.CanonicalHeaderKey(h)] = true
	}
	for _, h := range SecretHeaders {
		r.secret[http.CanonicalHeaderKey(h)] = true
	}
	for _, q := range slices.Concat(DefaultQueryParams, cfg.QueryParams) {
		if n := normalize(q); n != "" {
			r.query[n] = true
		}
	}
	for _, f := range slices.Concat(DefaultFields, cfg.Fields) {
		if n := normalize(f); n != "" && !slices.Contains(r.fields, n) {
			r.fields = append(r.fields, n)
		}
	}
	return r
}

// normalize lower-cases name and drops everything but letters and digits,
// so api_key, API-KEY and apiKey compare equal. Other characters are
// folded as Go's encoding/json folds field names (Unicode simple folding):
// a Go backend fills Password from "paſsword" (a long s) and Token from
// "toKen" (the Kelvin sign), so they must match as password and token do.
func normalize(name string) string {
	var b strings.Builder
	for _, c := range name {
		switch {
		case c >= 'A' && c <= 'Z':
			b.WriteByte(byte(c) + 'a' - 'A')
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			b.WriteByte(byte(c))
		case c >= utf8.RuneSelf:
			b.WriteRune(fold(c))
		}
	}
	return b.String()
}

// fold is the lower-case form of the smallest rune c folds to: one rune
// for every case variant (ſ, s and S give s; K, k and K give k).
func fold(c rune) rune {
	least := c
	for f := unicode.SimpleFold(c); f != c; f = unicode.SimpleFold(f) {
		least = min(least, f)
	}
	return unicode.ToLower(least)
}

// SensitiveField reports whether a body field of this name is redacted:
// one containing a field of the list, or named like a key (key,
// signing_key, encryptionKey), except the idempotency key, which is no
// credential and what support engineers look for.
func (r *Redactor) SensitiveField(name string) bool {
	n := normalize(name)
	if strings.HasSuffix(n, "key") && n != "idempotencykey" {
		return true
	}
	for _, f := range r.fields {
		if strings.Contains(n, f) {
			return true
		}
	}
	return false
}

// sensitiveParam reports whether a query or form parameter is redacted.
func (r *Redactor) sensitiveParam(name string) bool {
	return r.query[normalize(name)] || r.SensitiveField(name)
}

// urlHeaders hold a URL, whose query is redacted as a request's is: a
// redirect to an OAuth callback or a signed download link carries its
// credential there.
var urlHeaders = map[string]bool{"Location": true, "Content-Location": true, "Referer": true}

// Headers returns the allowlisted headers of h, one value per name (several
// values joined with ", "), redacted and bounded. Secret headers that are
// present appear as Mask; URL-valued ones are redacted as Path redacts.
func (r *Redactor) Headers(h http.Header) map[string]string {
	var out map[string]string
	for name, vals := range h {
		cn := http.CanonicalHeaderKey(name)
		secret := r.secret[cn]
		if !secret && !r.headers[cn] {
			continue
		}
		if out == nil {
			out = make(map[string]string, 8)
		}
		if secret || apikey.LooksLikeKey(strings.Join(vals, ", ")) {
			out[cn] = Mask
			continue
		}
		// Each value on its own: joined, a URL's query would swallow the
		// next URL.
		red := make([]string, len(vals))
		for i, v := range vals {
			red[i] = r.headerValue(cn, v)
		}
		out[cn] = Text(strings.Join(red, ", "), MaxHeaderValue)
	}
	return out
}

// headerValue redacts one value of the header named cn (canonical): a
// secret header's, or one that looks like our key, is Mask; a URL is
// redacted as Path redacts; keys and card numbers are masked anywhere.
func (r *Redactor) headerValue(cn, v string) string {
	switch {
	case r.secret[cn] || apikey.LooksLikeKey(v):
		return Mask
	case urlHeaders[cn]:
		v = r.uri(v)
	}
	return r.String(v)
}

// Path returns a request URI (path and query) with the values of sensitive
// query parameters replaced by Mask, and any path segment or query value
// that carries a key or card number — even percent-encoded — replaced too.
func (r *Redactor) Path(requestURI string) string {
	return Text(r.uri(requestURI), MaxPath)
}

// EndpointURL is a configured URL (a webhook endpoint's) fit for an audit
// entry, a log line or a mail: tokens hide in the query, the fragment and
// the user information, so only scheme, host and path are kept. "" when raw
// is not an absolute URL.
func EndpointURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return ""
	}
	return u.Scheme + "://" + u.Host + u.EscapedPath()
}

// errBadURL replaces a URL parse error in URLError.
var errBadURL = errors.New("not a valid URL (percent-encode special characters in the user name and password)")

// URLError is err, from parsing raw, a URL that may hold a password
// (REDIS_URL), fit for a log or a terminal: net/url's errors quote the whole
// URL, and an unencoded '/' in a password makes them quote part of it as the
// port. When that part is a valid port (empty, or digits), net/url accepts
// the URL and the rest of the password is read as its path (or, after '?',
// its query), which the caller's own errors quote (go-redis: "invalid
// database number", "unexpected option").
func URLError(raw string, err error) error {
	if _, ok := errors.AsType[*url.Error](err); ok || userinfoMisread(raw) {
		return errBadURL
	}
	return err
}

// CheckURL refuses raw, a URL that may hold a password, when its user
// information was cut short by an unencoded '/', '?' or '#' (URLError's
// second case). Check it before connecting with a URL that parses: the
// driver's errors, logged for as long as it retries, quote the misread
// parts (pgx names the rest of the password as the database).
func CheckURL(raw string) error { return URLError(raw, nil) }

// userinfoMisread reports whether raw has an '@' after where its authority
// ends: the user information held a '/', '?' or '#' and was cut there.
func userinfoMisread(raw string) bool {
	_, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return false
	}
	end := strings.IndexAny(rest, "/?#")
	return end >= 0 && strings.Contains(rest[end:], "@")
}

// logDefault redacts with the defaults and the platform's secret path
// segments, for process logs.
var logDefault = New(Config{SecretPathParents: LogSecretPathParents})

// LogPath is r's path for a log line: a key pasted into the path is
// redacted as in request logs. Error logs use it rather than r.URL.Path.
func LogPath(r *http.Request) string {
	return logDefault.Path(r.URL.EscapedPath())
}

// LogURI is a request URI (or a whole URL) for a process log, redacted as
// request logs redact paths.
func LogURI(s string) string {
	return logDefault.Path(s)
}

// LogHeaders returns every header of h for a process log: secret headers
// (SecretHeaders) and values that look like one of our keys as Mask, URL
// headers redacted as Path redacts, other values with keys and card
// numbers masked, each bounded. Names are canonical.
func LogHeaders(h http.Header) http.Header {
	out := make(http.Header, len(h))
	for name, vals := range h {
		cn := http.CanonicalHeaderKey(name)
		red := make([]string, len(vals))
		for i, v := range vals {
			red[i] = Text(logDefault.headerValue(cn, v), MaxHeaderValue)
		}
		out[cn] = append(out[cn], red...)
	}
	return out
}

// uri redacts a request URI or a whole URL: the user information of an
// authority (https://user:password@host), path segments that leak, and the
// query and fragment as parameters (OAuth's implicit flow puts its token in
// the fragment).
func (r *Redactor) uri(s string) string {
	rest, fragment, hasFragment := strings.Cut(s, "#")
	path, query, hasQuery := strings.Cut(rest, "?")
	if i := strings.Index(path, "//"); i >= 0 && !strings.Contains(path[:i], "/") {
		authority := path[i+2:]
		if j := strings.IndexByte(authority, '/'); j >= 0 {
			authority = authority[:j]
		}
		if at := strings.LastIndexByte(authority, '@'); at >= 0 {
			path = path[:i+2] + Mask + path[i+2+at:]
		}
	}
	var b strings.Builder
	b.Grow(len(s))
	secretNext := false
	for i, seg := range strings.Split(path, "/") {
		if i > 0 {
			b.WriteByte('/')
		}
		after := secretNext
		secretNext = slices.ContainsFunc(r.parents, func(p string) bool { return strings.EqualFold(p, seg) })
		if after && seg != "" || r.leaks(seg) {
			b.WriteString(Mask)
		} else {
			b.WriteString(seg)
		}
	}
	if hasQuery {
		b.WriteByte('?')
		b.WriteString(r.params(query))
	}
	if hasFragment {
		b.WriteByte('#')
		b.WriteString(r.params(fragment))
	}
	return b.String()
}

// params redacts an application/x-www-form-urlencoded string (a query or a
// form body), keeping its shape. Pairs are separated by '&' or ';': Go
// stopped splitting on ';', but many frameworks behind the gateway still do,
// so "x=1;api_key=…" hands them an api_key.
func (r *Redactor) params(q string) string {
	var b strings.Builder
	b.Grow(len(q))
	for {
		end := strings.IndexAny(q, "&;")
		pair := q
		if end >= 0 {
			pair = q[:end]
		}
		name, val, hasVal := strings.Cut(pair, "=")
		dn := unescape(strings.ReplaceAll(name, "+", " "))
		if r.paramLeaks(name) {
			b.WriteString(Mask)
		} else {
			b.WriteString(name)
		}
		if hasVal {
			b.WriteByte('=')
			if r.sensitiveParam(dn) || r.paramLeaks(val) {
				b.WriteString(Mask)
			} else {
				b.WriteString(val)
			}
		}
		if end < 0 {
			return b.String()
		}
		b.WriteByte(q[end])
		q = q[end+1:]
	}
}

// leaks reports whether an URL component carries a key or card number, as
// written or once percent-decoded.
func (r *Redactor) leaks(s string) bool {
	if r.String(s) != s {
		return true
	}
	if strings.IndexByte(s, '%') < 0 {
		return false
	}
	d := unescape(s)
	return r.String(d) != d
}

// paramLeaks is leaks for a query or form component, where '+' is an
// encoded space: "4242+4242+4242+4242" is the card number a user typed
// with spaces.
func (r *Redactor) paramLeaks(s string) bool {
	return r.leaks(s) || strings.IndexByte(s, '+') >= 0 && r.leaks(strings.ReplaceAll(s, "+", " "))
}

// unescape decodes the valid %XX sequences of s and keeps anything else as
// it is, so a malformed escape elsewhere cannot hide an encoded key.
func unescape(s string) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
			continue
		}
		b = append(b, s[i])
	}
	return string(b)
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// Form redacts an application/x-www-form-urlencoded body. When truncated,
// the last, possibly partial, value is cut back (see dropPartialTail).
func (r *Redactor) Form(body []byte, truncated bool) string {
	s := string(body)
	if truncated {
		s = dropPartialTail(s)
	}
	return Block(r.params(s), len(s)+64)
}

// Body redacts a captured body according to its media type and returns it
// as displayable text of at most max bytes. JSON and form bodies are
// redacted field by field (so is a text or form body holding a JSON object
// or array), as XML's elements and attributes are (XML), other text bodies
// for keys and card numbers; other media types
// are not kept. truncated says the capture holds only the start
// of the body.
func (r *Redactor) Body(contentType string, body []byte, truncated bool, max int) string {
	if len(body) == 0 {
		return ""
	}
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	var out string
	switch {
	case mt == "application/json" || strings.HasSuffix(mt, "+json"):
		out = r.JSON(body, truncated)
	case (mt == "application/x-www-form-urlencoded" || strings.HasPrefix(mt, "text/")) && looksLikeJSON(body, truncated):
		// A JSON document labelled as a form (curl -d '{…}' does) or as
		// text (fetch() labels a string body text/plain) carries its
		// fields all the same; read as a form it would be one field name.
		out = r.JSON(body, truncated)
		if mt == "application/x-www-form-urlencoded" {
			// The backend reads it as a form, though: mask what that
			// reading finds too ({"a":"x&password=…"} sends a password).
			out = r.Form([]byte(out), false) // the JSON reading already cut a truncated tail
		}
	case mt == "application/x-www-form-urlencoded":
		out = r.Form(body, truncated)
	case strings.HasPrefix(mt, "text/"), mt == "application/xml", strings.HasSuffix(mt, "+xml"):
		s := string(body)
		if truncated {
			s = dropPartialTail(s)
		}
		if mt == "text/xml" || mt == "application/xml" || strings.HasSuffix(mt, "+xml") {
			s = r.XML(s)
		}
		out = Block(r.String(s), len(s)+64)
	default:
		return "[body of type " + Text(mt, 100) + " not captured]"
	}
	return cut(out, max)
}

// looksLikeJSON reports whether body is a JSON object or array (or, when
// truncated, the start of one).
func looksLikeJSON(body []byte, truncated bool) bool {
	t := strings.TrimLeft(string(body), " \t\r\n")
	return (strings.HasPrefix(t, "{") || strings.HasPrefix(t, "[")) && validPrefix(body, truncated)
}

// String replaces, anywhere in s, our API keys (sk_/rk_ test/live),
// webhook secrets (whsec_) and card numbers (13–19 Luhn-valid digits,
// optionally grouped by single spaces or dashes) with Mask.
func (r *Redactor) String(s string) string {
	return maskCards(maskKeys(s))
}

// keyPrefixes start secrets we mint; what follows them is masked.
var keyPrefixes = []string{"sk_test_", "sk_live_", "rk_test_", "rk_live_", "whsec_"}

// maskKeys masks every key prefix followed by at least 4 key characters,
// whatever its length: a key cut short by truncation is still masked.
func maskKeys(s string) string {
	if !strings.Contains(s, "k_") && !strings.Contains(s, "whsec_") {
		return s
	}
	var b strings.Builder
	last := 0
	for i := 0; i < len(s); i++ {
		if s[i] != 's' && s[i] != 'r' && s[i] != 'w' {
			continue
		}
		for _, p := range keyPrefixes {
			if !strings.HasPrefix(s[i:], p) {
				continue
			}
			j := i + len(p)
			for j < len(s) && isKeyChar(s[j], p == "whsec_") {
				j++
			}
			if j-i-len(p) < 4 {
				break
			}
			if b.Len() == 0 {
				b.Grow(len(s))
			}
			b.WriteString(s[last:i])
			b.WriteString(Mask)
			last = j
			i = j - 1
			break
		}
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

func isKeyChar(c byte, base64 bool) bool {
	if c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' {
		return true
	}
	return base64 && (c == '+' || c == '/' || c == '=')
}

// maskCards masks card-number-looking digit runs. Only runs starting with
// 2–6 (the major networks' ranges) count, which spares most millisecond and
// microsecond timestamps.
func maskCards(s string) string {
	digits := 0
	for i := 0; i < len(s); i++ {
		if s[i] >= '0' && s[i] <= '9' {
			digits++
		}
	}
	if digits < 13 {
		return s
	}
	// Digit groups with the single separator between consecutive ones.
	type group struct{ start, end int }
	var groups []group
	for i := 0; i < len(s); {
		if s[i] < '0' || s[i] > '9' {
			i++
			continue
		}
		j := i
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		groups = append(groups, group{i, j})
		i = j
	}
	var b strings.Builder
	last := 0
	for i := 0; i < len(groups); i++ {
		// Only a group that is not glued to a previous digit group starts a run.
		n := 0
		var num []byte
		for j := i; j < len(groups); j++ {
			g := groups[j]
			if j > i {
				prev := groups[j-1]
				if g.start-prev.end != 1 || (s[prev.end] != ' ' && s[prev.end] != '-') {
					break
				}
			}
			n += g.end - g.start
			if n > 19 {
				break
			}
			num = append(num, s[g.start:g.end]...)
			if n >= 13 && num[0] >= '2' && num[0] <= '6' && luhn(num) {
				b.WriteString(s[last:groups[i].start])
				b.WriteString(Mask)
				last = g.end
				i = j
				break
			}
		}
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

// luhn reports whether digits pass the Luhn checksum.
func luhn(digits []byte) bool {
	sum := 0
	double := false
	for i := len(digits) - 1; i >= 0; i-- {
		d := int(digits[i] - '0')
		if double {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
		double = !double
	}
	return sum%10 == 0
}

// dropPartialTail removes what may be the cut-off start of a secret at the
// end of a truncated capture: the trailing run of word characters, then
// trailing digit groups, so neither a partial key nor a partial card number
// is kept.
func dropPartialTail(s string) string {
	isWord := func(c byte) bool {
		return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' ||
			c == '_' || c == '-' || c == '+' || c == '/' || c == '='
	}
	i := len(s)
	for i > 0 && isWord(s[i-1]) {
		i--
	}
	for {
		j := i
		for j > 0 && (s[j-1] == ' ' || s[j-1] == '-') {
			j--
		}
		k := j
		for k > 0 && s[k-1] >= '0' && s[k-1] <= '9' {
			k--
		}
		if k == j || j == i {
			break
		}
		i = k
	}
	return s[:i]
}
