-- Publish one replica's status record for the fleet view of the admin console (every
-- heartbeat_ttl / 3); the record lives one heartbeat TTL unless published again.
-- KEYS[1]  sorted set of live records, member = replica id, score = expiry (ms, Redis clock)
-- KEYS[2]  hash of records, field = replica id, value = the record (JSON, opaque here)
-- ARGV[1]  replica id   ARGV[2] record   ARGV[3] ttl_ms   ARGV[4] most records kept
-- returns  {1, live records} published | {0, live records} refused: the set is full of others
assert(#KEYS == 2 and #ARGV == 4, "fleet_status_publish: 2 keys, 4 args")
local ttl = tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
assert(ttl and ttl > 0 and cap and cap > 0, "fleet_status_publish: ttl_ms and cap must be positive")
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Bounded cleanup: at most 100 expired records per call.
local dead = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, 100)
if #dead > 0 then
  redis.call('ZREM', KEYS[1], unpack(dead))
  redis.call('HDEL', KEYS[2], unpack(dead))
end

local known = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not known and redis.call('ZCARD', KEYS[1]) >= cap then
  return {0, redis.call('ZCARD', KEYS[1])}
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
-- Both keys outlive the newest record by one TTL at most: a fleet that is gone leaves nothing.
for _, k in ipairs(KEYS) do
  if redis.call('PTTL', k) < ttl then redis.call('PEXPIRE', k, ttl) end
end
return {1, redis.call('ZCARD', KEYS[1])}
