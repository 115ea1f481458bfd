-- Recovery from degraded mode: register the leases a replica granted locally while Redis was
-- unreachable, so the shared caps count them again. No cap check: these calls are already running
-- (each replica's local share kept the fleet within the global cap).
-- (prepended: admission_lib.lua; KEYS[1] and ARGV[1..5] as described there)
-- ARGV[6..] pairs: lease id, user lease key
-- returns {expiry_ms, adopted count}
assert(#ARGV >= 5 and (#ARGV - 5) % 2 == 0, "admission_adopt: pairs of lease id and user key")
local adopted = 0
for i = 6, #ARGV, 2 do
  assert(string.sub(ARGV[i + 1], 1, #T + 7) == T .. ':lease:', "admission_adopt: user key outside T")
  if not redis.call('ZSCORE', GLOBAL, ARGV[i]) then
    take(ARGV[i], ARGV[i + 1])
    adopted = adopted + 1
  end
end
return {NOW + LEASE_TTL, adopted}
