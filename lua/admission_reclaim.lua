-- Admin: remove leases held by replicas that stopped heartbeating (a lease id starts with its
-- replica id and a dot), instead of waiting for their TTL; then hand the slots on.
-- Looks at most 1000 leases (the global cap bounds how many are live).
-- (helpers: admission_lib.lua; KEYS[1] and ARGV[1..6] as described there)
-- returns the number of leases reclaimed
begin(KEYS, ARGV)
assert(#ARGV == 6, "admission_reclaim: 6 args")
local reclaimed = 0
local users = {}
for _, id in ipairs(redis.call('ZRANGE', GLOBAL, 0, 999)) do
  local replica = replica_of(id)
  if replica and not replica_alive(replica) then
    local user_key = redis.call('HGET', HOLDERS, id)
    if user_key then
      redis.call('ZREM', user_key, id)
      users[user_key] = true
    end
    redis.call('HDEL', HOLDERS, id)
    redis.call('ZREM', GLOBAL, id)
    reclaimed = reclaimed + 1
  end
end
for user_key in pairs(users) do refresh_user(user_key) end
dispatch()
return reclaimed
