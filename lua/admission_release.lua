-- Release granted leases and hand the freed slots to the next eligible waiters, in one step.
-- (helpers: admission_lib.lua; KEYS[1] and ARGV[1..6] as described there)
-- ARGV[7] lease id   ARGV[8] user lease key   (then more id, user key pairs: a batch)
-- returns, per lease in order, 1 if it was live, else 0
begin(KEYS, ARGV)
assert(#ARGV >= 8 and #ARGV % 2 == 0, "admission_release: 6 args, then id and user key pairs")
-- Every pair is checked before anything is written: a bad one fails the batch whole.
local leases = {}
for i = 7, #ARGV, 2 do
  assert(string.sub(ARGV[i + 1], 1, #USER_HEAD) == USER_HEAD, "admission_release: user key outside T")
  leases[#leases + 1] = ARGV[i]
end
-- The batch's leases leave the global scope and the holders map with one command each; their
-- scores, read together first, tell which were live (a lease released twice in one batch counts
-- once, as two calls would). Expired leases are reclaimed first (the dispatch below would do it
-- anyway): then a single lease needs no read, ZREM's count tells.
local live = {}
reclaim_global()
if #leases == 1 and reclaimed_all then
  live[1] = redis.call('ZREM', GLOBAL, leases[1]) == 1
else
  for k, score in ipairs(redis.call('ZMSCORE', GLOBAL, unpack(leases))) do
    live[k] = score and tonumber(score) > NOW
  end
  redis.call('ZREM', GLOBAL, unpack(leases))
end
removed(GLOBAL)
if not FLAT then
  redis.call('HDEL', HOLDERS, unpack(leases))
  removed(HOLDERS)
end
local held = {}
local seen = {}
-- Per replica, the released ids whose grant records go (one HDEL each).
local records = {}
for i = 7, #ARGV, 2 do
  local id, user_key = ARGV[i], ARGV[i + 1]
  local k = (i - 5) / 2
  held[k] = (live[k] and not seen[id]) and 1 or 0
  seen[id] = true
  if not FLAT then drop_user_lease(id, user_key) end
  -- The replica releasing a lease knew of its grant: the record kept for that replica's heartbeat
  -- (in case the push was lost) is not needed any more. A heartbeat then carries the grants still
  -- held (at most the caps), not every grant of its period, whatever the traffic.
  local replica = replica_of(id)
  if replica then push(records, replica, id) end
end
for replica, ids in pairs(records) do
  redis.call('HDEL', grants_key(replica), unpack(ids))
end
-- One dispatch for the whole batch: the slots freed together go to the waiters first in line,
-- as they would one release after another.
dispatch()
return held
