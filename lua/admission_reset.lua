-- Admin: empty the queue. Every waiter's replica is told ("r waiter") so each waiter is answered
-- with a QueueReset rejection. Bounded by the maximum queue length. Leases are not touched.
-- (prepended: admission_lib.lua; KEYS[1] and ARGV[1..5] as described there)
-- returns the number of waiters removed
assert(#ARGV == 5, "admission_reset: 5 args")
local removed = 0
for class = 0, 2 do
  local q = T .. ':q:' .. class
  for _, id in ipairs(redis.call('ZRANGE', q, 0, -1)) do
    local replica = redis.call('HGET', T .. ':w:' .. id, 'r')
    if replica then redis.call('PUBLISH', T .. ':ch:' .. replica, 'r ' .. id) end
    redis.call('DEL', T .. ':w:' .. id)
    removed = removed + 1
  end
  redis.call('DEL', q)
end
return removed
