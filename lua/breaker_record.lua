-- Record the outcome of one call to an upstream and apply the breaker's transitions atomically:
-- CLOSED trips to OPEN when the rolling window holds at least `failure_threshold` failures (and,
-- when ratio_permille > 0, at least min_calls calls with failures/calls >= ratio); a probe's
-- failure re-opens a HALF_OPEN breaker, `success_threshold` probe successes close it. Outcomes of
-- calls made without a probe permit while OPEN/HALF_OPEN are stale and change nothing.
-- Every transition is PUBLISHed as "gen:st:until_ms:now_ms:service".
-- The window is bucketed counters in one hash (fields c<bucket> = calls, f<bucket> = failures):
-- recording is O(1) plus a sum over at most ~2*(window/bucket) fields (the Rust side keeps that
-- at <= 64 buckets), and stale buckets are deleted as they are met (at most 100 per call).
-- The OPEN period is open_ms * 2^trips capped at open_max_ms, spread by +-jitter; `trips` counts
-- consecutive trips and restarts from 0 when the breaker stayed closed for open_max_ms.
-- KEYS[1]  hash: breaker state    KEYS[2] hash: window buckets    KEYS[3] sorted set: probe permits
-- ARGV[1]  channel   ARGV[2] service   ARGV[3] outcome (0 success | 1 failure)   ARGV[4] probe id or ''
-- ARGV[5]  window_ms   ARGV[6] bucket_ms   ARGV[7] failure_threshold   ARGV[8] ratio_permille (0 off)
-- ARGV[9]  min_calls   ARGV[10] open_ms   ARGV[11] open_max_ms   ARGV[12] jitter_permille (0..1000)
-- ARGV[13] random permille (0..999, from the caller)   ARGV[14] success_threshold
-- ARGV[15] state_ttl_ms   ARGV[16] how many calls ended so (>= 1; more than one only for successes
--          a replica tallied, which change nothing but the window's call count)
-- returns  {st, gen, until_ms, now_ms, failures_in_window, calls_in_window}
assert(#KEYS == 3 and #ARGV == 16, "breaker_record: 3 keys, 16 args")
local outcome = tonumber(ARGV[3])
local window = tonumber(ARGV[5])
local bucket = tonumber(ARGV[6])
local threshold = tonumber(ARGV[7])
local ratio = tonumber(ARGV[8])
local min_calls = tonumber(ARGV[9])
local open_ms = tonumber(ARGV[10])
local open_max = tonumber(ARGV[11])
local jitter = tonumber(ARGV[12])
local rnd = tonumber(ARGV[13])
local success_threshold = tonumber(ARGV[14])
local state_ttl = tonumber(ARGV[15])
local count = tonumber(ARGV[16])
assert(outcome == 0 or outcome == 1, "breaker_record: outcome must be 0 or 1")
assert(window and bucket and bucket >= 1 and window >= bucket, "breaker_record: bad window")
assert(window / bucket <= 1000, "breaker_record: too many buckets")
assert(threshold and threshold >= 1, "breaker_record: failure_threshold must be >= 1")
assert(ratio and ratio >= 0 and ratio <= 1000, "breaker_record: ratio_permille in 0..1000")
assert(min_calls and min_calls >= 0, "breaker_record: bad min_calls")
assert(open_ms and open_ms >= 1 and open_max and open_max >= open_ms, "breaker_record: bad open_ms")
assert(jitter and jitter >= 0 and jitter <= 1000, "breaker_record: jitter_permille in 0..1000")
assert(rnd and rnd >= 0 and rnd < 1000, "breaker_record: random permille in 0..999")
assert(success_threshold and success_threshold >= 1, "breaker_record: bad success_threshold")
assert(state_ttl and state_ttl >= 1, "breaker_record: bad state_ttl_ms")
assert(count and count >= 1 and (outcome == 0 or count == 1), "breaker_record: bad count")

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local h = redis.call('HMGET', KEYS[1], 'st', 'gen', 'until', 'trips', 'ok', 'at')
local st = tonumber(h[1]) or 0
local gen = tonumber(h[2]) or 0
local open_until = tonumber(h[3]) or 0
local trips = tonumber(h[4]) or 0
local ok = tonumber(h[5]) or 0
local at = tonumber(h[6]) or 0

local function publish()
  redis.call('PUBLISH', ARGV[1], gen .. ':' .. st .. ':' .. open_until .. ':' .. now .. ':' .. ARGV[2])
end

local function keep_state()
  local extra = 0
  if open_until > now then extra = open_until - now end
  redis.call('PEXPIRE', KEYS[1], state_ttl + extra)
end

local function trip(why)
  if st == 0 and now - at >= open_max then trips = 0 end
  local d = open_ms * math.pow(2, math.min(trips, 40))
  if d > open_max then d = open_max end
  d = d * (1 + (jitter / 1000) * (2 * rnd / 1000 - 1))
  if d > open_max then d = open_max end
  d = math.max(1, math.floor(d))
  st = 1
  gen = math.max(gen + 1, now)
  open_until = now + d
  trips = trips + 1
  redis.call('HSET', KEYS[1], 'st', 1, 'gen', gen, 'until', open_until, 'trips', trips, 'ok', 0,
    'at', now, 'why', why)
  redis.call('DEL', KEYS[3])
  keep_state()
  publish()
end

-- Sums the window, deleting stale buckets met on the way (bounded per call).
local function sum_window()
  local oldest = math.floor(now / bucket) - math.ceil(window / bucket) + 1
  local all = redis.call('HGETALL', KEYS[2])
  local calls, fails, stale = 0, 0, {}
  for i = 1, #all, 2 do
    local f = all[i]
    local b = tonumber(string.sub(f, 2)) or 0
    if b < oldest then
      if #stale < 100 then stale[#stale + 1] = f end
    elseif string.sub(f, 1, 1) == 'c' then
      calls = calls + tonumber(all[i + 1])
    else
      fails = fails + tonumber(all[i + 1])
    end
  end
  if #stale > 0 then redis.call('HDEL', KEYS[2], unpack(stale)) end
  return calls, fails
end

if st == 0 then
  local b = math.floor(now / bucket)
  redis.call('HINCRBY', KEYS[2], 'c' .. b, count)
  if outcome == 1 then redis.call('HINCRBY', KEYS[2], 'f' .. b, 1) end
  redis.call('PEXPIRE', KEYS[2], window + bucket)
  local calls, fails = sum_window()
  if outcome == 1 and fails >= threshold
      and (ratio == 0 or (calls >= min_calls and fails * 1000 >= ratio * calls)) then
    trip('failures')
  end
  return {st, gen, open_until, now, fails, calls}
end

local probe = ARGV[4]
if st == 2 and probe ~= '' and redis.call('ZREM', KEYS[3], probe) == 1 then
  if outcome == 1 then
    trip('probe_failed')
  else
    ok = ok + 1
    if ok >= success_threshold then
      st = 0
      gen = math.max(gen + 1, now)
      open_until = 0
      redis.call('HSET', KEYS[1], 'st', 0, 'gen', gen, 'until', 0, 'ok', 0, 'at', now,
        'why', 'recovered')
      redis.call('DEL', KEYS[2], KEYS[3])
      keep_state()
      publish()
    else
      redis.call('HSET', KEYS[1], 'ok', ok)
    end
  end
end
local calls, fails = sum_window()
return {st, gen, open_until, now, fails, calls}
