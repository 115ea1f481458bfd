-- Admin: empty the queue. Every waiter's replica is told ("r waiter") so each waiter is answered
-- with a QueueReset rejection. Bounded by the maximum queue length. Leases are not touched.
-- (helpers: admission_lib.lua; KEYS[1] and ARGV[1..6] as described there)
-- returns the number of waiters removed
begin(KEYS, ARGV)
assert(#ARGV == 6, "admission_reset: 6 args")
local removed = 0
local users = {}
for class = 0, NC - 1 do
  local ids = redis.call('ZRANGE', Q[class], '0', '-1')
  for _, id in ipairs(ids) do
    -- Without per-user limits a waiter has no record to name its replica: its id does.
    local w = FLAT and {nil, replica_of(id)} or redis.call('HMGET', T .. ':w:' .. id, 'u', 'r')
    if w[2] then notify(w[2], 'r ' .. id) end
    if w[1] then users[user_of(w[1])] = true end
    if not FLAT then redis.call('DEL', T .. ':w:' .. id) end
    removed = removed + 1
  end
  redis.call('DEL', Q[class], READY[class])
end
for user in pairs(users) do redis.call('DEL', unpack(user_queues(user))) end
return removed
