-- Release granted leases and hand the freed slots to the next eligible waiters, in one step.
-- (helpers: admission_lib.lua; KEYS[1] and ARGV[1..6] as described there)
-- ARGV[7] lease id   ARGV[8] user lease key   (then more id, user key pairs: a batch)
-- returns, per lease in order, 1 if it was live, else 0
begin(KEYS, ARGV)
assert(#ARGV >= 8 and #ARGV % 2 == 0, "admission_release: 6 args, then id and user key pairs")
-- Expired leases first: the releases below then tell a live lease by its mere presence.
reclaim_global()
local held = {}
-- Per replica, the released ids whose grant records go (one HDEL each).
local records = {}
for i = 7, #ARGV, 2 do
  local id, user_key = ARGV[i], ARGV[i + 1]
  assert(string.sub(user_key, 1, #USER_HEAD) == USER_HEAD, "admission_release: user key outside T")
  held[#held + 1] = drop_lease(id, user_key)
  -- The replica releasing a lease knew of its grant: the record kept for that replica's heartbeat
  -- (in case the push was lost) is not needed any more. A heartbeat then carries the grants still
  -- held (at most the caps), not every grant of its period, whatever the traffic.
  local replica = string.match(id, '^([^.]+)%.')
  if replica then
    local ids = records[replica]
    if not ids then
      ids = {}
      records[replica] = ids
    end
    ids[#ids + 1] = id
  end
end
for replica, ids in pairs(records) do
  redis.call('HDEL', T .. ':grants:' .. replica, unpack(ids))
end
-- One dispatch for the whole batch: the slots freed together go to the waiters first in line,
-- as they would one release after another.
dispatch()
return held
