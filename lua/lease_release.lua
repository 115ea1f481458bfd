-- Release a lease in every scope. Idempotent: releasing twice, or after expiry, is harmless.
-- KEYS[1..n]  sorted sets of leases, member = lease id, score = expiry (ms)
-- ARGV[1]     lease id
-- returns     1 if the lease was still held in the first scope, else 0
assert(#KEYS >= 1 and #ARGV == 1, "lease_release: scopes and lease id")
local held = 0
for i = 1, #KEYS do
  local removed = redis.call('ZREM', KEYS[i], ARGV[1])
  if i == 1 then held = removed end
end
return held
