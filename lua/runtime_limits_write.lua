-- Replace the runtime-limits document, if it is still at the version the writer read.
-- KEYS[1]  hash {v = version, doc = the document's JSON}
-- ARGV[1]  version the writer read (0: none stored)   ARGV[2] the new document (JSON object)
-- ARGV[3]  channel announcing the new version          ARGV[4] the key's TTL (ms)
-- returns  {1, new_version, stored JSON} written | {0, current_version, ""} stale: read again
-- The script sets `version` and `updated_at_ms` (Redis TIME) itself, so no writer's clock and no
-- writer's idea of the version can end up in the document.
assert(#KEYS == 1 and #ARGV == 4, "runtime_limits_write: 1 key, 4 args")
local expected = tonumber(ARGV[1])
local ttl = tonumber(ARGV[4])
assert(expected and ttl and ttl > 0, "runtime_limits_write: version and ttl are numbers")
local current = tonumber(redis.call('HGET', KEYS[1], 'v') or '0') or 0
if current ~= expected then
  return {0, current, ''}
end
local doc = cjson.decode(ARGV[2])
assert(type(doc) == 'table', "runtime_limits_write: the document is a JSON object")
local t = redis.call('TIME')
local version = current + 1
doc.version = version
doc.updated_at_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local json = cjson.encode(doc)
local v = string.format('%d', version)
redis.call('HSET', KEYS[1], 'v', v, 'doc', json)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', ARGV[3], v)
return {1, version, json}
