-- Shared helpers of the admission_* scripts (not a script alone).
-- Every admission script takes the same first six ARGV and KEYS[1] = T:lease:global; the other
-- keys share T's hash tag and are built from T (a queue's keys are data-dependent: which user,
-- which replica is next), so each script stays in one slot on Redis Cluster.
--   T:lease:global      zset lease id -> expiry ms (global scope)
--   T:lease:<user>      zset lease id -> expiry ms (one per user; the key is passed in, encoded)
--   T:holders           hash lease id -> user lease key (to clean the user scope when a lease dies)
--   T:fence             fencing counter, also the fleet-wide arrival order of waiters
--   T:q2:<class>        zset waiter id -> arrival seq: every waiter of a class (0 = served first)
--   T:uq2:<class>:<user> zset waiter id -> arrival seq: one user's waiters of a class
--   T:ready2:<class>    zset user -> arrival seq of that user's first waiter of the class, for
--                       users with room under the user cap only: the waiters dispatch may grant
--   T:fl                zset waiter id -> ms until which an enter of that id is refused (the mark
--                       of a leave that overtook its enter)
--   T:replicas          zset replica id -> heartbeat expiry ms (the replica registry)
--   T:grants:<replica>  hash waiter -> "waiter fence expiry": grants neither collected by heartbeat
--                       nor released yet
--   T:peak:<period>     the most global leases at once in heartbeat period <period> (NOW / HB_TTL)
--   channel T:ch:<replica>  "g waiter fence expiry" (granted) | "r waiter" (queue reset)
-- <user> is the user lease key without its `T:lease:` head (already encoded: no `:`, no braces).
-- A waiter keeps no record beside its queue entries: its id is `<replica>.<random>.<ms>`, <ms>
-- how long after its arrival it may still be granted (its wait budget and a margin; arrival seqs
-- are the fencing counter, which runs at Redis time in µs or above). The `2` in the queue keys
-- marks that layout: builds that kept a record per waiter (`T:w:<waiter>`) queued in `T:q:`,
-- `T:uq:` and `T:ready:`, so during a rolling upgrade each build serves its own waiters and
-- neither takes the other's for dead; both share the leases, so the caps hold throughout.
-- A group without per-user limits (user_cap 0: no user cap, no per-user queue limit) keeps none
-- of the user structures (user scopes, holders, user queues, ready sets): with
-- every user always under its cap, FIFO among users' first waiters is FIFO among all waiters, so
-- a dispatch serves a class queue from its head. Its own key:
--   T:fq:<class>        zset waiter id -> arrival seq (the class queue)
-- It shares T:lease:global, T:fence and the registry with the per-user layout, so a fleet whose
-- replicas disagree on the mode still holds the global cap (each mode serves its own queue).
-- A user at its cap has no entry in any T:ready2:<class>, so its waiters cost dispatch nothing
-- however many there are; the user is made ready again whenever its lease count drops.
-- ARGV[1] T   ARGV[2] user_cap   ARGV[3] global_cap   ARGV[4] lease_ttl_ms   ARGV[5] heartbeat_ttl_ms
-- ARGV[6] number of priority classes (1..32)
-- Loaded once as part of a Functions library (helpers compiled once, not on every call) or
-- prepended to each script for EVALSHA; either way every script body starts with begin(KEYS, ARGV),
-- which sets the per-call state below. Redis runs one call at a time, so calls never share it.
local T, USER_CAP, GLOBAL_CAP, LEASE_TTL, HB_TTL, NC
local GLOBAL, REPLICAS, HOLDERS, USER_HEAD, FENCE, Q, READY
-- No per-user limits (see above), and that layout's leave marks.
local FLAT, LEFT
local NOW, NOW_US, NOW_S, AFTER_NOW, EXPIRY, EXPIRY_S, LEASE_TTL_S, GRANTS_TTL_S, REPLICAS_TTL_S
-- The TTL of the global scope and the holders map (see group_of).
local SCOPE_TTL_S
local PEAK_HEAD, PEAK_BUCKET, PEAK_KEY, PEAK_TTL_S
-- Keys whose TTL this call already set: NOW is fixed within a call, so once is enough.
local ttl_kept
-- Live members of a key as counted by this call, before it added any.
local counted
-- This period's peak as read or written by this call (nil: not read yet).
local peak_seen
-- Live global leases as this call last counted them plus its grants since (nil: not counted, or
-- a lease was dropped since): the peak is noted from it without a count per grant.
local live_global
-- Whether this call's reclaim_global took out every expired global lease (it is bounded): a
-- dispatch after it need not look again.
local reclaimed_all
-- The run of fencing tokens this call reserved and has not used yet (nil: none).
local fence_next, fence_last
-- Replicas already looked up in this call (a dispatch often grants several waiters of one).
local alive
local DAY_S = '86400000'
-- Steps of one dispatch: a step grants a waiter, drops a dead one, sets a user at its cap aside
-- or drops a stale ready entry. Only the first can repeat for the same waiter, so waiters held
-- back by their user cap never use this budget; it bounds one call's cleanup after a replica
-- died with many waiters (the rest is done by later calls).
local STEPS = 200

-- What begin derives from a group's arguments alone (key names, TTLs as strings), per T, kept
-- across calls: a Functions library keeps its state while it is loaded (EVALSHA runs keep
-- nothing, and rebuild it every call). A Lua string costs ~0.3 µs to build here, a visible share
-- of a short call. Dropped whole past 256 groups, so it stays small whatever T callers send.
local groups, n_groups = {}, 0

-- How grants are pushed. On a Redis Cluster (7.0+) with SPUBLISH: a PUBLISH there is relayed to
-- every node over the cluster bus, so each push would cost every master; a shard channel's message
-- stays on the shard that owns the group's slot, where the replicas SSUBSCRIBE. Asked once per
-- group (a server cannot switch cluster mode while it runs; under EVALSHA, once per call).
local function publish_command()
  if (redis.REDIS_VERSION_NUM or 0) >= 0x070000
    and string.find(redis.call('INFO', 'cluster'), 'cluster_enabled:1', 1, true) then
    return 'SPUBLISH'
  end
  return 'PUBLISH'
end

local function group_of(ARGV, flat, nc)
  local g = groups[ARGV[1]]
  if g and g.lease_ttl_s == ARGV[4] and g.hb_ttl_s == ARGV[5] and g.nc == nc and g.flat == flat then
    return g
  end
  if n_groups >= 256 then groups, n_groups = {}, 0 end
  local t, hb_ttl, lease_ttl = ARGV[1], tonumber(ARGV[5]), tonumber(ARGV[4])
  local lease_and_two_beats = string.format('%d', 2 * hb_ttl + lease_ttl)
  g = {
    lease_ttl_s = ARGV[4], hb_ttl_s = ARGV[5], nc = nc, flat = flat,
    global = t .. ':lease:global', replicas = t .. ':replicas', holders = t .. ':holders',
    user_head = t .. ':lease:', fence = t .. ':fence', left = t .. ':fl',
    peak_head = t .. ':peak:', q = {}, ready = {}, publish = publish_command(),
    grants_ttl_s = lease_and_two_beats,
    -- The global scope and the holders map outlive their last lease by two heartbeat TTLs: a
    -- lease that expires unreleased (its replica died) is then still there for a heartbeat's
    -- dispatch to reclaim, which makes its user ready again. Were the keys to go with it, a user
    -- held at its cap by that lease would stay out of the ready sets, its waiters unserved.
    scope_ttl_s = lease_and_two_beats,
    replicas_ttl_s = string.format('%d', 10 * hb_ttl),
    peak_ttl_s = string.format('%d', 5 * hb_ttl),
    -- The peak key of the last bucket seen.
    peak_bucket = nil, peak_key = nil,
  }
  local q_head = flat and ':fq:' or ':q2:'
  for c = 0, nc - 1 do
    g.q[c] = t .. q_head .. c
    g.ready[c] = t .. ':ready2:' .. c
  end
  groups[t] = g
  n_groups = n_groups + 1
  return g
end

local G
-- Per replica seen by this call: {grants key, channel}.
local replica_keys

local function begin(KEYS, ARGV)
  T = ARGV[1]
  USER_CAP = tonumber(ARGV[2])
  GLOBAL_CAP = tonumber(ARGV[3])
  LEASE_TTL = tonumber(ARGV[4])
  HB_TTL = tonumber(ARGV[5])
  NC = tonumber(ARGV[6])
  assert(T and USER_CAP and GLOBAL_CAP and LEASE_TTL and HB_TTL, "admission: T, caps and ttls")
  FLAT = USER_CAP == 0
  assert(NC and NC >= 1 and NC <= 32, "admission: 1..32 classes")
  G = group_of(ARGV, FLAT, NC)
  GLOBAL = G.global
  assert(KEYS[1] == GLOBAL, "admission: KEYS[1] must be T:lease:global")
  REPLICAS, HOLDERS, USER_HEAD, FENCE, LEFT = G.replicas, G.holders, G.user_head, G.fence,
    G.left
  Q, READY, PEAK_HEAD = G.q, G.ready, G.peak_head
  GRANTS_TTL_S, REPLICAS_TTL_S, PEAK_TTL_S = G.grants_ttl_s, G.replicas_ttl_s, G.peak_ttl_s
  SCOPE_TTL_S = G.scope_ttl_s
  LEASE_TTL_S = ARGV[4]
  local now_t = redis.call('TIME')
  NOW_US = tonumber(now_t[1]) * 1000000 + tonumber(now_t[2])
  NOW = math.floor(NOW_US / 1000)
  -- Numbers reach Redis as strings. Formatted once here: a Lua number passed to redis.call is
  -- printed with %.17g and parsed back with strtod on every call (a visible share of Redis's CPU).
  NOW_S = string.format('%d', NOW)
  AFTER_NOW = '(' .. NOW_S
  EXPIRY = NOW + LEASE_TTL
  EXPIRY_S = string.format('%d', EXPIRY)
  PEAK_BUCKET = math.floor(NOW / HB_TTL)
  if G.peak_bucket ~= PEAK_BUCKET then
    G.peak_bucket = PEAK_BUCKET
    G.peak_key = PEAK_HEAD .. string.format('%d', PEAK_BUCKET)
  end
  PEAK_KEY = G.peak_key
  ttl_kept, counted, peak_seen, alive, live_global = {}, {}, nil, {}, nil
  replica_keys = {}
  fence_next, fence_last = nil, nil
  reclaimed_all = false
end

-- A replica's grants key and channel (built once per call).
local function keys_of(replica)
  local k = replica_keys[replica]
  if not k then
    k = {T .. ':grants:' .. replica, T .. ':ch:' .. replica}
    replica_keys[replica] = k
  end
  return k
end

local function grants_key(replica)
  return keys_of(replica)[1]
end

local function channel(replica)
  return keys_of(replica)[2]
end

-- Sends a message to a replica's channel (see publish_command).
local function notify(replica, message)
  redis.call(G.publish, channel(replica), message)
end

local function live(key)
  return redis.call('ZCOUNT', key, AFTER_NOW, '+inf')
end


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

-- A member was removed from `key`, which may be gone now: its TTL must be set again when it is
-- next written (ttl_kept), and its live count is stale (counted). A batch writes a key again after
-- removing from it within one call.
local function removed(key)
  ttl_kept[key] = nil
  counted[key] = nil
  if key == GLOBAL then live_global = nil end
end

-- The user part of a user lease key, and that user's queue of one class.
local function user_of(user_key)
  return string.sub(user_key, #USER_HEAD + 1)
end

local function user_queue(class, user)
  return T .. ':uq2:' .. class .. ':' .. user
end

local function user_queues(user)
  local keys = {}
  for c = 0, NC - 1 do keys[c + 1] = user_queue(c, user) end
  return keys
end

local function user_has_room(user_key)
  if FLAT then return true end
  local n = live(user_key)
  counted[user_key] = n
  return n < USER_CAP
end

-- Puts `user` in the ready set of `class` with the arrival seq of its first waiter there, or takes
-- it out if it has none. `only_if_ready`: update an entry, never add one (the user is at its cap).
local function refresh_class(user, class, only_if_ready)
  local uq = user_queue(class, user)
  local head = redis.call('ZRANGE', uq, '0', '0', 'WITHSCORES')
  if not head[1] then
    redis.call('ZREM', READY[class], user)
    removed(READY[class])
  elseif only_if_ready then
    redis.call('ZADD', READY[class], 'XX', head[2], user)
  else
    redis.call('ZADD', READY[class], head[2], user)
    -- The ready entry lives as long as the waiter it stands for.
    local ttl = redis.call('PTTL', uq)
    if ttl > 0 then keep_ttl(READY[class], string.format('%d', ttl)) end
  end
end

-- Takes a user at its cap out of every ready set (one EXISTS when it has nobody waiting).
local function set_aside(user_key)
  local user = user_of(user_key)
  if redis.call('EXISTS', unpack(user_queues(user))) == 0 then return end
  for c = 0, NC - 1 do
    redis.call('ZREM', READY[c], user)
    removed(READY[c])
  end
end

-- Makes the ready sets agree with a user's room and waiters: called whenever its lease count may
-- have dropped. One EXISTS when the user has nobody waiting (the usual case).
local function refresh_user(user_key)
  local user = user_of(user_key)
  local queues = user_queues(user)
  if redis.call('EXISTS', unpack(queues)) == 0 then return end
  local room = user_has_room(user_key)
  for c = 0, NC - 1 do
    if room then
      refresh_class(user, c, false)
    else
      redis.call('ZREM', READY[c], user)
      removed(READY[c])
    end
  end
end

-- Drop expired global leases (at most 100) and their entries in the user scopes; their users may
-- have room again.
local function reclaim_global()
  local expired = redis.call('ZRANGE', GLOBAL, '-inf', NOW_S, 'BYSCORE', 'LIMIT', '0', '100')
  reclaimed_all = #expired < 100
  if #expired == 0 then return end
  -- Only expired leases go: a live count taken before still stands (see in_use).
  local live_before = live_global
  redis.call('ZREM', GLOBAL, unpack(expired))
  removed(GLOBAL)
  if live_before then counted[GLOBAL], live_global = live_before, live_before end
  if FLAT then return end
  local users = {}
  for i, user_key in ipairs(redis.call('HMGET', HOLDERS, unpack(expired))) do
    if user_key then
      redis.call('ZREM', user_key, expired[i])
      removed(user_key)
      users[user_key] = true
    end
  end
  redis.call('HDEL', HOLDERS, unpack(expired))
  removed(HOLDERS)
  if live_before then counted[HOLDERS] = live_before end
  for user_key in pairs(users) do refresh_user(user_key) end
end

-- Fencing tokens never fall below Redis time in µs, so they stay monotonic even if the counter
-- key expires or is lost (a Redis restarted empty): a Redis grants far fewer than one lease per
-- µs, so no token issued before can be above the time in µs now. The counter therefore usually
-- lags the clock, and a run starts at the time: one SET that also returns the previous value,
-- and a second only when the counter was ahead. Its TTL, renewed by every SET, only collects an
-- idle counter.
-- Tokens are taken `n` at a time (one run for a batch); a caller may leave some of its run
-- unused: tokens must only increase, not be dense, and a run is never longer than the requests
-- behind it, so the counter still moves slower than the clock.
local function reserve_fences(n)
  local first = NOW_US
  local prev = tonumber(redis.call('SET', FENCE, string.format('%d', first + n - 1), 'PX', DAY_S,
    'GET'))
  if prev and prev >= first then
    first = prev + 1
    redis.call('SET', FENCE, string.format('%d', first + n - 1), 'PX', DAY_S)
  end
  fence_next, fence_last = first, first + n - 1
end

-- The next token; `want`: how many this call may still need, reserved together when the
-- current run is used up.
local function next_fence(want)
  if fence_next == nil or fence_next > fence_last then reserve_fences(want or 1) end
  local f = fence_next
  fence_next = f + 1
  return f
end

-- The fleet's busiest moments, per heartbeat TTL: T:peak:<NOW / HB_TTL> holds the most global
-- leases right after any grant of that period (the live count where this call has one, else ZCARD,
-- which counts expired ones not yet reclaimed too: never low). A replica's heartbeat reads the last
-- four (recent_peak); during a Redis outage it leaves room for that many (its local limit, see the
-- replica's admission/outage.rs).

local function note_peak()
  local n = live_global or redis.call('ZCARD', GLOBAL)
  if peak_seen == nil then peak_seen = tonumber(redis.call('GET', PEAK_KEY)) or 0 end
  if n > peak_seen then
    redis.call('SET', PEAK_KEY, string.format('%d', n), 'PX', PEAK_TTL_S)
    peak_seen = n
  end
end

-- The most global leases at once over this heartbeat period and the three before (and now).
local function recent_peak()
  local peak = live(GLOBAL)
  for b = PEAK_BUCKET - 3, PEAK_BUCKET do
    local p = tonumber(redis.call('GET', PEAK_HEAD .. string.format('%d', b)))
    if p and p > peak then peak = p end
  end
  return peak
end

-- The user-scope half of a grant, and the fleet's peak: what a dispatch must write at once (it
-- reads the user's scope again for its next waiter); `take` adds the global half.
-- With live_global unknown the peak is read from the global scope, so that half must be in.
-- `settled`: the caller already took the user out of every ready set if this grant puts it at
-- its cap.
local function take_user(id, user_key, settled)
  -- The user's live leases, as user_has_room counted them just before (nil: not counted).
  local before = counted[user_key]
  if live_global then live_global = live_global + 1 end
  note_peak()
  redis.call('ZADD', user_key, EXPIRY_S, id)
  keep_ttl(user_key, LEASE_TTL_S)
  -- At its cap now: its waiters step aside (below it they were ready already).
  if before == nil then
    refresh_user(user_key)
  elseif before + 1 >= USER_CAP and not settled then
    set_aside(user_key)
  end
end

-- Grant lease `id` in the global scope and in `user_key` (its fencing token is the caller's to
-- take: a batch takes its tokens together).
local function take(id, user_key)
  redis.call('ZADD', GLOBAL, EXPIRY_S, id)
  keep_ttl(GLOBAL, SCOPE_TTL_S)
  if FLAT then
    if live_global then live_global = live_global + 1 end
    note_peak()
    return
  end
  redis.call('HSET', HOLDERS, id, user_key)
  keep_ttl(HOLDERS, SCOPE_TTL_S)
  take_user(id, user_key)
end

-- Remove lease `id` from its user's scope; its user may have room again. The global scope and
-- the holders map are the caller's (a batch removes its leases there with one command each).
local function drop_user_lease(id, user_key)
  redis.call('ZREM', user_key, id)
  removed(user_key)
  refresh_user(user_key)
end

-- Remove lease `id` from both scopes. Returns 1 if it was live.
local function drop_lease(id, user_key)
  local score = redis.call('ZSCORE', GLOBAL, id)
  redis.call('ZREM', GLOBAL, id)
  removed(GLOBAL)
  if not FLAT then
    redis.call('HDEL', HOLDERS, id)
    removed(HOLDERS)
    drop_user_lease(id, user_key)
  end
  if score and tonumber(score) > NOW then return 1 end
  return 0
end


local function replica_alive(r)
  local a = alive[r]
  if a == nil then
    local s = redis.call('ZSCORE', REPLICAS, r)
    a = s ~= false and tonumber(s) > NOW
    alive[r] = a
  end
  return a
end

-- The replica a waiter or lease id belongs to: ids start with it and a dot.
local function replica_of(id)
  return string.match(id, '^([^.]+)%.')
end

-- A waiter id's replica and budget (`<replica>.<random>.<ms>`), in one match anchored at both
-- ends: an unanchored pattern is tried from every position of the id, a visible share of a
-- short call, and dispatch reads both for every waiter it looks at.
local ID_PARTS = '^([^.]+)%.[^.]+%.(%d+)$'

-- How long (ms) after its arrival a waiter may be granted, from its id (nil: an id without it).
local function budget_of(id)
  local _, ms = string.match(id, ID_PARTS)
  return tonumber(ms)
end

-- Until when (ms) a waiter that arrived at `seq` (µs) with a budget of `ms` may be granted.
local function deadline_of(seq, ms)
  return math.floor(tonumber(seq) / 1000) + ms
end

-- The same from its id (nil: an id without a budget).
local function waiter_until(id, seq)
  local ms = budget_of(id)
  return ms and deadline_of(seq, ms)
end

-- Whether a queued waiter (arrival seq `seq`) may still be granted: its id names a replica that
-- heartbeats and a budget that has not run out. Also returns that replica.
local function waiter_live(id, seq)
  local replica, ms = string.match(id, ID_PARTS)
  if not ms or deadline_of(seq, tonumber(ms)) <= NOW then return false end
  if replica_alive(replica) then return true, replica end
  return false
end

-- Removes a waiter from every structure but the ready sets (see refresh_class).
local function forget_waiter(id, class, user)
  local uq = user_queue(class, user)
  redis.call('ZREM', Q[class], id)
  redis.call('ZREM', uq, id)
  removed(Q[class])
  removed(uq)
end

-- Live global leases. The holders map has an entry per global lease and the same TTL.
local function in_use()
  local n = live(GLOBAL)
  counted[GLOBAL] = n
  counted[HOLDERS] = n
  live_global = n
  return n
end

-- Appends `...` to the list at `map[key]`, creating it.
local function push(map, key, ...)
  local list = map[key]
  if not list then
    list = {}
    map[key] = list
  end
  for _, v in ipairs({...}) do list[#list + 1] = v end
end

-- Writes what a dispatch's loop left for later, one multi-member command per key: each served
-- waiter's lease in the global scope and the holders map, its class queue entry removed, its
-- fencing token (in grant order), its grant recorded for its replica's heartbeat and pushed on
-- its channel. `served`: id, class, replica, user lease key, four entries per waiter.
-- `dropped` (no per-user limits only): id, class of dead waiters, out of the queue.
-- A replica's grants go in one message, a line each: only builds that read every line run the
-- queues of either layout (T:fq:, T:q2:).
local function write_grants(served, dropped)
  local n = #served / 4
  local queued = {}
  for i = 1, #(dropped or {}), 2 do
    push(queued, dropped[i + 1], dropped[i])
  end
  -- fields: per replica, id and message of each grant (in grant order); replicas: in order of
  -- first grant.
  local scores, holders, fields, replicas = {}, {}, {}, {}
  for i = 1, #served, 4 do
    local id, class, replica, user_key = served[i], served[i + 1], served[i + 2], served[i + 3]
    local k = #scores
    scores[k + 1] = EXPIRY_S
    scores[k + 2] = id
    if not FLAT then
      holders[k + 1] = id
      holders[k + 2] = user_key
    end
    local q = queued[class]
    if not q then
      q = {}
      queued[class] = q
    end
    q[#q + 1] = id
    local msg = id .. ' ' .. string.format('%d', next_fence(n - (i - 1) / 4)) .. ' ' .. EXPIRY_S
    local f = fields[replica]
    if not f then
      f = {}
      fields[replica] = f
      replicas[#replicas + 1] = replica
    end
    f[#f + 1] = id
    f[#f + 1] = msg
  end
  if n > 0 then
    redis.call('ZADD', GLOBAL, unpack(scores))
    keep_ttl(GLOBAL, SCOPE_TTL_S)
    if not FLAT then
      redis.call('HSET', HOLDERS, unpack(holders))
      keep_ttl(HOLDERS, SCOPE_TTL_S)
    end
  end
  for class, ids in pairs(queued) do
    redis.call('ZREM', Q[class], unpack(ids))
    removed(Q[class])
  end
  for _, replica in ipairs(replicas) do
    local f = fields[replica]
    local grants = grants_key(replica)
    redis.call('HSET', grants, unpack(f))
    if ttl_kept[grants] == nil then
      ttl_kept[grants] = GRANTS_TTL_S
      redis.call('PEXPIRE', grants, GRANTS_TTL_S)
    end
  end
  for _, replica in ipairs(replicas) do
    local f, lines = fields[replica], {}
    for i = 2, #f, 2 do lines[#lines + 1] = 'g ' .. f[i] end
    notify(replica, table.concat(lines, '\n'))
  end
end

-- A dispatch without per-user limits: each class queue is served from its head, strict priority
-- between classes, in runs of as many waiters as slots are free (one read per run). Waiters whose
-- replica stopped heartbeating, or whose budget ran out, are dropped (and cost a step).
-- Called by dispatch once expired leases are reclaimed, with the free slots (at least one).
local function dispatch_flat(free)
  local served, dropped = {}, {}
  local steps = 0
  for class = 0, NC - 1 do
    local start = 0
    while free > 0 and steps < STEPS do
      local want = math.min(free, STEPS - steps)
      local heads = redis.call('ZRANGE', Q[class], string.format('%d', start),
        string.format('%d', start + want - 1), 'WITHSCORES')
      if #heads == 0 then break end
      start = start + #heads / 2
      for i = 1, #heads, 2 do
        local id = heads[i]
        steps = steps + 1
        local ok, replica = waiter_live(id, heads[i + 1])
        if ok then
          local k = #served
          served[k + 1], served[k + 2], served[k + 3], served[k + 4] = id, class, replica, ''
          free = free - 1
          live_global = live_global + 1
        else
          dropped[#dropped + 1] = id
          dropped[#dropped + 1] = class
        end
      end
    end
    if free <= 0 or steps >= STEPS then break end
  end
  if #served > 0 then note_peak() end
  write_grants(served, dropped)
  return free
end

-- Hand free slots to waiters: strict priority between classes, FIFO within one among waiters
-- whose user has room. The first such waiter of a class is the first waiter of the first user in
-- its ready set: no waiter held back by its own user cap is looked at (no head-of-line blocking,
-- and no cost that grows with them). Waiters whose replica stopped heartbeating, or whose budget
-- ran out, are dropped. Each grant is recorded for the replica's heartbeat and pushed on its
-- channel.
-- Expired leases are cleaned up before anyone is served: their users may have room now, and must
-- be ready first (a lease of a dead replica expires without a release to say so).
-- `entering` (admission_enter): the caller has newcomers, who may take the slots left.
-- Returns the free slots left (0 or fewer when none were free).
local function dispatch(entering)
  -- The live count comes first: with no slot free nobody can be served, and the cleanup waits for
  -- a call that has one (an expired lease never counts as in use). That is the usual enter of a
  -- busy queue: one read. live_global then stays known through the loop (nothing in it drops a
  -- live lease), so take_user notes the peak without reading the global scope, whose writes wait.
  local free = GLOBAL_CAP - in_use()
  if free <= 0 then return free end
  -- Nobody queued at all (every call below the caps): nothing to clean up for.
  if entering and redis.call('EXISTS', unpack(Q, 0, NC - 1)) == 0 then return free end
  if not reclaimed_all then reclaim_global() end
  if FLAT then return dispatch_flat(free) end
  -- Nobody ready: nothing to hand out. (With one class the loop's first read tells as much.)
  if NC > 1 and redis.call('EXISTS', unpack(READY, 0, NC - 1)) == 0 then return free end
  local steps = 0
  -- Waiters served, written once the loop is done (write_grants): the loop reads the ready sets,
  -- the users' queues and scopes, never the class queues, the global scope or the holders map.
  local served = {}
  for class = 0, NC - 1 do
    local ready = READY[class]
    while free > 0 and steps < STEPS do
      local first = redis.call('ZRANGE', ready, '0', '0')
      local user = first[1]
      if not user then break end
      steps = steps + 1
      -- Its first two waiters: the one to serve, and the one whose turn comes next.
      local heads = redis.call('ZRANGE', user_queue(class, user), '0', '1', 'WITHSCORES')
      local id = heads[1]
      local user_key = USER_HEAD .. user
      if not id then
        redis.call('ZREM', ready, user) -- its waiters left
        removed(ready)
      else
        local ok, replica = waiter_live(id, heads[2])
        if not ok then
          forget_waiter(id, class, user)
          refresh_class(user, class, true)
        elseif not user_has_room(user_key) then
          -- At its cap after all (a cap lowered by a new configuration): set aside.
          set_aside(user_key)
        else
          local uq = user_queue(class, user)
          redis.call('ZREM', uq, id)
          removed(uq)
          -- At its cap with this grant: it steps aside. With one class, this ready set is its
          -- only one, settled here (take_user need not look for its waiters).
          local at_cap = counted[user_key] + 1 >= USER_CAP
          if heads[3] and not (at_cap and NC == 1) then
            redis.call('ZADD', ready, 'XX', heads[4], user)
          else
            redis.call('ZREM', ready, user)
            removed(ready)
          end
          take_user(id, user_key, NC == 1)
          served[#served + 1] = id
          served[#served + 1] = class
          served[#served + 1] = replica
          served[#served + 1] = user_key
          free = free - 1
        end
      end
    end
    if free <= 0 or steps >= STEPS then break end
  end
  write_grants(served)
  return free
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


local function mark_alive(replica)
  redis.call('ZADD', REPLICAS, string.format('%d', NOW + HB_TTL), replica)
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
