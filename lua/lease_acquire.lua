-- Acquire a lease in every scope at once, or in none (e.g. user:42 cap 2 and global cap 20).
-- A lease is live while its expiry (score) is in the future; expired ones are reclaimed here, at
-- most 100 per scope per call, and never counted (ZCOUNT of live scores), so a dead holder stops
-- counting at its expiry even before it is removed.
-- KEYS[1..n]  sorted sets of leases, member = lease id, score = expiry (ms)
-- KEYS[n+1]   fencing counter (string)
-- ARGV[1]     lease id      ARGV[2] ttl_ms      ARGV[3..n+2] caps, one per scope
-- returns     {1, expiry_ms, fence} granted | {0, scope_index (1-based), retry_after_ms} refused
--             retry_after_ms: until the soonest live lease of the refusing scope expires (a bound,
--             releases come sooner).
local n = #KEYS - 1
assert(n >= 1 and #ARGV == n + 2, "lease_acquire: one cap per scope, plus a fence key")
local id = ARGV[1]
local ttl = tonumber(ARGV[2])
assert(ttl and ttl >= 1, "lease_acquire: ttl_ms must be >= 1")

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Numbers reach Redis as strings, formatted once (a Lua number is printed and re-parsed on
-- every redis.call).
local now_s = string.format('%d', now)
local after_now = '(' .. now_s

local live = {}
for i = 1, n do
  local key = KEYS[i]
  local expired = redis.call('ZRANGE', key, '-inf', now_s, 'BYSCORE', 'LIMIT', '0', '100')
  if #expired > 0 then redis.call('ZREM', key, unpack(expired)) end
  local cap = tonumber(ARGV[i + 2])
  assert(cap and cap >= 0, "lease_acquire: caps must be >= 0")
  local count = redis.call('ZCOUNT', key, after_now, '+inf')
  live[i] = count
  if count >= cap then
    local soonest = redis.call('ZRANGE', key, after_now, '+inf', 'BYSCORE', 'LIMIT', '0', '1', 'WITHSCORES')
    local retry = ttl
    if soonest[2] then retry = tonumber(soonest[2]) - now end
    return {0, i, retry}
  end
end

local expiry = now + ttl
local expiry_s = string.format('%d', expiry)
for i = 1, n do
  local key = KEYS[i]
  -- An id already held is refused here rather than looked up in every scope beforehand (ids are
  -- random: this never happens to a well-behaved caller, and the lookup cost a command per scope).
  if redis.call('ZADD', key, 'NX', expiry_s, id) == 0 then
    for j = 1, i - 1 do redis.call('ZREM', KEYS[j], id) end
    return redis.error_reply('lease_acquire: lease id already held')
  end
  -- The set lives as long as its longest live lease: with none before, the new one; with some,
  -- the set has a TTL (every script sets one) and GT extends it without ever shortening it.
  if live[i] == 0 then
    redis.call('PEXPIRE', key, ARGV[2])
  else
    redis.call('PEXPIRE', key, ARGV[2], 'GT')
  end
end

-- Fencing tokens stay monotonic even if the counter key is lost (expired after an idle spell,
-- deleted, or gone with a Redis restarted empty): they never fall below Redis time in us, and a
-- Redis grants far fewer than one lease per us, so no token issued before the loss is above the
-- time in us now (this assumes the Redis host's clock does not step back). So the TTL (which only
-- collects an idle counter) need not be refreshed on every grant.
local fence_key = KEYS[n + 1]
local fence = redis.call('INCR', fence_key)
if fence < now * 1000 then
  fence = now * 1000
  redis.call('SET', fence_key, string.format('%d', fence), 'PX', 86400000)
elseif fence % 1024 == 0 then
  redis.call('PEXPIRE', fence_key, 86400000)
end
return {1, expiry, fence}
