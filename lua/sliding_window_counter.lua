-- Sliding-window counter: O(1) memory for large limits. Estimates the calls in the last window as
-- previous_bucket * (unelapsed share of the window) + current_bucket (Cloudflare's approximation:
-- it may admit slightly more or fewer than an exact log when traffic within a bucket is uneven).
-- Denied calls are not counted.
-- KEYS[1]   hash {s = current bucket start ms, c = current count, p = previous count}
-- ARGV[1]   limit (>= 1)      ARGV[2] window_ms (>= 1)
-- returns   {allowed 1|0, remaining, retry_after_ms, reset_ms, now_ms}
assert(#KEYS == 1 and #ARGV == 2, "sliding_window_counter: 1 key, 2 args")
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
assert(limit and limit >= 1, "sliding_window_counter: limit must be >= 1")
assert(window and window >= 1, "sliding_window_counter: window_ms must be >= 1")

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local start = now - (now % window)

local h = redis.call('HMGET', key, 's', 'c', 'p')
local s, c, p = tonumber(h[1]), tonumber(h[2]) or 0, tonumber(h[3]) or 0
if s == start then
  -- same bucket
elseif s == start - window then
  p, c = c, 0
else
  p, c = 0, 0
end

local elapsed = now - start
local estimate = p * (window - elapsed) / window + c
local reset = start + window - now
if estimate + 1 > limit then
  -- Earliest time the estimate leaves room for one more call.
  local wait
  if c + 1 > limit then
    -- This bucket alone is full: wait for the next bucket, where c becomes the previous count.
    wait = reset + math.ceil(window * (1 - (limit - 1) / c))
  else
    wait = math.ceil(window * (1 - (limit - 1 - c) / p)) - elapsed
  end
  if wait < 1 then wait = 1 end
  return {0, 0, wait, reset, now}
end

c = c + 1
redis.call('HSET', key, 's', start, 'c', c, 'p', p)
redis.call('PEXPIRE', key, 2 * window)
local remaining = math.floor(limit - (estimate + 1))
return {1, remaining, 0, reset, now}
