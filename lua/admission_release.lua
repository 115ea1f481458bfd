-- Release a granted lease and hand the freed slot to the next eligible waiter, in one step.
-- (helpers: admission_lib.lua; KEYS[1] and ARGV[1..6] as described there)
-- ARGV[7] lease id   ARGV[8] user lease key
-- returns 1 if the lease was live, else 0
begin(KEYS, ARGV)
assert(#ARGV == 8, "admission_release: 8 args")
assert(string.sub(ARGV[8], 1, #USER_HEAD) == USER_HEAD, "admission_release: user key outside T")
local held = drop_lease(ARGV[7], ARGV[8])
-- The replica releasing a lease knew of its grant: the record kept for that replica's heartbeat
-- (in case the push was lost) is not needed any more. A heartbeat then carries the grants still
-- held (at most the caps), not every grant of its period, whatever the traffic.
local replica = string.match(ARGV[7], '^([^.]+)%.')
if replica then redis.call('HDEL', T .. ':grants:' .. replica, ARGV[7]) end
dispatch()
return held
