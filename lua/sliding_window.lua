-- Exact sliding-window log: admit a call only if fewer than `limit` calls were admitted in the last
-- `window_ms` milliseconds (any window, not a fixed one). Only admissions are recorded, so a denied
-- call costs no capacity. The log is a list of admission times, newest first, never longer than
-- `limit`: cheaper for Redis than a sorted set, and exact because only the limit-th newest entry decides.
-- One call decides for one or more clients of one policy (a replica coalesces concurrent calls), in
-- KEYS order, at one Redis time: the same key twice is two calls, the second seeing the first.
-- KEYS[1..n] list of admission times (ms), newest first, one per call (1 <= n <= 128)
-- ARGV[1]   limit (1..1000)      ARGV[2] window_ms (>= 1)
-- returns   n times {allowed 1|0, remaining, retry_after_ms, reset_ms, now_ms}, flat, in KEYS order
--           retry_after_ms: 0 when another call would be admitted now, else the wait until it would;
--           reset_ms: wait until the oldest admission in the window leaves it (0 when the log is empty).
assert(#KEYS >= 1 and #KEYS <= 128 and #ARGV == 2, "sliding_window: 1..128 keys, 2 args")
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
assert(limit and limit >= 1 and limit <= 1000, "sliding_window: limit must be 1..1000")
assert(window and window >= 1, "sliding_window: window_ms must be >= 1")

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Formatted once: a Lua number passed to redis.call is printed and parsed back on every call.
local now_s = string.format('%d', now)
local out = {}

local function decide(key)
  -- Drop admissions that have left the window, oldest first; bounded so one call does bounded
  -- work. If more remain, `remaining` is conservative until later calls finish the job; the
  -- decision below never depends on this cleanup.
  local tail
  for _ = 1, 100 do
    tail = redis.call('LINDEX', key, -1)
    if not tail or now - tonumber(tail) < window then break end
    redis.call('RPOP', key)
    tail = nil
  end

  local len = redis.call('LLEN', key)
  if len >= limit then
    local decisive = tonumber(redis.call('LINDEX', key, limit - 1))
    if now - decisive < window then
      local oldest = tonumber(tail) or decisive
      return 0, 0, decisive + window - now, oldest + window - now
    end
  end

  redis.call('LPUSH', key, now_s)
  len = len + 1
  if len > limit then
    redis.call('LTRIM', key, 0, limit - 1)
    len = limit
  end
  redis.call('PEXPIRE', key, ARGV[2])

  local remaining = limit - len
  local retry_after = 0
  if remaining == 0 then
    retry_after = tonumber(redis.call('LINDEX', key, limit - 1)) + window - now
  end
  local reset = window
  if tail then reset = tonumber(tail) + window - now end
  return 1, remaining, retry_after, reset
end

for i = 1, #KEYS do
  local allowed, remaining, retry_after, reset = decide(KEYS[i])
  local n = #out
  out[n + 1], out[n + 2], out[n + 3], out[n + 4], out[n + 5] =
    allowed, remaining, retry_after, reset, now
end
return out
