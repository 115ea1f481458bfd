-- A consistent snapshot for health and metrics. Read-only apart from reclaiming expired leases
-- and dead replicas (bounded).
-- (prepended: admission_lib.lua; KEYS[1] and ARGV[1..5] as described there)
-- returns {queued chat, queued research, queued export, slots in use, live replicas}
assert(#ARGV == 5, "admission_stats: 5 args")
reclaim_global()
local dead = redis.call('ZRANGE', REPLICAS, '-inf', NOW, 'BYSCORE', 'LIMIT', 0, 10)
if #dead > 0 then redis.call('ZREM', REPLICAS, unpack(dead)) end
return {
  redis.call('ZCARD', T .. ':q:0'),
  redis.call('ZCARD', T .. ':q:1'),
  redis.call('ZCARD', T .. ':q:2'),
  live(GLOBAL),
  redis.call('ZCARD', REPLICAS),
}
