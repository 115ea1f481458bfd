-- A waiter gives up (timeout, client gone, shutdown). If a grant raced with its leaving, the slot
-- is released and handed on, never lost.
-- (helpers: admission_lib.lua; KEYS[1] and ARGV[1..6] as described there)
-- ARGV[7] waiter id   ARGV[8] user lease key   ARGV[9] class   ARGV[10] replica
-- returns 0 left the queue | 1 was granted meanwhile, slot handed on | 2 unknown (reset, dropped,
--         or not entered yet: its enter, sent in a batch, may still be on its way)
begin(KEYS, ARGV)
assert(#ARGV == 10, "admission_leave: 10 args")
local id, user_key, class, replica = ARGV[7], ARGV[8], tonumber(ARGV[9]), ARGV[10]
assert(class and Q[class], "admission_leave: class out of range")
assert(string.sub(user_key, 1, #USER_HEAD) == USER_HEAD, "admission_leave: user key outside T")
if redis.call('ZREM', Q[class], id) == 1 then
  if FLAT then return 0 end
  local user = user_of(user_key)
  forget_waiter(id, class, user)
  refresh_class(user, class, true)
  return 0
end
redis.call('HDEL', grants_key(replica), id)
if redis.call('ZSCORE', GLOBAL, id) then
  drop_lease(id, user_key)
  dispatch()
  return 1
end
-- Unknown: leave a mark so that an enter of this id arriving later does not queue a waiter (or
-- take a slot) nobody is behind. Ids are never reused; the mark outlives any enter in flight.
-- Marks share one key: the ones past are dropped here.
redis.call('ZREMRANGEBYSCORE', LEFT, '-inf', NOW_S)
redis.call('ZADD', LEFT, string.format('%d', NOW + 2 * HB_TTL + LEASE_TTL), id)
keep_ttl(LEFT, GRANTS_TTL_S)
return 2
