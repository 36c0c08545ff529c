package idempotency

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
)

// One Redis hash per (scope, key), named <key_prefix><scope>:<key>:
//
//	st      locked | done | too_large | no_store
//	tok     the owner's random token while st = locked (removed on completion)
//	fp      request fingerprint (hex SHA-256 of method, path+query, body)
//	rid     Request-Id of the request that executed
//	status  recorded status code          (done, too_large, no_store)
//	hdr     recorded headers, JSON         (done; see encodeHeader)
//	body    recorded body, raw bytes       (done)
//
// The hash expires lock_ttl after it is created while locked, and ttl after
// completion. Every transition is one Lua script, so each request costs one
// round trip to look up or lock, plus one to record when it executed.
//
// A lock call whose answer did not come in time may still run in Redis
// later, after its request gave up and released it. So a release that finds
// no lock of its token leaves a tombstone, <key_prefix>released:<token>, for
// lock_ttl, and the lock script takes no lock for a token that has one:
// whichever runs first, no lock is left behind.

const (
	stateLocked   = "locked"
	stateDone     = "done"
	stateTooLarge = "too_large"
	// stateNoStore marks a request whose response said Cache-Control:
	// no-store (a secret shown once): executed, and not kept.
	stateNoStore = "no_store"

	// Results of begin that are not stored states.
	stateAcquired = "acquired"
	stateMismatch = "mismatch"
	stateReleased = "released" // this token's lock was released before it was taken
)

// beginScript looks the key up and, when absent, locks it for this request
// in the same step. A present key with another fingerprint is a reuse; the
// recorded response is only sent back when the fingerprint matches, so a
// different request can never read someone else's answer by guessing a key.
//
// KEYS[1] record, KEYS[2] tombstone of the token; ARGV token, fingerprint,
// request id, lock ttl (ms), and another fingerprint a record may hold for
// the same request ("" for none: see fingerprints).
var beginScript = redis.NewScript(`
local r = redis.call('HMGET', KEYS[1], 'st', 'fp', 'status', 'hdr', 'body', 'rid')
if not r[1] then
  if redis.call('EXISTS', KEYS[2]) == 1 then
    return {'released'}
  end
  redis.call('HSET', KEYS[1], 'st', 'locked', 'tok', ARGV[1], 'fp', ARGV[2], 'rid', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {'acquired'}
end
if r[2] ~= ARGV[2] and (ARGV[5] == '' or r[2] ~= ARGV[5]) then
  return {'mismatch'}
end
return {r[1], r[3], r[4], r[5], r[6]}
`)

// completeScript records the outcome, but only for the lock's owner: a
// gateway whose lock expired (it was too slow, or Redis lost the write) must
// not overwrite what a later owner recorded.
//
// KEYS[1] record; ARGV token, state, ttl (ms), status, headers, body.
var completeScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'tok') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'st', ARGV[2], 'status', ARGV[4], 'hdr', ARGV[5], 'body', ARGV[6])
redis.call('HDEL', KEYS[1], 'tok')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
`)

// releaseScript drops the lock of a request that did not execute, again
// only for its owner; when the token holds no lock, it leaves the token's
// tombstone, so that its lock call, should it still be on its way, takes
// none.
//
// KEYS[1] record, KEYS[2] tombstone of the token; ARGV token, lock ttl (ms).
var releaseScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'tok') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return 0
`)

// errLockLost means the record no longer belongs to this request: its lock
// expired before the outcome could be recorded.
var errLockLost = errors.New("idempotency lock lost before completion")

// errReleased means begin found its token's tombstone: the request gave up
// on this call and released the lock before Redis ran it.
var errReleased = errors.New("idempotency lock released before it was taken")

// store is the Redis side of the handler.
type store struct {
	// client takes the locks: batched, and refused at once while Redis is
	// not answering (redispool.Batcher and its circuit breaker), so a keyed
	// request gets its 503 without waiting.
	client redis.Scripter
	// direct records outcomes and releases locks: batched too, but always
	// tried (Batcher.Always), because the upstream has already run —
	// refusing to record would let a retry run it again once the lock
	// expires.
	direct redis.Scripter
	// prefix is the handler's key_prefix, under which tombstones live.
	prefix string
}

// tombstone is the Redis key that says token's lock was released.
func (s *store) tombstone(token string) string { return s.prefix + "released:" + token }

// lookup is what begin found for a key.
type lookup struct {
	state     string // acquired, mismatch, locked, done, too_large, no_store
	requestID string // of the original request (locked, done, too_large)
	resp      response
}

// response is a recorded response.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (s *store) begin(ctx context.Context, key, token, fp, altFP, requestID string, lockTTL time.Duration) (lookup, error) {
	v, err := beginScript.Run(ctx, s.client, []string{key, s.tombstone(token)}, token, fp, requestID, lockTTL.Milliseconds(), altFP).Slice()
	if err != nil {
		return lookup{}, fmt.Errorf("locking idempotency key: %w", err)
	}
	if len(v) == 0 {
		return lookup{}, errors.New("locking idempotency key: empty reply")
	}
	l := lookup{state: str(v[0])}
	switch l.state {
	case stateAcquired, stateMismatch:
		return l, nil
	case stateReleased:
		return lookup{}, errReleased
	case stateLocked, stateDone, stateTooLarge, stateNoStore:
	default:
		return lookup{}, fmt.Errorf("idempotency record in unknown state %q", l.state)
	}
	if len(v) != 5 {
		return lookup{}, fmt.Errorf("idempotency record: %d fields in reply", len(v))
	}
	l.requestID = str(v[4])
	if l.state == stateLocked {
		return l, nil
	}
	if l.resp.status, err = strconv.Atoi(str(v[1])); err != nil {
		return lookup{}, fmt.Errorf("idempotency record status: %w", err)
	}
	if l.state == stateDone {
		if l.resp.header, err = decodeHeader(str(v[2])); err != nil {
			return lookup{}, fmt.Errorf("idempotency record headers: %w", err)
		}
		l.resp.body = []byte(str(v[3]))
	}
	return l, nil
}

// complete records the outcome under the lock identified by token.
func (s *store) complete(ctx context.Context, key, token, state string, ttl time.Duration, resp response) error {
	hdr, err := encodeHeader(resp.header)
	if err != nil {
		return fmt.Errorf("encoding recorded headers: %w", err)
	}
	ok, err := completeScript.Run(ctx, s.direct, []string{key}, token, state, ttl.Milliseconds(),
		resp.status, hdr, resp.body).Int()
	if err != nil {
		return fmt.Errorf("recording idempotent response: %w", err)
	}
	if ok == 0 {
		return errLockLost
	}
	return nil
}

// rawHeaderMark starts a recorded header set whose values are base64.
// JSON only carries UTF-8, and a header value may hold other bytes
// (obs-text, RFC 9110 §5.5, such as a Latin-1 file name): as a JSON string
// it would be replayed with U+FFFD in their place. JSON never starts with
// the mark, so records written as plain JSON still read.
const rawHeaderMark = "b64:"

// encodeHeader is the stored form of recorded headers: JSON, with every
// value base64-encoded behind rawHeaderMark when one is not UTF-8.
func encodeHeader(h http.Header) ([]byte, error) {
	if len(h) == 0 {
		return []byte("{}"), nil
	}
	utf8Only := true
	for _, vs := range h {
		for _, v := range vs {
			utf8Only = utf8Only && utf8.ValidString(v)
		}
	}
	if utf8Only {
		return json.Marshal(h)
	}
	enc := make(http.Header, len(h))
	for k, vs := range h {
		e := make([]string, len(vs))
		for i, v := range vs {
			e[i] = base64.StdEncoding.EncodeToString([]byte(v))
		}
		enc[k] = e
	}
	b, err := json.Marshal(enc)
	return append([]byte(rawHeaderMark), b...), err
}

// decodeHeader reads what encodeHeader wrote.
func decodeHeader(s string) (http.Header, error) {
	raw, marked := strings.CutPrefix(s, rawHeaderMark)
	var h http.Header
	if err := json.Unmarshal([]byte(raw), &h); err != nil || !marked {
		return h, err
	}
	for _, vs := range h {
		for i, v := range vs {
			b, err := base64.StdEncoding.DecodeString(v)
			if err != nil {
				return nil, err
			}
			vs[i] = string(b)
		}
	}
	return h, nil
}

// release drops the lock identified by token, or, when it is not held,
// keeps token from taking it for lockTTL.
func (s *store) release(ctx context.Context, key, token string, lockTTL time.Duration) error {
	if err := releaseScript.Run(ctx, s.direct, []string{key, s.tombstone(token)}, token, lockTTL.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("releasing idempotency lock: %w", err)
	}
	return nil
}

// str reads a Lua string reply element; nil (a missing hash field) is "".
func str(v any) string {
	s, _ := v.(string)
	return s
}
