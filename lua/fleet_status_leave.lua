-- A replica that stops takes its status record out of the fleet view at once (not after its TTL).
-- KEYS[1]  sorted set of live records   KEYS[2] hash of records
-- ARGV[1]  replica id
-- returns  1 if a record was removed, else 0
assert(#KEYS == 2 and #ARGV == 1, "fleet_status_leave: 2 keys, 1 arg")
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('ZREM', KEYS[1], ARGV[1])
