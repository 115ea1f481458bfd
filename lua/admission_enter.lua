-- Admit requests: each takes a slot now if one is free and nobody eligible waits, else queues.
-- (helpers: admission_lib.lua; KEYS[1] and ARGV[1..6] as described there)
-- Then one group of seven per request (a batch: in order, as if one call after another):
-- id (waiter/lease: `<replica>.<random>.<budget ms>`, see admission_lib.lua), user lease key,
-- replica, class 0..classes-1, max queued (all classes), max queued of one user (all classes),
-- how long its queue entries live, in ms (its budget)
-- returns three integers per request: {1, expiry_ms, fence} granted | {0, position, now_ms}
--         queued | {-1, 0, 0} queue full | {-2, 0, 0} this user's waiters fill its share
--         | {-3, 0, 0} this id already left (its caller gave up before the enter arrived)
-- Without per-user limits (user_cap 0): ARGV[7] replica, ARGV[8] max queued (all classes), then
-- two per request: id (`<replica>.<random>.<budget ms>`, see admission_lib.lua), class; the same
-- replies but -2.
begin(KEYS, ARGV)
-- Drops this user's waiters whose replica died or whose budget ran out (at most 100 looked at):
-- they must not count against its share of the queue. Returns how many were dropped.
local function prune_user(user)
  local dropped, looked = 0, 0
  for c = 0, NC - 1 do
    local before = dropped
    local heads = redis.call('ZRANGE', user_queue(c, user), 0, 99 - looked, 'WITHSCORES')
    for i = 1, #heads, 2 do
      looked = looked + 1
      if not waiter_live(heads[i], heads[i + 1]) then
        forget_waiter(heads[i], c, user)
        dropped = dropped + 1
      end
    end
    if dropped > before then refresh_class(user, c, true) end
    if looked >= 100 then break end
  end
  return dropped
end

-- Waiters queued in every class and in each, counted once per call (after the dispatch) and kept
-- up to date by the requests of the batch (nil: not counted yet, or stale after a prune). A
-- newcomer's arrival seq is above every other's, so it is last in its class: its position follows
-- from these counts, without a ZRANK.
local queued, per_class

-- The batch's additions to the class queues and the ready sets, written together (one ZADD per
-- key) before anything reads those keys: a prune, a count, the end of the call. Nothing else in
-- a request reads them (its position comes from the counts; a user queue, written at once, is what
-- the next request of the same user reads).
local pending_q, pending_ready, pending_ttl = {}, {}, {}

local function hold_back(list, key, ttl, ...)
  push(list, key, ...)
  local t = pending_ttl[key]
  if not t or ttl > t then pending_ttl[key] = ttl end
end

local function flush()
  for key, members in pairs(pending_q) do
    redis.call('ZADD', key, unpack(members))
    keep_ttl(key, string.format('%d', pending_ttl[key]))
  end
  for key, members in pairs(pending_ready) do
    redis.call('ZADD', key, 'NX', unpack(members))
    keep_ttl(key, string.format('%d', pending_ttl[key]))
  end
  pending_q, pending_ready, pending_ttl = {}, {}, {}
end

local function count_queued()
  flush()
  queued, per_class = 0, {}
  for c = 0, NC - 1 do
    per_class[c] = redis.call('ZCARD', Q[c])
    -- Every entry of a queue is live (scored by arrival): the flush's keep_ttl needs no PTTL.
    counted[Q[c]] = per_class[c]
    queued = queued + per_class[c]
  end
end

-- The leaves that overtook their enter, read for the whole batch at once: left[i] for the i-th
-- of `ids`.
local function left_marks(ids)
  local left = {}
  for i, until_ms in ipairs(redis.call('ZMSCORE', LEFT, unpack(ids))) do
    if until_ms and tonumber(until_ms) > NOW then left[i] = true end
  end
  return left
end

-- The batch without per-user limits: a waiter is its class queue entry alone (held back).
local function enter_flat()
  assert(#ARGV >= 10 and #ARGV % 2 == 0, "admission_enter: 8 args, then id and class pairs")
  local replica, max_queue = ARGV[7], tonumber(ARGV[8])
  assert(max_queue, "admission_enter: max queued")
  local ids, budgets = {}, {}
  for a = 9, #ARGV, 2 do
    local budget = budget_of(ARGV[a])
    assert(Q[tonumber(ARGV[a + 1])], "admission_enter: class out of range")
    assert(budget, "admission_enter: waiter id without its budget")
    ids[#ids + 1] = ARGV[a]
    budgets[#budgets + 1] = budget
  end
  local left = left_marks(ids)
  -- As below: the replica first, then one dispatch for the batch.
  ensure_alive(replica)
  local free = dispatch(true)
  local replies = {}
  for i, id in ipairs(ids) do
    local class = tonumber(ARGV[8 + 2 * i])
    -- Tokens this request and the ones after it may need (one each), reserved together.
    local want = #ids - i + 1
    local k = #replies
    if left[i] then
      replies[k + 1], replies[k + 2], replies[k + 3] = -3, 0, 0
    elseif free > 0 then
      take(id)
      free = free - 1
      replies[k + 1], replies[k + 2], replies[k + 3] = 1, EXPIRY, next_fence(want)
    else
      if not queued then count_queued() end
      if queued >= max_queue then
        replies[k + 1], replies[k + 2], replies[k + 3] = -1, 0, 0
      else
        queued = queued + 1
        per_class[class] = per_class[class] + 1
        hold_back(pending_q, Q[class], budgets[i], string.format('%d', next_fence(want)), id)
        local pos = 0
        for c = 0, class do pos = pos + per_class[c] end
        replies[k + 1], replies[k + 2], replies[k + 3] = 0, pos, NOW
      end
    end
  end
  flush()
  return replies
end

-- One request of the batch. `free`: slots left after the batch's dispatch and its grants so far;
-- `left`: whether a leave of this id came first.
local function enter(a, free, left)
  local id, user_key = ARGV[a], ARGV[a + 1]
  local class, max_queue, max_user = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]),
    tonumber(ARGV[a + 5])
  local ttl_s = ARGV[a + 6]
  local ttl = tonumber(ttl_s)

  if left then return {-3, 0, 0} end
  local room = user_has_room(user_key)
  -- Tokens this request and the ones after it may need (one each), reserved together.
  local want = (#ARGV - 6 - a) / 7 + 1
  if free > 0 and room then
    take(id, user_key)
    return {1, EXPIRY, next_fence(want)}
  end

  local user = user_of(user_key)
  local queues = user_queues(user)
  local mine = 0
  for i = 1, NC do mine = mine + redis.call('ZCARD', queues[i]) end
  if mine >= max_user then
    flush()
    local dropped = prune_user(user)
    mine = mine - dropped
    if dropped > 0 then queued = nil end
    if mine >= max_user then return {-2, 0, 0} end
  end
  if not queued then count_queued() end
  if queued >= max_queue then return {-1, 0, 0} end
  queued = queued + 1
  per_class[class] = per_class[class] + 1

  -- Arrival order: the fencing counter, strictly increasing fleet-wide and never reset.
  local seq = string.format('%d', next_fence(want))
  hold_back(pending_q, Q[class], ttl, seq, id)
  local uq = queues[class + 1]
  if mine == 0 then counted[uq] = 0 end -- a new key: a plain PEXPIRE
  redis.call('ZADD', uq, seq, id)
  keep_ttl(uq, ttl_s)
  -- Counted for this request only: the next one of this user finds the key with a TTL.
  counted[uq] = nil
  -- Held back only by the global cap: ready for the next free slot. A user with room is in the
  -- ready set of every class it waits in (a dispatch just refreshed any whose lease expired), so
  -- an entry already there stands for an earlier waiter and is kept (NX).
  if room then hold_back(pending_ready, READY[class], ttl, seq, user) end
  local pos = 0
  for c = 0, class do pos = pos + per_class[c] end
  return {0, pos, NOW}
end

if FLAT then return enter_flat() end
assert(#ARGV >= 13 and (#ARGV - 6) % 7 == 0, "admission_enter: 6 args, then groups of 7")

-- Every request's arguments are checked before anything is written: a bad one fails the whole
-- batch, not its second half after the first was queued (some of whose writes wait for a flush).
local ids = {}
for a = 7, #ARGV, 7 do
  assert(budget_of(ARGV[a]), "admission_enter: waiter id without its budget")
  ids[#ids + 1] = ARGV[a]
  local class, max_queue, max_user = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]),
    tonumber(ARGV[a + 5])
  local ttl = tonumber(ARGV[a + 6])
  assert(class and Q[class], "admission_enter: class out of range")
  assert(max_queue and max_user and ttl and ttl >= 1,
    "admission_enter: max queued, max queued per user and ttl")
  assert(string.sub(ARGV[a + 1], 1, #USER_HEAD) == USER_HEAD, "admission_enter: user key outside T")
end

-- The callers' replicas are registered first: the dispatch must not take them for dead.
local ensured = {}
for a = 9, #ARGV, 7 do
  if not ensured[ARGV[a]] then
    ensured[ARGV[a]] = true
    ensure_alive(ARGV[a])
  end
end
-- After a dispatch, every waiter still queued is held back (by the caps or its own user cap), so
-- a newcomer with room takes a free slot without overtaking anyone eligible. The batch's own
-- requests change that only by taking slots (counted down here) or by queueing when none is
-- free: a second dispatch would find nothing to grant.
local left = left_marks(ids)
local free = dispatch(true)
local replies = {}
for a = 7, #ARGV, 7 do
  local r = enter(a, free, left[(a - 7) / 7 + 1])
  if r[1] == 1 then free = free - 1 end
  replies[#replies + 1] = r[1]
  replies[#replies + 1] = r[2]
  replies[#replies + 1] = r[3]
end
flush()
return replies
