// Package apikey is the api_key handler (http.handlers.api_key): it
// authenticates requests with the platform's API keys (DESIGN §5), enforces
// environments, IP allowlists and the scopes of restricted keys, resolves
// the API version, and hands the upstream a signed identity (DESIGN §6)
// instead of the key.
//
// Keys are looked up by SHA-256 hash in Postgres and cached in memory. The
// control plane announces every change of an existing key with NOTIFY on
// the gatehouse_api_keys channel, which evicts the key from every gateway's
// cache within milliseconds; the TTL is only a backstop. While Postgres is
// down, cached keys keep working and unknown keys get a 503, never a 401.
//
// Refusals are returned as errors carrying the *apierror.Error; request_id,
// which must come earlier in the chain, renders them as error objects.
package apikey

import (
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/gatehouse/gatehouse/caddymodule/requestid"
	"github.com/gatehouse/gatehouse/internal/apierror"
	keyformat "github.com/gatehouse/gatehouse/internal/apikey"
	"github.com/gatehouse/gatehouse/internal/apiversion"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ids"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Placeholders set once the key is identified (also when the request is
// then refused for expiry, IP or scope, so logs can attribute the refusal),
// and the resolved API version.
const (
	PlaceholderOrgID       = "http.auth.api_key.org_id"
	PlaceholderKeyID       = "http.auth.api_key.key_id"
	PlaceholderLivemode    = "http.auth.api_key.livemode"    // "true" or "false"
	PlaceholderEnvironment = "http.auth.api_key.environment" // "sandbox" or "live"
	PlaceholderKind        = "http.auth.api_key.kind"        // "secret" or "restricted"
	PlaceholderScopes      = "http.auth.api_key.scopes"      // comma-separated; "*" for secret keys
	PlaceholderAPIVersion  = "http.api_version"
	// PlaceholderBodyCapture is "true" when the organisation turned on body
	// capture for the key's environment (request_log reads it).
	PlaceholderBodyCapture = "http.auth.api_key.body_capture"
	// PlaceholderRefused is "true" when the key was identified (the
	// placeholders above are set) and the request then refused: expired,
	// outside the IP allowlist, a scope or API version it lacks. The
	// request log keeps such refusals under the organisation, and usage
	// does not meter them.
	PlaceholderRefused = "http.auth.api_key.refused"
	// placeholderUserID is Caddy's convention for the authenticated user;
	// access logs show it as user_id.
	placeholderUserID = "http.auth.user.id"
)

// Placeholders are the names of the placeholders this handler sets, for
// handlers that partition by them (rate_limit refuses a key naming another
// one under http.auth.api_key., a typo that would never be set).
var Placeholders = []string{PlaceholderOrgID, PlaceholderKeyID, PlaceholderLivemode, PlaceholderEnvironment,
	PlaceholderKind, PlaceholderScopes, PlaceholderBodyCapture}

// Var keys among the request's vars, for handlers written in Go.
const (
	VarPrincipal  = "gatehouse.api_key"     // *Principal; see FromRequest
	VarAPIVersion = "gatehouse.api_version" // string
)

// Principal is the caller the api_key handler authenticated.
type Principal struct {
	KeyID       string
	OrgID       string
	Environment keyformat.Environment
	Livemode    bool
	Kind        keyformat.Kind
	// Scopes of a restricted key; ["*"] for a secret key.
	Scopes []string
}

// FromRequest returns the principal authenticated for r by an api_key
// handler earlier in the chain, or nil.
func FromRequest(r *http.Request) *Principal {
	p, _ := caddyhttp.GetVar(r.Context(), VarPrincipal).(*Principal)
	return p
}

// APIVersion returns the API version resolved for r, or "".
func APIVersion(r *http.Request) string {
	v, _ := caddyhttp.GetVar(r.Context(), VarAPIVersion).(string)
	return v
}

var allScopes = []string{identity.AllScopes}

// Handler authenticates API keys. Settings marked "store" are shared by all
// handlers with the same database_url and store settings (one pool, cache
// and LISTEN connection), and survive config reloads.
type Handler struct {
	// DatabaseURL is the Postgres URL of the key store. Placeholders are
	// expanded once at provisioning, so {env.DATABASE_URL} keeps the
	// secret out of the config. Default: $DATABASE_URL, else the local
	// development database.
	DatabaseURL string `json:"database_url,omitempty"`

	// IdentitySecret is the HMAC key that signs the identity headers sent
	// upstream. Placeholders are expanded at provisioning. Default:
	// $IDENTITY_SECRET, else the development secret (with a warning).
	IdentitySecret string `json:"identity_secret,omitempty"`

	// Scopes maps requests to the scope a restricted key needs; see
	// ScopeRule. Secret keys need none. Restricted keys are refused on
	// requests that no rule matches.
	Scopes []ScopeRule `json:"scopes,omitempty"`

	// CacheTTL is how long a cached key is used before it is re-read in
	// the background. Revocations arrive by notification long before;
	// this is the backstop. Default: 5m.
	CacheTTL caddy.Duration `json:"cache_ttl,omitempty"`

	// NegativeCacheTTL is how long "no such key" (or revoked) is
	// remembered. Default: 10s.
	NegativeCacheTTL caddy.Duration `json:"negative_cache_ttl,omitempty"`

	// CacheSize bounds the number of cached keys (store); unknown keys get
	// a quarter of that on top. Default: 100000.
	CacheSize int `json:"cache_size,omitempty"`

	// QueryTimeout bounds every Postgres call (store). Default: 2s.
	QueryTimeout caddy.Duration `json:"query_timeout,omitempty"`

	// LastUsedFlushInterval is how often the last use of keys is written
	// to api_keys.last_used_at, in one batched statement (store).
	// Default: 30s.
	LastUsedFlushInterval caddy.Duration `json:"last_used_flush_interval,omitempty"`

	// UnknownKeyLimit is how many lookups finding no such key one client
	// address (an IPv4 address, or an IPv6 /64) may cause per second.
	// Past it, that address's keys not in the cache get 429 rate_limited
	// until the second ends, so made-up keys cannot fill the key store's
	// Postgres pool; cached keys are always served. -1 turns it off.
	// Default: 10.
	UnknownKeyLimit int `json:"unknown_key_limit,omitempty"`

	storeCfg    storeConfig
	store       *store
	signer      *identity.Signer
	rules       []rule
	ttl         time.Duration
	negativeTTL time.Duration
	unknown     *unknownKeys
	now         func() time.Time
	logger      *zap.Logger
}

// Defaults of the configuration.
const (
	DefaultCacheTTL              = 5 * time.Minute
	DefaultNegativeCacheTTL      = 10 * time.Second
	DefaultCacheSize             = 100_000
	DefaultQueryTimeout          = 2 * time.Second
	DefaultLastUsedFlushInterval = 30 * time.Second
	DefaultUnknownKeyLimit       = 10
)

// clock is the time source of new handlers; tests replace it.
var clock = time.Now

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.api_key",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision fills defaults and acquires the shared key store.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.now = clock
	if h.CacheTTL == 0 {
		h.CacheTTL = caddy.Duration(DefaultCacheTTL)
	}
	if h.NegativeCacheTTL == 0 {
		h.NegativeCacheTTL = caddy.Duration(DefaultNegativeCacheTTL)
	}
	if h.CacheSize == 0 {
		h.CacheSize = DefaultCacheSize
	}
	if h.QueryTimeout == 0 {
		h.QueryTimeout = caddy.Duration(DefaultQueryTimeout)
	}
	if h.LastUsedFlushInterval == 0 {
		h.LastUsedFlushInterval = caddy.Duration(DefaultLastUsedFlushInterval)
	}
	if h.UnknownKeyLimit == 0 {
		h.UnknownKeyLimit = DefaultUnknownKeyLimit
	}
	h.ttl, h.negativeTTL = time.Duration(h.CacheTTL), time.Duration(h.NegativeCacheTTL)
	h.unknown = &unknownKeys{limit: max(h.UnknownKeyLimit, 0)}

	repl := caddy.NewReplacer()
	secret := repl.ReplaceAll(h.IdentitySecret, "")
	if secret == "" {
		secret = config.String("IDENTITY_SECRET", config.DefaultIdentitySecret)
	}
	if secret == config.DefaultIdentitySecret {
		h.logger.Warn("signing upstream identities with the development secret; set IDENTITY_SECRET in production")
	}
	h.signer = identity.NewSigner([]byte(secret), nil)

	var err error
	if h.rules, err = compileRules(ctx, h.Scopes); err != nil {
		return err
	}
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return err
	}
	if err := h.Validate(); err != nil {
		// The store is not acquired for a config that will be refused.
		return err
	}

	dsn := repl.ReplaceAll(h.DatabaseURL, "")
	if dsn == "" {
		dsn = config.String("DATABASE_URL", config.DefaultDatabaseURL)
	}
	h.storeCfg = storeConfig{
		dsn:           dsn,
		cacheSize:     h.CacheSize,
		queryTimeout:  time.Duration(h.QueryTimeout),
		flushInterval: time.Duration(h.LastUsedFlushInterval),
	}
	h.store, err = acquireStore(h.storeCfg)
	return err
}

// Validate checks the configuration.
func (h *Handler) Validate() error {
	for _, sr := range h.Scopes {
		if err := sr.validate(); err != nil {
			return fmt.Errorf("api_key: %w", err)
		}
	}
	for name, d := range map[string]caddy.Duration{
		"cache_ttl": h.CacheTTL, "negative_cache_ttl": h.NegativeCacheTTL,
		"query_timeout": h.QueryTimeout, "last_used_flush_interval": h.LastUsedFlushInterval,
	} {
		if d < 0 {
			return fmt.Errorf("api_key: %s must not be negative", name)
		}
	}
	if h.CacheSize < 0 {
		return fmt.Errorf("api_key: cache_size must not be negative")
	}
	if h.UnknownKeyLimit < -1 {
		return fmt.Errorf("api_key: unknown_key_limit must be positive, or -1 for off")
	}
	return nil
}

// Cleanup releases the key store; the last handler using it closes it.
func (h *Handler) Cleanup() error {
	if h.store == nil {
		return nil
	}
	return releaseStore(h.storeCfg)
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	// Whatever the outcome, client-sent identity headers never go further.
	identity.Strip(r.Header)

	key, aerr := credential(r.Header)
	if aerr != nil {
		if aerr == errMissing {
			return h.refuse(w, aerr, authMissing)
		}
		return h.refuse(w, aerr, authMalformed)
	}
	parsed, err := keyformat.Parse(key)
	if err != nil {
		return h.refuse(w, malformedKey(err, key), authMalformed)
	}
	now := h.now()
	hash := hashKey(key)
	rec, found := h.store.cached(hash, now, h.ttl, h.negativeTTL)
	if !found {
		ip := clientAddr(r)
		if !h.unknown.begin(ip, hash, now) {
			w.Header().Set("Retry-After", "1")
			return h.refuse(w, apierror.New(http.StatusTooManyRequests, apierror.TypeRateLimit, "rate_limited",
				fmt.Sprintf("Too many unknown API keys came from %s in the last second (the limit is %d); keys the gateway has not seen are refused from there until it ends. Check which key your client sends.",
					addrName(ip), h.unknown.limit)), authThrottled)
		}
		var err error
		rec, err = h.store.loadShared(r.Context(), hash, now)
		// A client that hung up keeps its place: the load goes on.
		h.unknown.end(hash, rec != nil || (err != nil && r.Context().Err() == nil))
		if err != nil {
			if r.Context().Err() != nil {
				return caddyhttp.Error(499, err)
			}
			return h.refuse(w, errAuthUnavailable, authUnavailable)
		}
	}
	if rec == nil || rec.Kind != parsed.Kind || rec.Environment != parsed.Environment {
		return h.refuse(w, errInvalid, authInvalid)
	}

	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	repl.Set(PlaceholderOrgID, rec.vOrgID)
	repl.Set(PlaceholderKeyID, rec.vKeyID)
	repl.Set(PlaceholderLivemode, rec.vLivemode)
	repl.Set(PlaceholderEnvironment, rec.vEnvironment)
	repl.Set(PlaceholderKind, rec.vKind)
	repl.Set(PlaceholderScopes, rec.vScopes)
	repl.Set(PlaceholderBodyCapture, rec.vBodyCapture)
	repl.Set(placeholderUserID, rec.vKeyID)

	if !rec.expiresAt.IsZero() && !now.Before(rec.expiresAt) {
		return h.refuseIdentified(w, repl, expired(rec), authExpired)
	}
	if len(rec.allow) > 0 {
		if ip, ok := allowed(r, rec.allow); !ok {
			return h.refuseIdentified(w, repl, apierror.Permission("ip_not_allowed",
				"This API key does not accept requests from "+ip+"; it has an IP allowlist. Use it from an allowed address, or have an administrator change the key's allowlist (controlplane keys update --ip-allowlist)."),
				authIPNotAllowed)
		}
	}
	if rec.Kind == keyformat.Restricted {
		if e := h.checkScope(r, rec); e != nil {
			return h.refuseIdentified(w, repl, e, authScopeMissing)
		}
	}
	version, verr := h.resolveVersion(r, rec)
	if verr != nil {
		return h.refuseIdentified(w, repl, verr, authVersionInvalid)
	}
	var boxedVersion any = version // boxed once for both maps
	repl.Set(PlaceholderAPIVersion, boxedVersion)
	caddyhttp.SetVar(r.Context(), VarPrincipal, &rec.Principal)
	caddyhttp.SetVar(r.Context(), VarAPIVersion, boxedVersion)

	// The id request_id generated, never the client's Request-Id header.
	rid, _ := caddyhttp.GetVar(r.Context(), requestid.VarKey).(string)
	if rid == "" {
		// Without request_id earlier in the chain; the upstream still
		// gets an id that matches the response.
		rid = ids.New(ids.Request)
		w.Header().Set(identity.HeaderRequestID, rid)
	}
	h.signer.Apply(r, identity.Identity{
		OrgID:      rec.OrgID,
		Livemode:   rec.Livemode,
		KeyID:      rec.KeyID,
		Scopes:     rec.Scopes,
		RequestID:  rid,
		APIVersion: version,
	})
	// The upstream trusts the signed identity; the key itself stays here.
	delete(r.Header, "Authorization")
	w.Header()[apiversion.Header] = []string{version}

	h.store.touch(rec, now)
	authOK.Inc()
	if c := h.logger.Check(zapcore.DebugLevel, "authenticated"); c != nil {
		c.Write(zap.String("request_id", rid), zap.String("key_id", rec.KeyID), zap.String("organization_id", rec.OrgID))
	}
	return next.ServeHTTP(w, r)
}

var (
	errInvalid = apierror.Authentication("api_key_invalid",
		"The API key is not valid: it does not exist or was revoked. Check that you copied the whole key, or create a new one in the dashboard.")
	errAuthUnavailable = apierror.Unavailable("auth_unavailable",
		"API keys cannot be checked right now. Retry shortly; your key has not been rejected.")
)

// refuse counts the outcome and returns e for request_id to render.
func (h *Handler) refuse(w http.ResponseWriter, e *apierror.Error, result prometheus.Counter) error {
	result.Inc()
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("Www-Authenticate", `Bearer realm="api"`)
	}
	return caddyhttp.Error(e.Status, e)
}

// refuseIdentified refuses a request whose key was identified.
func (h *Handler) refuseIdentified(w http.ResponseWriter, repl *caddy.Replacer, e *apierror.Error, result prometheus.Counter) error {
	repl.Set(PlaceholderRefused, "true")
	return h.refuse(w, e, result)
}

func expired(rec *record) *apierror.Error {
	msg := "This API key expired at " + rec.expiresAt.UTC().Format(time.RFC3339) + "; "
	if rec.rolledTo != "" {
		msg += "use the key it was rolled to (" + rec.rolledTo + ")."
	} else {
		msg += "use another key, or create one in the dashboard."
	}
	return apierror.Authentication("api_key_expired", msg)
}

// clientAddr is the client address as Caddy determined it (honouring
// trusted_proxies) for unknown-key throttling: an IPv4 address, an IPv6
// /64 (what one subscriber usually holds), or an invalid prefix when there
// is none.
func clientAddr(r *http.Request) netip.Prefix {
	s, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}
	}
	ip = ip.Unmap().WithZone("")
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// addrName names a clientAddr in messages.
func addrName(p netip.Prefix) string {
	switch {
	case !p.IsValid():
		return "an unknown address"
	case p.Addr().Is4():
		return p.Addr().String()
	}
	return p.String()
}

// allowed checks the client IP (as Caddy determined it, honouring
// trusted_proxies) against the allowlist.
func allowed(r *http.Request, allow []netip.Prefix) (string, bool) {
	s, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return "an unknown address", false
	}
	ip = ip.Unmap().WithZone("")
	for _, p := range allow {
		if p.Contains(ip) {
			return s, true
		}
	}
	return ip.String(), false
}

func (h *Handler) checkScope(r *http.Request, rec *record) *apierror.Error {
	scope, ok := requiredScope(h.rules, r)
	if !ok {
		return apierror.Permission("scope_missing", fmt.Sprintf(
			"Restricted keys can only call endpoints that a scope covers, and none covers %s %s. Use a secret key.",
			r.Method, r.URL.Path))
	}
	for _, s := range rec.Scopes {
		if s == scope {
			return nil
		}
	}
	return apierror.Permission("scope_missing", fmt.Sprintf(
		"This restricted key lacks the %s scope, which %s %s requires. A key's scopes are set when it is created: use a key that has the scope, or create one.",
		scope, r.Method, r.URL.Path))
}

// resolveVersion picks the API version: the Api-Version header, else the
// organisation's pinned version, else the latest, which is then pinned.
func (h *Handler) resolveVersion(r *http.Request, rec *record) (string, *apierror.Error) {
	pinned := rec.org.Version()
	var v string
	switch vs := r.Header[apiversion.Header]; {
	case len(vs) == 0 && pinned != "":
		v = pinned
	case len(vs) == 0:
		v = apiversion.Latest()
	case len(vs) == 1 && apiversion.Valid(vs[0]):
		v = vs[0]
	default:
		return "", versionInvalid(vs)
	}
	if pinned == "" {
		h.store.pin(rec.org, v)
	}
	return v, nil
}

func versionInvalid(vs []string) *apierror.Error {
	what := "The Api-Version header names a version that does not exist"
	if len(vs) > 1 {
		what = "The request has several Api-Version headers"
	} else if v := vs[0]; len(v) <= 40 && printable(v) {
		what = fmt.Sprintf("Api-Version %q does not exist", v)
	}
	return apierror.InvalidRequest("api_version_invalid", "", fmt.Sprintf(
		"%s. Supported versions: %s (latest: %s). Omit the header to use your organisation's pinned version.",
		what, strings.Join(apiversion.Supported, ", "), apiversion.Latest()))
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// hashKey is keyformat.Hash without the heap copy of the key that
// converting a 50-byte string to []byte costs.
func hashKey(key string) [32]byte {
	var buf [keyformat.Len]byte
	n := copy(buf[:], key)
	return sha256.Sum256(buf[:n])
}

func joinScopes(s []string) string { return strings.Join(s, ",") }

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddy.Destructor            = (*store)(nil)
)
