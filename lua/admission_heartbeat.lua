-- A replica's heartbeat (every heartbeat_ttl / 3): keeps it in the registry, collects grants whose
-- push may have been lost, drops replicas whose heartbeat expired, runs a dispatch (slots freed by
-- expiry rather than release are handed on here) and reads the positions of watched waiters.
-- (prepended: admission_lib.lua; KEYS[1] and ARGV[1..5] as described there)
-- ARGV[6] replica   ARGV[7..] pairs: waiter id, class (waiters whose position is watched)
-- returns {{"waiter fence expiry", ...} grants, {position, ...} one per watched waiter, live replicas}
assert(#ARGV >= 6 and (#ARGV - 6) % 2 == 0, "admission_heartbeat: replica, then waiter/class pairs")
local replica = ARGV[6]
mark_alive(replica)
local dead = redis.call('ZRANGE', REPLICAS, '-inf', NOW, 'BYSCORE', 'LIMIT', 0, 10)
if #dead > 0 then redis.call('ZREM', REPLICAS, unpack(dead)) end

local grants_key = T .. ':grants:' .. replica
local grants = redis.call('HVALS', grants_key)
redis.call('DEL', grants_key)
dispatch()
local positions = {}
for i = 7, #ARGV, 2 do
  positions[#positions + 1] = position(ARGV[i], tonumber(ARGV[i + 1]))
end
return {grants, positions, redis.call('ZCARD', REPLICAS)}
