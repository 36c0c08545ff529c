package ratelimit

import (
	"strconv"
	"strings"

	"github.com/gatehouse/gatehouse/caddymodule/ratelimit/keyspace"
	"github.com/redis/go-redis/v9"
)

// Why one script of our own rather than redis_rate's Limiter.Allow per
// policy: a request here is subject to several limits at once (per key, per
// organisation, per IP, per route, quotas). Calling Allow once per policy
// costs N round trips on every request, and — worse — is not atomic: each
// call consumes from its own bucket before the next is even asked, so a
// request refused by the third policy has already eaten budget from the first
// two, and a client hammering one exhausted limit drains all the others. The
// script below adapts redis_rate's GCRA (the arithmetic of its allowN script:
// emission interval = period/rate (here in whole µs), theoretical arrival time stored per key,
// allowed while now >= TAT + interval − burst·interval) to evaluate every GCRA
// policy and every quota counter first, and to write any of them only when
// all of them allow. It also reads the organisation's overrides hash in the
// same call, so plan changes apply on the next request without another round
// trip. Scripts run atomically, so instances sharing Redis agree exactly.
//
// Time is integer microseconds since the Unix epoch: from Redis TIME by
// default, so every gateway instance uses one clock; from ARGV[1] when a test
// injects a clock. Doubles hold these integers exactly until the year 2255.
//
// KEYS[1]   the organisation's overrides hash (read only; absent is fine)
// KEYS[1+i] the state of limit i: a GCRA TAT string or a quota hash (fields
// keyspace.CounterWindow and CounterUsed)
// ARGV[1]   now (µs) or "" for Redis TIME
// ARGV[2]   cost of one request
// ARGV[3]   override field prefix "<env>:", or "" when overrides do not apply
// ARGV[4]   API key id for per-key override fields, or ""
// ARGV[5]   n, the number of identical requests decided by this call
// then five per limit:
//
//	"r", name, requests, period (µs), burst     a GCRA policy
//	"Q", name, limit,    "h"|"d"|"m", 0         a quota per calendar hour/day/month (UTC)
//
// "R" instead of "r" for a policy counted per API key: a key's own override
// applies to those and to every quota, not to a policy the organisation's
// keys share.
//
// n > 1 is the Batcher's sharing of identical concurrent calls (one hot
// key): the script decides the n requests as n calls in a row at the same
// instant would. As a refused request consumes nothing, those admit the
// first m and refuse the rest, m being the most requests every limit has
// room for; the script finds m, consumes m·cost and reports two requests.
//
// It returns one string of space-separated integers: now, m (for n = 1:
// admitted, 1|0), then, when m > 0, seven per limit for the m-th request
// (the last admitted), and, when m < n, seven per limit for the (m+1)-th
// (refused, like every later one): allowed (1|0), remaining, reset (µs
// until the limit is fully available again; for quotas the end of the
// window), retry (µs until a refused request may succeed; 0 when allowed),
// and the effective quota, window (s) and burst after overrides.
var limitsScript = redis.NewScript(calendarLua + strings.NewReplacer(
	"MAX_COUNT", strconv.FormatInt(keyspace.MaxCount, 10),
	"MAX_WINDOW", strconv.FormatInt(keyspace.MaxWindow, 10),
	"FIELD_WINDOW", strconv.Quote(keyspace.CounterWindow),
	"FIELD_USED", strconv.Quote(keyspace.CounterUsed)).Replace(limitsLua))

// calendarLua computes the quota windows. Redis' Lua has no os.date, so the
// calendar month is derived with Howard Hinnant's days/civil algorithms.
const calendarLua = `
local function civil_from_days(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return y, m
end

local function days_from_civil(y, m)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = math.floor((153 * mp + 2) / 5)
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- window returns the start (unix seconds) and length (seconds) of the
-- calendar period holding now_us.
local function window(now_us, period)
  local s = math.floor(now_us / 1000000)
  if period == 'h' then return s - s % 3600, 3600 end
  if period == 'd' then return s - s % 86400, 86400 end
  local y, m = civil_from_days(math.floor(s / 86400))
  local first = days_from_civil(y, m)
  if m == 12 then y, m = y + 1, 1 else m = m + 1 end
  return first * 86400, (days_from_civil(y, m) - first) * 86400
end
`

const limitsLua = `
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local cost = tonumber(ARGV[2])
local prefix = ARGV[3]
local keyid = ARGV[4]
local n = tonumber(ARGV[5])
local L = #KEYS - 1

-- Overrides: one HMGET for all limits; a key's field wins over the org's
-- on limits of kind R or Q (not on a GCRA policy the org's keys share:
-- keys would read one state with different parameters).
local ov = {}
if prefix ~= '' and L > 0 then
  local fields, perkey = {}, {}
  for i = 1, L do
    local kind = ARGV[5 + (i - 1) * 5 + 1]
    local name = ARGV[5 + (i - 1) * 5 + 2]
    perkey[i] = keyid ~= '' and (kind == 'R' or kind == 'Q')
    if perkey[i] then fields[#fields + 1] = prefix .. name .. ':' .. keyid end
    fields[#fields + 1] = prefix .. name
  end
  local vals = redis.call('HMGET', KEYS[1], unpack(fields))
  local j = 1
  for i = 1, L do
    local v = false
    if perkey[i] then v = vals[j]; j = j + 1 end
    if not v then v = vals[j] end
    j = j + 1
    if v then
      local q, w, b = string.match(v, '^(%d+) (%d+) (%d+)$')
      q, w, b = tonumber(q), tonumber(w), tonumber(b)
      -- keyspace.CheckBounds: a value no control plane writes is ignored.
      if q and q > 0 and q <= MAX_COUNT and w > 0 and w <= MAX_WINDOW
          and b <= MAX_COUNT and b * w <= q * MAX_WINDOW then
        ov[i] = {q, w, b}
      end
    end
  end
end

-- The state of every GCRA policy in one MGET (same hash tag, same slot).
local tats = {}
do
  local gkeys, idx = {}, {}
  for i = 1, L do
    if string.lower(ARGV[5 + (i - 1) * 5 + 1]) == 'r' then
      gkeys[#gkeys + 1] = KEYS[i + 1]
      idx[#idx + 1] = i
    end
  end
  if #gkeys > 0 then
    local vals = redis.call('MGET', unpack(gkeys))
    for j = 1, #idx do tats[idx[j]] = tonumber(vals[j]) end
  end
end

-- Each limit's parameters and state, and m: how many of the n requests
-- every limit has room for, one after another.
local lim = {}
local capped = {}
local m = n
for i = 1, L do
  local a = 5 + (i - 1) * 5
  local amount = tonumber(ARGV[a + 3])
  local o = ov[i]
  local s
  local fit
  if string.lower(ARGV[a + 1]) == 'r' then
    local period = tonumber(ARGV[a + 4])
    local burst = tonumber(ARGV[a + 5])
    if o then
      amount, period = o[1], o[2] * 1000000
      burst = o[3] > 0 and o[3] or o[1]
    end
    -- Whole microseconds, rounded down (at most 1 µs per request more
    -- generous, and at most 1,000,000 requests/s per policy): every TAT is
    -- then an integer that doubles hold exactly, so a shared run and runs
    -- in a row compute exactly the same numbers.
    local interval = math.max(1, math.floor(period / amount))
    local tat = tats[i] or now
    if tat < now then tat = now end
    -- A TAT further ahead than this policy's burst can reach was built up
    -- under a stricter limit (an override just raised it): cap the debt so
    -- that one request fits now and the client continues at the new rate,
    -- instead of waiting out the old debt. The cap is stored even when the
    -- request is refused; it only ever gives budget back.
    if tat > now + interval * burst then
      tat = now + interval * (burst - 1)
      capped[i] = tat
    end
    s = {amount = amount, period = period, burst = burst, interval = interval, tat = tat}
    -- The k-th request fits while now >= TAT + k·cost·interval − burst·interval:
    -- estimate the largest k, then settle it with that very comparison.
    local function fits(k)
      return now - (tat + interval * cost * k - interval * burst) >= 0
    end
    fit = math.max(0, math.min(n, math.floor((now - tat + interval * burst) / (interval * cost))))
    while fit < n and fits(fit + 1) do fit = fit + 1 end
    while fit > 0 and not fits(fit) do fit = fit - 1 end
  else
    if o then amount = o[1] end
    local start, length = window(now, ARGV[a + 4])
    local st = redis.call('HMGET', KEYS[i + 1], FIELD_WINDOW, FIELD_USED)
    local used = 0
    if tonumber(st[1]) == start then used = tonumber(st[2]) or 0 end
    s = {quota = true, amount = amount, length = length, start = start, used = used,
         reset = (start + length) * 1000000 - now}
    fit = math.max(0, math.floor((amount - used) / cost))
  end
  lim[i] = s
  if fit < m then m = fit end
end

local out = {now, m}
-- report appends the seven values of every limit for the k-th request.
local function report(k)
  for i = 1, L do
    local s = lim[i]
    if s.quota then
      local used = s.used + cost * (k - 1)
      if used + cost > s.amount then
        out[#out + 1] = 0; out[#out + 1] = 0
        out[#out + 1] = s.reset; out[#out + 1] = s.reset
      else
        out[#out + 1] = 1; out[#out + 1] = s.amount - used - cost
        out[#out + 1] = s.reset; out[#out + 1] = 0
      end
      out[#out + 1] = s.amount; out[#out + 1] = s.length; out[#out + 1] = s.amount
    else
      local tat = s.tat + s.interval * cost * (k - 1)
      local new_tat = tat + s.interval * cost
      local diff = now - (new_tat - s.interval * s.burst)
      if diff < 0 then
        out[#out + 1] = 0; out[#out + 1] = 0
        out[#out + 1] = math.ceil(tat - now); out[#out + 1] = math.ceil(-diff)
      else
        out[#out + 1] = 1; out[#out + 1] = math.floor(diff / s.interval) -- integers: exact
        out[#out + 1] = math.ceil(new_tat - now); out[#out + 1] = 0
      end
      out[#out + 1] = s.amount; out[#out + 1] = s.period / 1000000; out[#out + 1] = s.burst
    end
  end
end
if m > 0 then report(m) end
if m < n then report(m + 1) end

-- Consume only what every limit allows: a refused request costs nothing.
if m == 0 then
  for i, tat in pairs(capped) do
    redis.call('SET', KEYS[i + 1], string.format('%d', tat), 'PX', math.max(1, math.ceil((tat - now) / 1000)))
  end
else
  for i = 1, L do
    local s = lim[i]
    local key = KEYS[i + 1]
    if s.quota then
      if s.used == 0 then
        redis.call('HSET', key, FIELD_WINDOW, s.start, FIELD_USED, cost * m)
        redis.call('PEXPIRE', key, math.max(1, math.ceil(s.reset / 1000)))
      else
        redis.call('HINCRBY', key, FIELD_USED, cost * m)
      end
    else
      local tat = s.tat + s.interval * cost * m
      redis.call('SET', key, string.format('%d', tat), 'PX', math.max(1, math.ceil((tat - now) / 1000)))
    end
  end
end
-- One bulk string instead of an array: the gateway parses it without
-- boxing every number. %d keeps the microseconds that tostring would round.
for i = 1, #out do out[i] = string.format('%d', out[i]) end
return table.concat(out, ' ')
`
