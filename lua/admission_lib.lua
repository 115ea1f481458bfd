-- Shared prelude of the admission_* scripts (prepended to each when loaded; not a script alone).
-- Every admission script takes the same first five ARGV and KEYS[1] = T:lease:global; the other
-- keys share T's hash tag and are built from T (a queue's keys are data-dependent: which user,
-- which replica is next), so each script stays in one slot on Redis Cluster.
--   T:lease:global      zset lease id -> expiry ms (global scope)
--   T:lease:<user>      zset lease id -> expiry ms (one per user; the key is passed in, encoded)
--   T:holders           hash lease id -> user lease key (to clean the user scope when a lease dies)
--   T:fence             fencing counter
--   T:q:0 | 1 | 2       zset waiter id -> arrival seq, for chat, research, export
--   T:seq               arrival counter (fleet-wide FIFO)
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

local function live(key)
  return redis.call('ZCOUNT', key, '(' .. NOW, '+inf')
end

local function keep_ttl(key, ttl)
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end

-- Drop expired global leases (at most 100) and their entries in the user scopes.
local function reclaim_global()
  local expired = redis.call('ZRANGE', GLOBAL, '-inf', NOW, 'BYSCORE', 'LIMIT', 0, 100)
  for _, id in ipairs(expired) do
    local user_key = redis.call('HGET', HOLDERS, id)
    if user_key then redis.call('ZREM', user_key, id) end
    redis.call('HDEL', HOLDERS, id)
  end
  if #expired > 0 then redis.call('ZREM', GLOBAL, unpack(expired)) end
end

local function next_fence()
  local k = T .. ':fence'
  local f = redis.call('INCR', k)
  if f < NOW * 1000 then
    f = NOW * 1000
    redis.call('SET', k, string.format('%d', f))
  end
  redis.call('PEXPIRE', k, DAY)
  return f
end

-- Grant lease `id` in the global scope and in `user_key`. Returns expiry, fence.
local function take(id, user_key)
  local expiry = NOW + LEASE_TTL
  redis.call('ZADD', GLOBAL, expiry, id)
  keep_ttl(GLOBAL, LEASE_TTL)
  redis.call('ZADD', user_key, expiry, id)
  keep_ttl(user_key, LEASE_TTL)
  redis.call('HSET', HOLDERS, id, user_key)
  keep_ttl(HOLDERS, LEASE_TTL)
  return expiry, next_fence()
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

local function replica_alive(r)
  local s = redis.call('ZSCORE', REPLICAS, r)
  return s and tonumber(s) > NOW
end

local function forget_waiter(id, class)
  redis.call('ZREM', T .. ':q:' .. class, id)
  redis.call('DEL', T .. ':w:' .. id)
end

local function user_has_room(user_key)
  return redis.call('ZCOUNT', user_key, '(' .. NOW, '+inf') < USER_CAP
end

-- Hand free slots to waiters: strict priority between classes, FIFO within one. A waiter held
-- back only by its own user cap is skipped and keeps its place (no head-of-line blocking).
-- Waiters whose replica stopped heartbeating, or whose record expired, are dropped. Each grant is
-- recorded for the replica's heartbeat and pushed on its channel. Returns free slots left.
local function dispatch()
  reclaim_global()
  local free = GLOBAL_CAP - live(GLOBAL)
  local scanned = 0
  local full_users = {}
  for class = 0, 2 do
    local q = T .. ':q:' .. class
    local rank = 0
    while free > 0 and scanned < SCAN do
      local batch = redis.call('ZRANGE', q, rank, rank + 31)
      if #batch == 0 then break end
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
          local expiry, fence = take(id, user_key)
          forget_waiter(id, class)
          local msg = id .. ' ' .. string.format('%d', fence) .. ' ' .. string.format('%d', expiry)
          local grants = T .. ':grants:' .. replica
          redis.call('HSET', grants, id, msg)
          redis.call('PEXPIRE', grants, 2 * HB_TTL + LEASE_TTL)
          redis.call('PUBLISH', T .. ':ch:' .. replica, 'g ' .. msg)
          free = free - 1
        end
      end
    end
    if free <= 0 or scanned >= SCAN then break end
  end
  return free
end

-- 1-based position of a queued waiter: everyone in a higher class plus those ahead in its own.
-- 0 if it is not queued (granted, gone).
local function position(id, class)
  local rank = redis.call('ZRANK', T .. ':q:' .. class, id)
  if not rank then return 0 end
  local pos = rank + 1
  for c = 0, class - 1 do pos = pos + redis.call('ZCARD', T .. ':q:' .. c) end
  return pos
end

local function mark_alive(replica)
  redis.call('ZADD', REPLICAS, NOW + HB_TTL, replica)
  keep_ttl(REPLICAS, 10 * HB_TTL)
end
