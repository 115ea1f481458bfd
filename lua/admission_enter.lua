-- Admit a request: take a slot now if one is free and nobody eligible waits, else queue it.
-- (prepended: admission_lib.lua; KEYS[1] and ARGV[1..5] as described there)
-- ARGV[6] waiter/lease id  ARGV[7] user lease key  ARGV[8] replica  ARGV[9] class 0..2
-- ARGV[10] max queued (all classes)  ARGV[11] record ttl ms (the waiter's wait budget + margin)
-- returns {1, expiry_ms, fence} granted | {0, position, now_ms} queued | {-1, 0} queue full
assert(#ARGV == 11, "admission_enter: 11 args")
local id, user_key, replica = ARGV[6], ARGV[7], ARGV[8]
local class, max_queue, record_ttl = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
assert(class and class >= 0 and class <= 2, "admission_enter: class 0..2")
assert(max_queue and record_ttl and record_ttl >= 1, "admission_enter: max queued and record ttl")
assert(string.sub(user_key, 1, #T + 7) == T .. ':lease:', "admission_enter: user key outside T")

ensure_alive(replica)
-- After a dispatch, every waiter still queued is held back (by the caps or its own user cap), so
-- a newcomer with room takes the free slot without overtaking anyone eligible.
local free, empty = dispatch(true)
if free > 0 and user_has_room(user_key) then
  local expiry, fence = take(id, user_key)
  return {1, expiry, fence}
end

local queued = 0
if not empty then
  for c = 0, 2 do queued = queued + redis.call('ZCARD', Q[c]) end
end
if queued >= max_queue then return {-1, 0} end

-- Arrival order: the fencing counter, strictly increasing fleet-wide and never reset.
local seq = next_fence()
local q = Q[class]
redis.call('ZADD', q, seq, id)
keep_ttl(q, ARGV[11])
local w = T .. ':w:' .. id
redis.call('HSET', w, 'u', user_key, 'r', replica)
redis.call('PEXPIRE', w, ARGV[11])
return {0, position(id, class), NOW}
