-- A replica's heartbeat (every heartbeat_ttl / 3): keeps it in the registry, collects grants whose
-- push may have been lost, drops replicas whose heartbeat expired, runs a dispatch (slots freed by
-- expiry rather than release are handed on here) and reads the positions of watched waiters.
-- (helpers: admission_lib.lua; KEYS[1] and ARGV[1..6] as described there)
-- ARGV[7] replica   ARGV[8..] pairs: waiter id, class (waiters whose position is watched)
-- returns {{"waiter fence expiry", ...} grants, {position, ...} one per watched waiter, live replicas,
--          the most slots in use fleet-wide at once over the last three heartbeat TTLs or more
--          (the replica's local limit during an outage leaves room for that many)}
begin(KEYS, ARGV)
assert(#ARGV >= 7 and (#ARGV - 7) % 2 == 0, "admission_heartbeat: replica, then waiter/class pairs")
local replica = ARGV[7]
mark_alive(replica)
local dead = redis.call('ZRANGE', REPLICAS, '-inf', NOW, 'BYSCORE', 'LIMIT', 0, 10)
if #dead > 0 then redis.call('ZREM', REPLICAS, unpack(dead)) end

local mine = grants_key(replica)
local grants = redis.call('HVALS', mine)
redis.call('DEL', mine)
dispatch()
local positions = {}
for i = 8, #ARGV, 2 do
  local class = tonumber(ARGV[i + 1])
  assert(class and Q[class], "admission_heartbeat: class out of range")
  positions[#positions + 1] = position(ARGV[i], class)
end
return {grants, positions, redis.call('ZCARD', REPLICAS), recent_peak()}
