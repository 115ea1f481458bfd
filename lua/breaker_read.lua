-- Read a shared breaker for the local caches (after a pub/sub (re)connect and as a periodic safety
-- net) and for health snapshots. Read-only: stale buckets are skipped, not deleted.
-- KEYS[1]  hash: breaker state    KEYS[2] hash: window buckets    KEYS[3] sorted set: probe permits
-- ARGV[1]  window_ms   ARGV[2] bucket_ms
-- returns  {st, gen, until_ms, now_ms, failures_in_window, calls_in_window, trips, at_ms, why,
--           live_probes}   (a missing breaker reads as CLOSED with gen 0)
assert(#KEYS == 3 and #ARGV == 2, "breaker_read: 3 keys, 2 args")
local window = tonumber(ARGV[1])
local bucket = tonumber(ARGV[2])
assert(window and bucket and bucket >= 1 and window >= bucket, "breaker_read: bad window")

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local h = redis.call('HMGET', KEYS[1], 'st', 'gen', 'until', 'trips', 'at', 'why')
local oldest = math.floor(now / bucket) - math.ceil(window / bucket) + 1
local all = redis.call('HGETALL', KEYS[2])
local calls, fails = 0, 0
for i = 1, #all, 2 do
  local f = all[i]
  local b = tonumber(string.sub(f, 2)) or 0
  if b >= oldest then
    if string.sub(f, 1, 1) == 'c' then
      calls = calls + tonumber(all[i + 1])
    else
      fails = fails + tonumber(all[i + 1])
    end
  end
end
local probes = redis.call('ZCOUNT', KEYS[3], '(' .. now, '+inf')
return {tonumber(h[1]) or 0, tonumber(h[2]) or 0, tonumber(h[3]) or 0, now, fails, calls,
  tonumber(h[4]) or 0, tonumber(h[5]) or 0, h[6] or '', probes}
