-- Registers permits that run outside Redis's counts, after Redis was unreachable.
-- (helpers: admission_lib.lua; KEYS[1] and ARGV[1..6] as described there)
-- ARGV[7] "all": ARGV[8..] pairs (lease id, user lease key) registered without a cap check: they
--   are already running (slots granted on a local share during the outage, shared permits a Redis
--   restarted empty forgot); one already live is left as it is.
-- ARGV[7] "checked": ARGV[8] lease id, ARGV[9] user lease key, registered only if the shared caps
--   have room once eligible waiters are served (a slot granted locally after Redis returned,
--   while another replica may already admit by these counts).
-- returns {expiry_ms, registered count}
begin(KEYS, ARGV)
local how = ARGV[7]
if how == 'checked' then
  assert(#ARGV == 9, "admission_adopt: checked takes one lease id and user key")
  assert(string.sub(ARGV[9], 1, #USER_HEAD) == USER_HEAD, "admission_adopt: user key outside T")
  local free = dispatch(true)
  if free > 0 and user_has_room(ARGV[9]) then
    take(ARGV[8], ARGV[9])
    return {EXPIRY, 1}
  end
  return {0, 0}
end
assert(how == 'all' and (#ARGV - 7) % 2 == 0, "admission_adopt: 'all' then lease id/user key pairs")
local adopted = 0
for i = 8, #ARGV, 2 do
  assert(string.sub(ARGV[i + 1], 1, #USER_HEAD) == USER_HEAD, "admission_adopt: user key outside T")
  local score = redis.call('ZSCORE', GLOBAL, ARGV[i])
  if not score or tonumber(score) <= NOW then
    take(ARGV[i], ARGV[i + 1])
    adopted = adopted + 1
  end
end
return {EXPIRY, adopted}
