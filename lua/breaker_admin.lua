-- Operator actions on a shared breaker, from any replica: force it closed (clearing its error
-- window, probes and trip count), force it open for hold_ms, or reset its error metrics (window
-- and trip count) without changing its state. State changes are PUBLISHed like any transition.
-- KEYS[1]  hash: breaker state    KEYS[2] hash: window buckets    KEYS[3] sorted set: probe permits
-- ARGV[1]  channel   ARGV[2] service   ARGV[3] action: 'close' | 'open' | 'reset'
-- ARGV[4]  hold_ms (open only, >= 1)   ARGV[5] state_ttl_ms (>= 1)
-- returns  {st, gen, until_ms, now_ms}
assert(#KEYS == 3 and #ARGV == 5, "breaker_admin: 3 keys, 5 args")
local action = ARGV[3]
local hold = tonumber(ARGV[4])
local state_ttl = tonumber(ARGV[5])
assert(action == 'close' or action == 'open' or action == 'reset', "breaker_admin: bad action")
assert(hold and hold >= 1, "breaker_admin: hold_ms must be >= 1")
assert(state_ttl and state_ttl >= 1, "breaker_admin: state_ttl_ms must be >= 1")

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local h = redis.call('HMGET', KEYS[1], 'st', 'gen', 'until')
local st = tonumber(h[1]) or 0
local gen = tonumber(h[2]) or 0
local open_until = tonumber(h[3]) or 0

if action == 'reset' then
  redis.call('DEL', KEYS[2])
  if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'trips', 0) end
  return {st, gen, open_until, now}
end

gen = math.max(gen + 1, now)
if action == 'close' then
  st = 0
  open_until = 0
  redis.call('HSET', KEYS[1], 'st', 0, 'gen', gen, 'until', 0, 'trips', 0, 'ok', 0, 'at', now,
    'why', 'forced_close')
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('PEXPIRE', KEYS[1], state_ttl)
else
  st = 1
  open_until = now + hold
  redis.call('HSET', KEYS[1], 'st', 1, 'gen', gen, 'until', open_until, 'ok', 0, 'at', now,
    'why', 'forced_open')
  redis.call('DEL', KEYS[3])
  redis.call('PEXPIRE', KEYS[1], state_ttl + hold)
end
redis.call('PUBLISH', ARGV[1], gen .. ':' .. st .. ':' .. open_until .. ':' .. now .. ':' .. ARGV[2])
return {st, gen, open_until, now}
