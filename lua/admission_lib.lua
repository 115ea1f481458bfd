-- Shared prelude of the admission_* scripts (prepended to each when loaded; not a script alone).
-- Every admission script takes the same first five ARGV and KEYS[1] = T:lease:global; the other
-- keys share T's hash tag and are built from T (a queue's keys are data-dependent: which user,
-- which replica is next), so each script stays in one slot on Redis Cluster.
--   T:lease:global      zset lease id -> expiry ms (global scope)
--   T:lease:<user>      zset lease id -> expiry ms (one per user; the key is passed in, encoded)
--   T:holders           hash lease id -> user lease key (to clean the user scope when a lease dies)
--   T:fence             fencing counter, also the fleet-wide arrival order of waiters
--   T:q:0 | 1 | 2       zset waiter id -> arrival seq, for chat, research, export
--   T:w:<waiter>        hash {u = user lease key, r = replica}: the waiting request
--   T:replicas          zset replica id -> heartbeat expiry ms (the replica registry)
--   T:grants:<replica>  hash waiter -> "waiter fence expiry": grants not yet collected by heartbeat
--   channel T:ch:<replica>  "g waiter fence expiry" (granted) | "r waiter" (queue reset)
-- ARGV[1] T   ARGV[2] user_cap   ARGV[3] global_cap   ARGV[4] lease_ttl_ms   ARGV[5] heartbeat_ttl_ms
local T = ARGV[1]
local USER_CAP = tonumber(ARGV[2])
local GLOBAL_CAP = tonumber(ARGV[3])
local LEASE_TTL = tonumber(ARGV[4])
local HB_TTL = tonumber(ARGV[5])
assert(T and USER_CAP and GLOBAL_CAP and LEASE_TTL and HB_TTL, "admission: T, caps and ttls")
local GLOBAL = T .. ':lease:global'
assert(KEYS[1] == GLOBAL, "admission: KEYS[1] must be T:lease:global")
local REPLICAS = T .. ':replicas'
local HOLDERS = T .. ':holders'
local DAY = 86400000
-- Waiters examined per dispatch: bounds the work of one call when many waiters are held back by
-- their own user cap; the rest are reached by later calls.
local SCAN = 200

local now_t = redis.call('TIME')
local NOW = tonumber(now_t[1]) * 1000 + math.floor(tonumber(now_t[2]) / 1000)
-- Numbers reach Redis as strings. Formatted once here: a Lua number passed to redis.call is
-- printed with %.17g and parsed back with strtod on every call (a visible share of Redis's CPU).
local NOW_S = string.format('%d', NOW)
local AFTER_NOW = '(' .. NOW_S
local EXPIRY = NOW + LEASE_TTL
local EXPIRY_S = string.format('%d', EXPIRY)
local LEASE_TTL_S = ARGV[4]
local GRANTS_TTL_S = string.format('%d', 2 * HB_TTL + LEASE_TTL)
local FENCE = T .. ':fence'
local Q = {[0] = T .. ':q:0', T .. ':q:1', T .. ':q:2'}

local function live(key)
  return redis.call('ZCOUNT', key, AFTER_NOW, '+inf')
end

-- Keys whose TTL this call already set: NOW is fixed within a call, so once is enough.
local ttl_kept = {}
-- Live members of a key as counted by this call, before it added any.
local counted = {}

-- Extends a key's TTL to `ttl` ms from now, never shortening it below its longest live member.
-- With no live member before, the new one is the longest: a plain PEXPIRE. With some, the key
-- existed and has a TTL (every script gives one to each key it creates): PEXPIRE GT. Otherwise
-- GT, whose 0 means either "already as long" or "no TTL yet", which PTTL tells apart.
local function keep_ttl(key, ttl)
  if ttl_kept[key] == ttl then return end
  ttl_kept[key] = ttl
  local n = counted[key]
  if n == 0 then
    redis.call('PEXPIRE', key, ttl)
  elseif redis.call('PEXPIRE', key, ttl, 'GT') == 0 and not n
      and redis.call('PTTL', key) == -1 then
    redis.call('PEXPIRE', key, ttl)
  end
end

-- Drop expired global leases (at most 100) and their entries in the user scopes.
local function reclaim_global()
  local expired = redis.call('ZRANGE', GLOBAL, '-inf', NOW_S, 'BYSCORE', 'LIMIT', 0, 100)
  for _, id in ipairs(expired) do
    local user_key = redis.call('HGET', HOLDERS, id)
    if user_key then redis.call('ZREM', user_key, id) end
    redis.call('HDEL', HOLDERS, id)
  end
  if #expired > 0 then redis.call('ZREM', GLOBAL, unpack(expired)) end
end

-- Fencing tokens never fall below Redis time in µs, so they stay monotonic even if the counter
-- key expires. That also makes refreshing its TTL on every grant unnecessary: the TTL only
-- collects an idle counter, and a counter that expired restarts above every token issued.
local function next_fence()
  local f = redis.call('INCR', FENCE)
  if f < NOW * 1000 then
    f = NOW * 1000
    redis.call('SET', FENCE, string.format('%d', f), 'PX', DAY)
  elseif f % 1024 == 0 then
    redis.call('PEXPIRE', FENCE, DAY)
  end
  return f
end

-- Grant lease `id` in the global scope and in `user_key`. Returns expiry, fence.
local function take(id, user_key)
  redis.call('ZADD', GLOBAL, EXPIRY_S, id)
  keep_ttl(GLOBAL, LEASE_TTL_S)
  redis.call('ZADD', user_key, EXPIRY_S, id)
  keep_ttl(user_key, LEASE_TTL_S)
  redis.call('HSET', HOLDERS, id, user_key)
  keep_ttl(HOLDERS, LEASE_TTL_S)
  return EXPIRY, next_fence()
end

-- Remove lease `id` from both scopes. Returns 1 if it was live.
local function drop_lease(id, user_key)
  local score = redis.call('ZSCORE', GLOBAL, id)
  redis.call('ZREM', GLOBAL, id)
  redis.call('ZREM', user_key, id)
  redis.call('HDEL', HOLDERS, id)
  if score and tonumber(score) > NOW then return 1 end
  return 0
end

-- Replicas already looked up in this call (a dispatch often grants several waiters of one).
local alive = {}

local function replica_alive(r)
  local a = alive[r]
  if a == nil then
    local s = redis.call('ZSCORE', REPLICAS, r)
    a = s ~= false and tonumber(s) > NOW
    alive[r] = a
  end
  return a
end

local function forget_waiter(id, class)
  redis.call('ZREM', Q[class], id)
  redis.call('DEL', T .. ':w:' .. id)
end

local function user_has_room(user_key)
  local n = live(user_key)
  counted[user_key] = n
  return n < USER_CAP
end

-- Live global leases. The holders map has an entry per global lease and the same TTL.
local function in_use()
  local n = live(GLOBAL)
  counted[GLOBAL] = n
  counted[HOLDERS] = n
  return n
end

-- Hand free slots to waiters: strict priority between classes, FIFO within one. A waiter held
-- back only by its own user cap is skipped and keeps its place (no head-of-line blocking).
-- Waiters whose replica stopped heartbeating, or whose record expired, are dropped. Each grant is
-- recorded for the replica's heartbeat and pushed on its channel.
-- `entering` (admission_enter): also count the free slots left for the newcomer (no other caller
-- needs them), and leave the cleanup of expired leases to releases and heartbeats (it never
-- changes what counts: only live scores do).
-- Returns the free slots left (0 unless entering) and whether the queue is known to be empty.
local function dispatch(entering)
  if not entering then reclaim_global() end
  -- Nobody queued (every call below the caps): nothing to hand out, one call to know it.
  if redis.call('EXISTS', Q[0], Q[1], Q[2]) == 0 then
    if entering then return GLOBAL_CAP - in_use(), true end
    return 0, true
  end
  local free = GLOBAL_CAP - in_use()
  local scanned = 0
  local full_users = {}
  for class = 0, 2 do
    local q = Q[class]
    local rank = 0
    -- Read as many waiters as there are free slots, more (up to 32) while some are skipped.
    local n = free
    while free > 0 and scanned < SCAN do
      local batch = redis.call('ZRANGE', q, rank, rank + n - 1)
      if #batch == 0 then break end
      n = math.min(2 * n, 32)
      for _, id in ipairs(batch) do
        if free <= 0 or scanned >= SCAN then break end
        scanned = scanned + 1
        local w = redis.call('HMGET', T .. ':w:' .. id, 'u', 'r')
        local user_key, replica = w[1], w[2]
        if not user_key or not replica or not replica_alive(replica) then
          forget_waiter(id, class) -- the ranks behind it moved up by one
        elseif full_users[user_key] or not user_has_room(user_key) then
          full_users[user_key] = true
          rank = rank + 1
        else
          local _, fence = take(id, user_key)
          forget_waiter(id, class)
          local msg = id .. ' ' .. string.format('%d', fence) .. ' ' .. EXPIRY_S
          local grants = T .. ':grants:' .. replica
          redis.call('HSET', grants, id, msg)
          if ttl_kept[grants] == nil then
            ttl_kept[grants] = GRANTS_TTL_S
            redis.call('PEXPIRE', grants, GRANTS_TTL_S)
          end
          redis.call('PUBLISH', T .. ':ch:' .. replica, 'g ' .. msg)
          free = free - 1
        end
      end
    end
    if free <= 0 or scanned >= SCAN then break end
  end
  return free, false
end

-- 1-based position of a queued waiter: everyone in a higher class plus those ahead in its own.
-- 0 if it is not queued (granted, gone).
local function position(id, class)
  local rank = redis.call('ZRANK', Q[class], id)
  if not rank then return 0 end
  local pos = rank + 1
  for c = 0, class - 1 do pos = pos + redis.call('ZCARD', Q[c]) end
  return pos
end

local REPLICAS_TTL_S = string.format('%d', 10 * HB_TTL)

local function mark_alive(replica)
  redis.call('ZADD', REPLICAS, NOW + HB_TTL, replica)
  keep_ttl(REPLICAS, REPLICAS_TTL_S)
  alive[replica] = true
end

-- Registers `replica` unless its heartbeat did recently (at least half a heartbeat TTL left; a
-- heartbeat every TTL/3 keeps two thirds): one read instead of two writes on every request.
local function ensure_alive(replica)
  local s = tonumber(redis.call('ZSCORE', REPLICAS, replica))
  if s and s >= NOW + HB_TTL / 2 then
    alive[replica] = true
    return
  end
  mark_alive(replica)
end
