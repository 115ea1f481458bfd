-- A waiter gives up (timeout, client gone, shutdown). If a grant raced with its leaving, the slot
-- is released and handed on, never lost.
-- (prepended: admission_lib.lua; KEYS[1] and ARGV[1..5] as described there)
-- ARGV[6] waiter id   ARGV[7] user lease key   ARGV[8] class   ARGV[9] replica
-- returns 0 left the queue | 1 was granted meanwhile, slot handed on | 2 unknown (reset, dropped)
assert(#ARGV == 9, "admission_leave: 9 args")
local id, user_key, class, replica = ARGV[6], ARGV[7], tonumber(ARGV[8]), ARGV[9]
if redis.call('ZREM', T .. ':q:' .. class, id) == 1 then
  redis.call('DEL', T .. ':w:' .. id)
  return 0
end
redis.call('HDEL', T .. ':grants:' .. replica, id)
if redis.call('ZSCORE', GLOBAL, id) then
  drop_lease(id, user_key)
  dispatch()
  return 1
end
return 2
