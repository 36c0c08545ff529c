package ratelimit

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/gatehouse/gatehouse/internal/apierror"
)

// The response fields of draft-ietf-httpapi-ratelimit-headers (-10/-11):
// Structured Field lists whose items are the policy name as an sf-string.
//
//	RateLimit-Policy: "per-key";q=100;w=1, "monthly";q=1000000;w=2678400
//	RateLimit: "per-key";r=37;t=1
//
// RateLimit-Policy lists every limit applied to the request: q is the quota
// (requests per window for GCRA policies, the period's quota for quotas) and
// w the window in seconds. When a GCRA policy's burst differs from its rate,
// the vendor parameter gatehouse-burst carries it (the draft asks for a
// vendor prefix on implementation-specific parameters). RateLimit names the
// single limit closest to exhaustion: r is what is left of it and t the
// seconds until it is fully available again — or, on a refusal, until the
// request can succeed, which is then also Retry-After.
//
// The names are kept in Go's canonical form so that setting them costs no
// canonicalisation; field names are case-insensitive on the wire (and
// lower-case in HTTP/2 and 3).
const (
	headerPolicy = "Ratelimit-Policy"
	headerLimit  = "Ratelimit"
)

func setHeaders(h http.Header, ds []decision, closest int) {
	b := make([]byte, 0, 40*len(ds))
	for i, d := range ds {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = appendItem(b, d.limit.name)
		b = append(b, ";q="...)
		b = strconv.AppendInt(b, int64(d.Limit.Rate), 10)
		b = append(b, ";w="...)
		b = strconv.AppendInt(b, int64(d.Limit.Period/time.Second), 10)
		if !d.limit.quota && d.Limit.Burst != d.Limit.Rate {
			b = append(b, ";gatehouse-burst="...)
			b = strconv.AppendInt(b, int64(d.Limit.Burst), 10)
		}
	}
	h[headerPolicy] = []string{string(b)}

	d := ds[closest]
	b = appendItem(b[:0], d.limit.name)
	b = append(b, ";r="...)
	b = strconv.AppendInt(b, int64(d.Remaining), 10)
	b = append(b, ";t="...)
	b = strconv.AppendInt(b, d.effectiveWindow(), 10)
	h[headerLimit] = []string{string(b)}
}

// appendItem appends name as an sf-string. Names are validated tokens, so
// nothing needs escaping.
func appendItem(b []byte, name string) []byte {
	b = append(b, '"')
	b = append(b, name...)
	return append(b, '"')
}

// effectiveWindow is t: whole seconds, rounded up so a client that waits t
// is never early.
func (d decision) effectiveWindow() int64 {
	if !d.allowed() {
		return ceilSeconds(d.RetryAfter)
	}
	return ceilSeconds(d.ResetAfter)
}

func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// closest picks the limit the RateLimit field reports. If the request was
// refused, it is the refusing limit that frees up last (that is when the
// request could succeed); otherwise the one with the fewest requests left
// (the one that refuses first), then the smallest fraction of its capacity
// left, the first on ties.
func closest(ds []decision) int {
	best := -1
	for i, d := range ds {
		if !d.allowed() && (best < 0 || ds[best].allowed() || d.RetryAfter > ds[best].RetryAfter) {
			best = i
		}
	}
	if best >= 0 {
		return best
	}
	best = 0
	for i := 1; i < len(ds); i++ {
		// Every limit counts the same requests, so the one with the fewest
		// left refuses first: r must be what the client can still send.
		// Among equals, the smallest fraction of its capacity left
		// (remaining/capacity compared without division: capacity is the
		// burst of a GCRA policy or the quota).
		a, b := ds[i], ds[best]
		if a.Remaining < b.Remaining || a.Remaining == b.Remaining &&
			int64(a.Remaining)*int64(b.Limit.Burst) < int64(b.Remaining)*int64(a.Limit.Burst) {
			best = i
		}
	}
	return best
}

// refusal is the error object for a request that d refused at now.
func refusal(d decision, now time.Time) *apierror.Error {
	retry := ceilSeconds(d.RetryAfter)
	if retry < 1 {
		retry = 1
	}
	if d.limit.quota {
		reset := now.Add(d.ResetAfter).UTC().Truncate(time.Second)
		e := apierror.New(http.StatusTooManyRequests, apierror.TypeRateLimit, "quota_exceeded",
			fmt.Sprintf("The request quota '%s' (%d requests per %s) is used up. It resets at %s.",
				d.limit.name, d.Limit.Rate, d.limit.period, reset.Format(time.RFC3339)))
		e.RetryAfter = int(retry)
		return e
	}
	e := apierror.New(http.StatusTooManyRequests, apierror.TypeRateLimit, "rate_limited",
		fmt.Sprintf("Too many requests: rate limit '%s' allows %d requests per %s. Retry after %d %s.",
			d.limit.name, d.Limit.Rate, per(d.Limit.Period), retry, plural(retry, "second")))
	e.RetryAfter = int(retry)
	return e
}

func per(d time.Duration) string {
	switch d {
	case time.Second:
		return "second"
	case time.Minute:
		return "minute"
	case time.Hour:
		return "hour"
	case 24 * time.Hour:
		return "day"
	}
	return fmt.Sprintf("%d seconds", int64(d/time.Second))
}

func plural(n int64, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
