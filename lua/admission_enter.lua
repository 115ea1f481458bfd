-- Admit a request: take a slot now if one is free and nobody eligible waits, else queue it.
-- (helpers: admission_lib.lua; KEYS[1] and ARGV[1..6] as described there)
-- ARGV[7] waiter/lease id  ARGV[8] user lease key  ARGV[9] replica  ARGV[10] class 0..classes-1
-- ARGV[11] max queued (all classes)  ARGV[12] max queued of one user (all classes)
-- ARGV[13] record ttl ms (the waiter's wait budget + margin)
-- returns {1, expiry_ms, fence} granted | {0, position, now_ms} queued | {-1, 0} queue full
--         | {-2, 0} this user's waiters fill its share of the queue
begin(KEYS, ARGV)
assert(#ARGV == 13, "admission_enter: 13 args")
local id, user_key, replica = ARGV[7], ARGV[8], ARGV[9]
local class, max_queue, max_user = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local record_ttl = tonumber(ARGV[13])
assert(class and Q[class], "admission_enter: class out of range")
assert(max_queue and max_user and record_ttl and record_ttl >= 1,
  "admission_enter: max queued, max queued per user and record ttl")
assert(string.sub(user_key, 1, #USER_HEAD) == USER_HEAD, "admission_enter: user key outside T")

-- Drops this user's waiters whose replica died or whose record expired (at most 100 looked at):
-- they must not count against its share of the queue. Returns how many were dropped.
local function prune_user(user)
  local dropped, looked = 0, 0
  for c = 0, NC - 1 do
    local before = dropped
    for _, w in ipairs(redis.call('ZRANGE', user_queue(c, user), 0, 99 - looked)) do
      looked = looked + 1
      local r = redis.call('HGET', T .. ':w:' .. w, 'r')
      if not r or not replica_alive(r) then
        forget_waiter(w, c, user)
        dropped = dropped + 1
      end
    end
    if dropped > before then refresh_class(user, c, true) end
    if looked >= 100 then break end
  end
  return dropped
end

ensure_alive(replica)
-- After a dispatch, every waiter still queued is held back (by the caps or its own user cap), so
-- a newcomer with room takes the free slot without overtaking anyone eligible.
local free = dispatch(true)
local room = user_has_room(user_key)
if free > 0 and room then
  local expiry, fence = take(id, user_key)
  return {1, expiry, fence}
end

local user = user_of(user_key)
local queues = user_queues(user)
local mine = 0
for i = 1, NC do mine = mine + redis.call('ZCARD', queues[i]) end
if mine >= max_user then
  mine = mine - prune_user(user)
  if mine >= max_user then return {-2, 0} end
end
local queued = 0
for c = 0, NC - 1 do queued = queued + redis.call('ZCARD', Q[c]) end
if queued >= max_queue then return {-1, 0} end

-- Arrival order: the fencing counter, strictly increasing fleet-wide and never reset.
local seq = next_fence()
local q = Q[class]
redis.call('ZADD', q, seq, id)
keep_ttl(q, ARGV[13])
local uq = queues[class + 1]
if mine == 0 then counted[uq] = 0 end -- a new key: a plain PEXPIRE
redis.call('ZADD', uq, seq, id)
keep_ttl(uq, ARGV[13])
local w = T .. ':w:' .. id
redis.call('HSET', w, 'u', user_key, 'r', replica)
redis.call('PEXPIRE', w, ARGV[13])
-- Held back only by the global cap: ready for the next free slot. A user with room is in the
-- ready set of every class it waits in (a dispatch just refreshed any whose lease expired), so an
-- entry already there stands for an earlier waiter and is kept (NX).
if room then
  redis.call('ZADD', READY[class], 'NX', seq, user)
  keep_ttl(READY[class], ARGV[13])
end
return {0, position(id, class), NOW}
