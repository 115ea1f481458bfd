-- Extend a live lease in every scope. A lease that has expired or vanished from any scope is lost:
-- it is removed from all of them and never revived (its slot may already belong to someone else).
-- KEYS[1..n]  sorted sets of leases, member = lease id, score = expiry (ms)
-- ARGV[1]     lease id      ARGV[2] ttl_ms
-- returns     {1, expiry_ms} renewed | {0, 0} lost
assert(#KEYS >= 1 and #ARGV == 2, "lease_renew: scopes, lease id and ttl")
local id = ARGV[1]
local ttl = tonumber(ARGV[2])
assert(ttl and ttl >= 1, "lease_renew: ttl_ms must be >= 1")

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

for i = 1, #KEYS do
  local score = tonumber(redis.call('ZSCORE', KEYS[i], id))
  if not score or score <= now then
    for j = 1, #KEYS do redis.call('ZREM', KEYS[j], id) end
    return {0, 0}
  end
end
local expiry = now + ttl
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', expiry, id)
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return {1, expiry}
