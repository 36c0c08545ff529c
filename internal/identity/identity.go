// Package identity carries the caller's verified identity from the gateway to
// upstream services (DESIGN §6). The gateway strips whatever identity headers
// a client sent, then sets its own and an HMAC-SHA256 signature over them,
// a timestamp, and the request's method and target: signed headers seen on
// the way to a backend cannot be replayed onto another request (another
// method, path or query) within the timestamp's five minutes. A backend in
// this module wraps its handler with Verifier.Middleware to trust those
// headers and nothing else; one in another module cannot import an internal
// package, so it copies this one or checks X-Gateway-Signature itself (the
// README gives the format).
package identity

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/internal/apierror"
)

// Header names. Request-Id and Api-Version are public headers that are also
// covered by the signature.
const (
	HeaderOrg        = "X-Org-Id"
	HeaderLivemode   = "X-Livemode"
	HeaderKeyID      = "X-Api-Key-Id"
	HeaderScopes     = "X-Scopes"
	HeaderRequestID  = "Request-Id"
	HeaderAPIVersion = "Api-Version"
	HeaderSignature  = "X-Gateway-Signature"
)

// identityHeaders are removed from every inbound client request.
var identityHeaders = []string{HeaderOrg, HeaderLivemode, HeaderKeyID, HeaderScopes, HeaderSignature}

// AllScopes is the X-Scopes value of a secret key: every scope.
const AllScopes = "*"

// Identity is who is calling, as established by the gateway.
type Identity struct {
	OrgID      string
	Livemode   bool
	KeyID      string
	Scopes     []string // ["*"] for secret keys
	RequestID  string
	APIVersion string
}

// HasScope reports whether the identity may use scope.
func (id Identity) HasScope(scope string) bool {
	for _, s := range id.Scopes {
		if s == scope || s == AllScopes {
			return true
		}
	}
	return false
}

// Strip removes client-sent identity headers. The gateway calls it on every
// request, authenticated or not, before anything can read them.
func Strip(h http.Header) {
	for _, k := range identityHeaders {
		h.Del(k)
	}
}

// Signer signs identities with a shared secret.
type Signer struct {
	macs *macPool
	now  func() time.Time
}

// macPool reuses keyed HMAC states: keying HMAC-SHA256 costs two block
// compressions and several allocations, which the gateway would otherwise
// pay on every request.
type macPool struct{ p sync.Pool }

func newMACPool(secret []byte) *macPool {
	key := bytes.Clone(secret)
	return &macPool{p: sync.Pool{New: func() any { return hmac.New(sha256.New, key) }}}
}

// sum is the MAC over the timestamp, the method, the target and every
// identity field, each terminated by a newline so that no field can bleed
// into the next.
func (mp *macPool) sum(fields ...string) string {
	m := mp.p.Get().(hash.Hash)
	m.Reset()
	var buf [512]byte
	b := buf[:0]
	for _, f := range fields {
		b = append(b, f...)
		b = append(b, '\n')
	}
	m.Write(b)
	var out [sha256.Size]byte
	sum := m.Sum(out[:0])
	mp.p.Put(m)
	return hex.EncodeToString(sum)
}

// NewSigner returns a signer; now may be nil for time.Now.
func NewSigner(secret []byte, now func() time.Time) *Signer {
	if now == nil {
		now = time.Now
	}
	return &Signer{macs: newMACPool(secret), now: now}
}

// Apply strips r's client identity headers and sets the signed ones, for
// r's method and target as they stand (see Sign).
func (s *Signer) Apply(r *http.Request, id Identity) {
	s.Sign(r.Header, r.Method, r.URL.RequestURI(), id)
}

// Sign strips client identity headers from h and sets the signed ones, for
// a request with that method and target (path and query, as
// url.URL.RequestURI gives them and as the request line carries them to
// the backend). Rewriting the target after signing, between the gateway's
// api_key and the backend, makes the backend refuse the request.
func (s *Signer) Sign(h http.Header, method, target string, id Identity) {
	Strip(h)
	scopes := strings.Join(id.Scopes, ",")
	live := strconv.FormatBool(id.Livemode)
	h.Set(HeaderOrg, id.OrgID)
	h.Set(HeaderLivemode, live)
	h.Set(HeaderKeyID, id.KeyID)
	h.Set(HeaderScopes, scopes)
	h.Set(HeaderRequestID, id.RequestID)
	h.Set(HeaderAPIVersion, id.APIVersion)
	ts := strconv.FormatInt(s.now().Unix(), 10)
	h.Set(HeaderSignature, "t="+ts+",v2="+s.macs.sum(ts, method, target, id.OrgID, live, id.KeyID, scopes, id.RequestID, id.APIVersion))
}

// Verification errors.
var (
	ErrMissing   = errors.New("identity signature missing")
	ErrMalformed = errors.New("identity signature malformed")
	ErrStale     = errors.New("identity signature timestamp outside the allowed window")
	ErrMismatch  = errors.New("identity signature does not match")
)

// DefaultMaxSkew is how old (or how far in the future) a signature may be.
const DefaultMaxSkew = 5 * time.Minute

// Verifier checks signed identities.
type Verifier struct {
	macs    *macPool
	maxSkew time.Duration
	now     func() time.Time
}

// NewVerifier returns a verifier accepting signatures up to maxSkew old
// (DefaultMaxSkew when zero); now may be nil for time.Now.
func NewVerifier(secret []byte, maxSkew time.Duration, now func() time.Time) *Verifier {
	if maxSkew <= 0 {
		maxSkew = DefaultMaxSkew
	}
	if now == nil {
		now = time.Now
	}
	return &Verifier{macs: newMACPool(secret), maxSkew: maxSkew, now: now}
}

// Verify returns the identity in r's headers if their signature is valid,
// fresh, and made for r's method and target.
func (v *Verifier) Verify(r *http.Request) (Identity, error) {
	h := r.Header
	sig := h.Get(HeaderSignature)
	if sig == "" {
		return Identity{}, ErrMissing
	}
	tPart, macPart, ok := strings.Cut(sig, ",")
	ts, ok1 := strings.CutPrefix(tPart, "t=")
	mac, ok2 := strings.CutPrefix(macPart, "v2=")
	if !ok || !ok1 || !ok2 {
		return Identity{}, ErrMalformed
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return Identity{}, ErrMalformed
	}
	if d := v.now().Sub(time.Unix(sec, 0)); d > v.maxSkew || d < -v.maxSkew {
		return Identity{}, ErrStale
	}
	id := Identity{
		OrgID:      h.Get(HeaderOrg),
		KeyID:      h.Get(HeaderKeyID),
		RequestID:  h.Get(HeaderRequestID),
		APIVersion: h.Get(HeaderAPIVersion),
	}
	live, scopes := h.Get(HeaderLivemode), h.Get(HeaderScopes)
	want := v.macs.sum(ts, r.Method, r.URL.RequestURI(), id.OrgID, live, id.KeyID, scopes, id.RequestID, id.APIVersion)
	if !hmac.Equal([]byte(want), []byte(mac)) {
		return Identity{}, ErrMismatch
	}
	id.Livemode = live == "true"
	if scopes != "" {
		id.Scopes = strings.Split(scopes, ",")
	}
	return id, nil
}

type ctxKey struct{}

// NewContext returns ctx carrying id.
func NewContext(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the identity the middleware verified.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(Identity)
	return id, ok
}

// PlausibleRequestID accepts short ids of letters, digits, '_' and '-',
// which is every id the gateway mints and nothing that could mangle a log
// line or a response header. A service echoes a request's Request-Id only
// when it is plausible, and mints its own otherwise.
func PlausibleRequestID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Middleware refuses requests without a valid identity (401 error object)
// and puts the identity in the request context for next. It echoes a
// plausible request id (PlausibleRequestID) so upstream errors carry the
// same one as the gateway's.
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rid := r.Header.Get(HeaderRequestID); PlausibleRequestID(rid) {
			w.Header().Set(HeaderRequestID, rid)
		}
		id, err := v.Verify(r)
		if err != nil {
			apierror.Write(w, apierror.Authentication("identity_invalid",
				"This service only accepts requests through the API gateway ("+err.Error()+")."))
			return
		}
		next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), id)))
	})
}
