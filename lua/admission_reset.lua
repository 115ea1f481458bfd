-- Admin: empty the queue. Every waiter's replica is told ("r waiter") so each waiter is answered
-- with a QueueReset rejection. Bounded by the maximum queue length. Leases are not touched.
-- (helpers: admission_lib.lua; KEYS[1] and ARGV[1..6] as described there)
-- returns the number of waiters removed
begin(KEYS, ARGV)
assert(#ARGV == 6, "admission_reset: 6 args")
local removed = 0
-- Users with waiters, whose own queues go too: a user with room is in the ready set of every
-- class it waits in, and a user without room holds leases (the holders map names their users,
-- expired ones too until a dispatch reclaims them and makes the user ready).
local users = {}
if not FLAT then
  for class = 0, NC - 1 do
    for _, user in ipairs(redis.call('ZRANGE', READY[class], '0', '-1')) do users[user] = true end
  end
  for _, user_key in ipairs(redis.call('HVALS', HOLDERS)) do users[user_of(user_key)] = true end
end
for class = 0, NC - 1 do
  local queued = redis.call('ZRANGE', Q[class], '0', '-1', 'WITHSCORES')
  for i = 1, #queued, 2 do
    local id = queued[i]
    -- A waiter past its budget has been answered by its replica already.
    local replica, u = replica_of(queued[i]), waiter_until(id, queued[i + 1])
    if replica and u and u > NOW then notify(replica, 'r ' .. id) end
    removed = removed + 1
  end
  redis.call('DEL', Q[class], READY[class])
end
for user in pairs(users) do redis.call('DEL', unpack(user_queues(user))) end
return removed
