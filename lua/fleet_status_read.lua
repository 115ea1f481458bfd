-- Read the live status records of the fleet (admin health), oldest expiry first, at most ARGV[1].
-- KEYS[1]  sorted set of live records, member = replica id, score = expiry (ms, Redis clock)
-- KEYS[2]  hash of records, field = replica id, value = the record (JSON)
-- ARGV[1]  most records returned
-- returns  {now_ms, live records in all, id1, expiry1, record1, id2, ...}
assert(#KEYS == 2 and #ARGV == 1, "fleet_status_read: 2 keys, 1 arg")
local limit = tonumber(ARGV[1])
assert(limit and limit > 0, "fleet_status_read: limit must be positive")
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, 100)
if #dead > 0 then
  redis.call('ZREM', KEYS[1], unpack(dead))
  redis.call('HDEL', KEYS[2], unpack(dead))
end
local live = redis.call('ZRANGE', KEYS[1], '(' .. now, '+inf', 'BYSCORE', 'LIMIT', 0, limit, 'WITHSCORES')
local out = {now, redis.call('ZCARD', KEYS[1])}
for i = 1, #live, 2 do
  local record = redis.call('HGET', KEYS[2], live[i])
  if record then
    out[#out + 1] = live[i]
    out[#out + 1] = tonumber(live[i + 1])
    out[#out + 1] = record
  end
end
return out
