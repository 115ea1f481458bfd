-- Extend a granted admission lease. A lease that expired or vanished is lost: removed from both
-- scopes (and the holders map) and never revived.
-- (helpers: admission_lib.lua; KEYS[1] and ARGV[1..6] as described there)
-- ARGV[7] lease id   ARGV[8] user lease key
-- returns {1, expiry_ms} renewed | {0, 0} lost
begin(KEYS, ARGV)
assert(#ARGV == 8, "admission_renew: 8 args")
local id, user_key = ARGV[7], ARGV[8]
assert(string.sub(user_key, 1, #USER_HEAD) == USER_HEAD, "admission_renew: user key outside T")
local g = tonumber(redis.call('ZSCORE', GLOBAL, id))
-- Without per-user limits the global scope is the only one.
local u = FLAT and g or tonumber(redis.call('ZSCORE', user_key, id))
if not g or not u or g <= NOW or u <= NOW then
  drop_lease(id, user_key)
  return {0, 0}
end
local expiry = NOW + LEASE_TTL
redis.call('ZADD', GLOBAL, 'XX', expiry, id)
keep_ttl(GLOBAL, SCOPE_TTL_S)
if not FLAT then
  redis.call('ZADD', user_key, 'XX', expiry, id)
  keep_ttl(user_key, LEASE_TTL)
  keep_ttl(HOLDERS, SCOPE_TTL_S)
end
return {1, expiry}
