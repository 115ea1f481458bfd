-- A consistent snapshot for health and metrics. Read-only apart from reclaiming expired leases
-- and dead replicas (bounded).
-- (helpers: admission_lib.lua; KEYS[1] and ARGV[1..6] as described there)
-- returns {queued in class 0, ..., queued in class classes-1, slots in use, live replicas}
begin(KEYS, ARGV)
assert(#ARGV == 6, "admission_stats: 6 args")
reclaim_global()
local dead = redis.call('ZRANGE', REPLICAS, '-inf', NOW, 'BYSCORE', 'LIMIT', 0, 10)
if #dead > 0 then redis.call('ZREM', REPLICAS, unpack(dead)) end
local out = {}
for c = 0, NC - 1 do out[c + 1] = redis.call('ZCARD', Q[c]) end
out[NC + 1] = live(GLOBAL)
out[NC + 2] = redis.call('ZCARD', REPLICAS)
return out
