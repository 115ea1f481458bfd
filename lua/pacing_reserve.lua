-- Pacing by GCRA (a token bucket kept as one "theoretical arrival time"): book the earliest slot
-- at which a call conforms to `rate` with `burst`, fleet-wide. With burst 1 no two booked slots are
-- closer than the interval. try_acquire is this script with max_wait 0: book now or refuse.
-- A refused call books nothing. The state is kept in microseconds because 1/rate is rarely a whole
-- number of ms (333.3 ms at 3/s); rounding it would drift or crowd slots.
-- KEYS[1]   string: theoretical arrival time (us)
-- ARGV[1]   interval_us (1e6 / rate, >= 1)   ARGV[2] burst (>= 1)   ARGV[3] max_wait_us (>= 0)
-- returns   {1, wait_us, now_us} booked: start the call wait_us after Redis time now_us
--           {0, retry_after_ms, now_us} refused: the wait would exceed max_wait
-- (wait_us and now_us are the replies not in ms: a 1 ms rounding would let two replicas' slots come
-- closer than 1/rate, and callers map Redis time to their own clock with now_us.)
assert(#KEYS == 1 and #ARGV == 3, "pacing_reserve: 1 key, 3 args")
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
assert(interval and interval >= 1, "pacing_reserve: interval_us must be >= 1")
assert(burst and burst >= 1, "pacing_reserve: burst must be >= 1")
assert(max_wait and max_wait >= 0, "pacing_reserve: max_wait_us must be >= 0")

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local slot = tat - (burst - 1) * interval
if slot < now then slot = now end
local wait = slot - now
if wait > max_wait then
  return {0, math.ceil((wait - max_wait) / 1000), now}
end

local new_tat = tat + interval
-- Keep the state while it still matters, then let it go: an idle key means "no backlog".
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, wait, now}
