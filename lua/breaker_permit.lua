-- Ask a shared circuit breaker whether a call may go out. Replicas call this only when their local
-- cache says HALF_OPEN or OPEN-and-expired (CLOSED calls need no permit, OPEN calls are refused
-- locally). An expired OPEN turns HALF_OPEN here (published); HALF_OPEN grants at most
-- `probe_permits` probe permits fleet-wide. A permit is a member of KEYS[2] that expires, so a
-- prober that dies frees its permit after probe_ttl_ms.
-- KEYS[1]  hash: breaker state (st 0 closed | 1 open | 2 half-open, gen, until, trips, ok, at, why)
-- KEYS[2]  sorted set: probe permits, member = probe id, score = expiry (ms)
-- ARGV[1]  pub/sub channel   ARGV[2] service name   ARGV[3] probe id (unique per call)
-- ARGV[4]  probe_ttl_ms (>= 1)   ARGV[5] probe_permits (>= 1)   ARGV[6] state_ttl_ms (>= 1)
-- returns  {verdict, st, gen, until_ms, now_ms, retry_after_ms}
--          verdict 0 refused: open | 1 closed: go, no probe | 2 probe granted | 3 refused: probes busy
assert(#KEYS == 2 and #ARGV == 6, "breaker_permit: 2 keys, 6 args")
local probe_ttl = tonumber(ARGV[4])
local permits = tonumber(ARGV[5])
local state_ttl = tonumber(ARGV[6])
assert(probe_ttl and probe_ttl >= 1, "breaker_permit: probe_ttl_ms must be >= 1")
assert(permits and permits >= 1, "breaker_permit: probe_permits must be >= 1")
assert(state_ttl and state_ttl >= 1, "breaker_permit: state_ttl_ms must be >= 1")

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local h = redis.call('HMGET', KEYS[1], 'st', 'gen', 'until')
local st = tonumber(h[1]) or 0
local gen = tonumber(h[2]) or 0
local open_until = tonumber(h[3]) or 0

if st == 0 then
  return {1, 0, gen, 0, now, 0}
end

if st == 1 then
  if now < open_until then
    return {0, 1, gen, open_until, now, open_until - now}
  end
  -- The open period is over: HALF_OPEN. gen is at least the transition time, so it keeps growing
  -- even after Redis lost the key (a restart), and replicas never take a new state for a stale one.
  st = 2
  gen = math.max(gen + 1, now)
  open_until = 0
  redis.call('HSET', KEYS[1], 'st', 2, 'gen', gen, 'until', 0, 'ok', 0, 'at', now, 'why', 'half_open')
  redis.call('PEXPIRE', KEYS[1], state_ttl)
  redis.call('DEL', KEYS[2])
  redis.call('PUBLISH', ARGV[1], gen .. ':2:0:' .. now .. ':' .. ARGV[2])
end

-- HALF_OPEN. The set never holds more than probe_permits members, so the cleanup is bounded.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) < permits then
  redis.call('ZADD', KEYS[2], now + probe_ttl, ARGV[3])
  redis.call('PEXPIRE', KEYS[2], probe_ttl)
  return {2, 2, gen, 0, now, 0}
end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local retry = 1
if first[2] then retry = math.max(1, tonumber(first[2]) - now) end
return {3, 2, gen, 0, now, retry}
