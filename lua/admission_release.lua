-- Release a granted lease and hand the freed slot to the next eligible waiter, in one step.
-- (prepended: admission_lib.lua; KEYS[1] and ARGV[1..5] as described there)
-- ARGV[6] lease id   ARGV[7] user lease key
-- returns 1 if the lease was live, else 0
assert(#ARGV == 7, "admission_release: 7 args")
local held = drop_lease(ARGV[6], ARGV[7])
dispatch()
return held
