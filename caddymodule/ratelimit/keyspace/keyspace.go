// Package keyspace is the Redis layout of rate limits: the names of the keys
// that hold limiter state and of the hash that carries per-organisation and
// per-key overrides, and the encoding of an override. The gateway's
// rate_limit handler reads this layout and the control plane's limits
// package writes the overrides into it, so both import it rather than each
// spelling the names. It has no dependencies, so the control plane does not
// link Caddy to use it.
//
// Every key of one request carries the same Redis Cluster hash tag — the
// organisation id, or "ip:<client ip>" for unauthenticated traffic — so the
// one Lua script that decides a request only touches keys of one slot.
//
//	<prefix>rl:{<tag>}:<env>:<policy>:<value>   GCRA state (theoretical arrival time, µs), PX-expiring
//	<prefix>q:{<tag>}:<env>:<quota>:<value>     quota counter: hash {w: window start (unix s), n: used}, expiring at window end
//	<prefix>limits:{<org>}                      overrides: hash, see Field and Encode
//	<prefix>limits:index                        set of organisations that have an overrides hash (for Sync)
//	<prefix>limits:quotas                       the quotas gateways enforce, for the dashboard: see Published
//	<prefix>limits:names                        the names of their policies and quotas: see PublishedNames
package keyspace

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/bits"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// DefaultPrefix starts every key unless a deployment configures another.
const DefaultPrefix = "gatehouse:"

// PrefixVariable names the environment variable that sets another prefix,
// for stacks sharing one Redis: the control plane writes overrides and
// reads meters under it, and rate_limit uses it when its key_prefix is left
// out, so the two agree.
const PrefixVariable = "RATE_LIMIT_KEY_PREFIX"

// ValidPrefix checks a key prefix.
func ValidPrefix(p string) error {
	if strings.ContainsAny(p, "{}") {
		return fmt.Errorf("key prefix %q must not contain braces (they would break Redis Cluster hash tags)", p)
	}
	return nil
}

// Environments as they appear in key names and override fields.
const (
	Live    = "live"
	Sandbox = "sandbox"
)

// Env is the environment segment for livemode.
func Env(livemode bool) string {
	if livemode {
		return Live
	}
	return Sandbox
}

// namePattern is what a policy or quota name may look like: it appears in
// Redis keys, override fields (where ':' separates parts), metric labels and
// the quoted names of the RateLimit headers, so it stays a plain token.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidName reports whether name can name a policy or quota.
func ValidName(name string) bool { return namePattern.MatchString(name) }

// maxValueLen bounds the partition value kept verbatim in a key name; longer
// values (a path, say) are hashed so a hostile client cannot make keys large.
const maxValueLen = 64

// Tag is the hash tag of a request's keys: the organisation when known,
// otherwise the client IP.
func Tag(org, clientIP string) string {
	if org != "" {
		return org
	}
	return "ip:" + clientIP
}

// Bucket is the key of a GCRA policy's state for one partition value.
func Bucket(prefix, tag, env, policy, value string) string {
	return prefix + "rl:{" + tag + "}:" + env + ":" + policy + ":" + compact(value)
}

// Counter is the key of a quota's counter for one partition value.
func Counter(prefix, tag, env, quota, value string) string {
	return prefix + "q:{" + tag + "}:" + env + ":" + quota + ":" + compact(value)
}

// hashedPrefix starts a hashed partition value.
const hashedPrefix = "sha256:"

// compact keeps a short value verbatim and hashes a long one. A short value
// that starts like a hashed one is hashed too: verbatim, a client could send
// the hashed form of another partition's value and share its bucket. Adding
// a marker to hashed values instead would move every long value's key on
// upgrade; this way only values nobody sends by chance change key.
func compact(v string) string {
	if len(v) <= maxValueLen && !strings.HasPrefix(v, hashedPrefix) {
		return v
	}
	sum := sha256.Sum256([]byte(v))
	return hashedPrefix + hex.EncodeToString(sum[:16])
}

// Overrides is the key of an organisation's overrides hash. Its hash tag is
// the organisation, the same as the request's state keys, so the script
// reads it in the same round trip even on a Redis Cluster.
func Overrides(prefix, org string) string { return prefix + "limits:{" + org + "}" }

// Index is the set of organisations that have an overrides hash.
func Index(prefix string) string { return prefix + "limits:index" }

// Field is the overrides-hash field of a policy for a whole organisation
// (keyID "") or for one API key: "<env>:<policy>" or "<env>:<policy>:<key>".
// A key's field wins over the organisation's.
func Field(env, policy, keyID string) string {
	if keyID == "" {
		return env + ":" + policy
	}
	return env + ":" + policy + ":" + keyID
}

// Override is one override as stored in Redis.
type Override struct {
	// Quota is the number of requests per Window for a rate policy, or the
	// request quota for the period of a quota (whose calendar period stays
	// as configured; Window is then ignored).
	Quota int64
	// Window is in whole seconds.
	Window int64
	// Burst is the GCRA burst; 0 means Quota.
	Burst int64
}

// Bounds of every limit, configured in the Caddyfile or overridden by the
// control plane. The script works in doubles, which hold integers exactly up
// to 2^53, and what it returns becomes a Redis integer (at most 2^63-1): within
// these bounds every count, window and theoretical arrival time it computes
// stays exact, where a quota of 2^63-1 came back as a negative RateLimit-Policy.
const (
	// MaxCount bounds a rate's requests, a burst and a quota: 10^12.
	MaxCount = 1_000_000_000_000
	// MaxWindow bounds a rate's window, and the time a full burst takes to
	// refill at that rate, in seconds: 366 days.
	MaxWindow = 366 * 24 * 60 * 60
)

// BoundError names the part of a limit that is out of bounds: "quota",
// "window" or "burst".
type BoundError struct {
	Field  string
	Reason string
}

func (e *BoundError) Error() string { return e.Field + ": " + e.Reason }

// CheckBounds checks a limit of quota requests per window seconds with the
// given burst (0: quota), all positive or zero, against MaxCount and
// MaxWindow.
func CheckBounds(quota, window, burst int64) error {
	switch {
	case quota > MaxCount:
		return &BoundError{"quota", fmt.Sprintf("%d is over the most a limit can count, %d", quota, int64(MaxCount))}
	case window > MaxWindow:
		return &BoundError{"window", fmt.Sprintf("%d seconds is longer than the longest window, %d seconds (366 days)", window, MaxWindow)}
	case burst > MaxCount:
		return &BoundError{"burst", fmt.Sprintf("%d is over the most a limit can count, %d", burst, int64(MaxCount))}
	}
	// A full burst refills in burst × window ÷ quota seconds; compare the
	// products in 128 bits.
	bh, bl := bits.Mul64(uint64(burst), uint64(window))
	qh, ql := bits.Mul64(uint64(quota), MaxWindow)
	if bh > qh || bh == qh && bl > ql {
		return &BoundError{"burst", fmt.Sprintf("a burst of %d at %d requests per %d seconds takes longer than 366 days to refill", burst, quota, window)}
	}
	return nil
}

// Encode renders o as the hash value the Lua script parses: "q w b".
func Encode(o Override) string {
	return strconv.FormatInt(o.Quota, 10) + " " + strconv.FormatInt(o.Window, 10) + " " + strconv.FormatInt(o.Burst, 10)
}

// Decode parses a value written by Encode.
func Decode(s string) (Override, error) {
	parts := strings.Split(s, " ")
	if len(parts) != 3 {
		return Override{}, fmt.Errorf("override %q: want \"quota window burst\"", s)
	}
	var n [3]int64
	for i, p := range parts {
		v, err := strconv.ParseInt(p, 10, 64)
		if err != nil || v < 0 {
			return Override{}, fmt.Errorf("override %q: %q is not a non-negative integer", s, p)
		}
		n[i] = v
	}
	if n[0] == 0 || n[1] == 0 {
		return Override{}, fmt.Errorf("override %q: quota and window must be positive", s)
	}
	if err := CheckBounds(n[0], n[1], n[2]); err != nil {
		return Override{}, fmt.Errorf("override %q: %w", s, err)
	}
	return Override{Quota: n[0], Window: n[1], Burst: n[2]}, nil
}

// Published is the hash in which every gateway's rate_limit handler
// publishes the quotas it enforces, field the quota's name, value a
// QuotaSpec as JSON, so that the dashboard can show each organisation how
// much of them it has used. Handlers republish every PublishEvery; a spec
// not republished for StaleAfter belongs to a configuration no longer
// running (a quota renamed or removed) and is ignored; the hash itself
// expires StaleAfter after the last publication.
func Published(prefix string) string { return prefix + "limits:quotas" }

// PublishedNames is the hash in which every gateway's rate_limit handler
// publishes the names of its policies and quotas, field the name, value
// the Unix second of the publication, republished and expiring as
// Published is: the control plane warns of an override naming none of them.
func PublishedNames(prefix string) string { return prefix + "limits:names" }

// How often quotas are republished, and when a spec is stale.
const (
	PublishEvery = time.Minute
	StaleAfter   = 5 * PublishEvery
)

// What a quota is counted per, from its key template.
const (
	PerOrganization = "organization" // {http.auth.api_key.org_id}
	PerAPIKey       = "api_key"      // {http.auth.api_key.key_id}
	PerOther        = "other"        // anything else: a client IP, a header…
)

// Quota periods: calendar months, days and hours, UTC.
const (
	PeriodMonth = "month"
	PeriodDay   = "day"
	PeriodHour  = "hour"
)

// QuotaSpec is one quota as a gateway publishes it.
type QuotaSpec struct {
	Name    string `json:"name"`
	Live    int64  `json:"live"`    // requests per period, live keys (and unauthenticated requests)
	Sandbox int64  `json:"sandbox"` // requests per period, sandbox keys
	Period  string `json:"period"`  // PeriodMonth, PeriodDay or PeriodHour
	Per     string `json:"per"`     // PerOrganization, PerAPIKey or PerOther
	// Matched is set when the quota counts only the requests its matchers
	// select (a route, a method).
	Matched     bool      `json:"matched,omitempty"`
	PublishedAt time.Time `json:"published_at"`
}

// Window is the calendar period of q that contains t: [start, end).
func (q QuotaSpec) Window(t time.Time) (start, end time.Time) {
	t = t.UTC()
	switch q.Period {
	case PeriodHour:
		start = t.Truncate(time.Hour)
		return start, start.Add(time.Hour)
	case PeriodDay:
		start = time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 0, 1)
	default:
		start = time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 1, 0)
	}
}

// CounterWindow is the field of a quota counter (see Counter) holding the
// start of the window it counts, in Unix seconds; CounterUsed holds the
// requests counted in it.
const (
	CounterWindow = "w"
	CounterUsed   = "n"
)
