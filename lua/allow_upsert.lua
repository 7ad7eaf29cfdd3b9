-- allow_upsert: add an allowlist entry, or refresh one (new expiry, note and
-- actor: a new login refreshes the entry). The entry, its expiry index, `seq`
-- and the stream event change together in this one atomic script.
--
-- KEYS[1]  meta     hash: epoch, seq, last_id
-- KEYS[2]  entries  hash: canonical member (a CIDR; an override's rule/key) -> JSON
--                   {expires_at, note, created_at, actor, ver, payload?}
-- KEYS[3]  exp      sorted set: CIDR scored by expires_at (permanent entries are not in it)
-- KEYS[4]  events   stream
-- KEYS[5]  lost     hash: the witness of a lost dataset (see allow_recover.lua)
--          All five share the list's hash tag: {<prefix>:allow}, {<prefix>:deny}, {<prefix>:override}.
-- ARGV[1]  cidr, canonical (the caller validated it: nothing here rejects input)
-- ARGV[2]  ttl in ms, > 0; or 0 for a permanent entry
-- ARGV[3]  note (at most 256 bytes)
-- ARGV[4]  actor (who made the change)
-- ARGV[5]  epoch to create if the dataset has none yet (random, from the caller)
-- ARGV[6]  event retention in ms: events older than this are trimmed (XADD MINID ~)
-- ARGV[7]  event cap: the stream is then trimmed to about this many (XTRIM MAXLEN ~)
--          (one XADD cannot take both MINID and MAXLEN, hence the XTRIM)
-- ARGV[8]  "1": the operator means to start a new, empty allowlist if Redis
--          holds none (`--new-epoch`); "0": refuse that while `lost` exists
-- ARGV[9]  optional: the entry's payload as JSON text, passed through as is
--          (an override's limits: `["100/m"]`, `"unlimited"`, `"deny"`);
--          absent or "" for the IP lists, whose entries carry none. Written
--          as the entry's `payload` field and the event's `payload` field.
-- Returns  {seq, expires_at, created_at, epoch}, all strings; expires_at "0" = never.
--          Or, when Redis holds no allowlist, a node witnessed one (`lost`)
--          and ARGV[8] is "0": {"lost", node, epoch, seq, entries} of that
--          witness, and nothing is written. A write never silently starts
--          a fleet's allowlist from nothing.
--          Times are ms since the Unix epoch from Redis TIME; created_at is the
--          time of this write.
--
-- Example: ARGV = {"203.0.113.7/32", "86400000", "login alice", "admin-api",
--                  "9f2c4e1a07b3d5c6", "604800000", "1000000"}
--   at TIME {1700000000, 123456} on an empty dataset
--   -> {"1", "1700086400123", "1700000000123", "9f2c4e1a07b3d5c6"}, and the event
--   epoch 9f2c4e1a07b3d5c6 seq 1 op upsert cidr 203.0.113.7/32
--   expires_at 1700086400123 note "login alice" actor admin-api ver 1
--   created_at 1700000000123 (a field later readers may use: a node keeps
--   note, actor and created_at to restore the list if Redis loses it)
-- An override: ARGV[1] "api/tenant-acme", ARGV[9] '["100/m"]' (under
--   {<prefix>:override}) -> the entry {"expires_at":0,...,"ver":1,"payload":["100/m"]}
--   and the same event with a `payload` field '["100/m"]'.
assert(#KEYS == 5 and (#ARGV == 8 or #ARGV == 9), 'allow_upsert: expected 5 keys and 8 or 9 args')
local cidr, note, actor = ARGV[1], ARGV[3], ARGV[4]
local payload = ARGV[9] or ''
local ttl = tonumber(ARGV[2])
assert(ttl and ttl >= 0, 'allow_upsert: ttl_ms must be a number >= 0')

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expires = 0
if ttl > 0 then expires = now + ttl end
-- %.0f: exact for integers below 2^53, unlike tostring (which may use exponents).
local now_s, exp_s = string.format('%.0f', now), string.format('%.0f', expires)

local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  local deliberate = ARGV[8] == '1'
  if not deliberate and redis.call('EXISTS', KEYS[5]) == 1 then
    local w = redis.call('HMGET', KEYS[5], 'node', 'epoch', 'seq', 'entries')
    return {'lost', w[1] or '', w[2] or '', w[3] or '0', w[4] or '0'}
  end
  epoch = ARGV[5]
  -- `born`: how this epoch began (README, "When Redis loses its data").
  local born = 'write'
  if deliberate then born = 'new_epoch' end
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'born', born)
  redis.call('DEL', KEYS[5])
end

local entry = '{"expires_at":' .. exp_s .. ',"note":' .. cjson.encode(note) ..
  ',"created_at":' .. now_s .. ',"actor":' .. cjson.encode(actor) .. ',"ver":1'
if payload ~= '' then entry = entry .. ',"payload":' .. payload end
entry = entry .. '}'
redis.call('HSET', KEYS[2], cidr, entry)
if expires > 0 then
  redis.call('ZADD', KEYS[3], exp_s, cidr)
else
  redis.call('ZREM', KEYS[3], cidr)
end

local seq = tostring(redis.call('HINCRBY', KEYS[1], 'seq', 1))
local min_id = string.format('%.0f', now - tonumber(ARGV[6]))
local fields = {'epoch', epoch, 'seq', seq, 'op', 'upsert', 'cidr', cidr,
  'expires_at', exp_s, 'note', note, 'actor', actor, 'ver', '1', 'created_at', now_s}
if payload ~= '' then
  fields[#fields + 1] = 'payload'
  fields[#fields + 1] = payload
end
local id = redis.call('XADD', KEYS[4], 'MINID', '~', min_id, '*', unpack(fields))
redis.call('XTRIM', KEYS[4], 'MAXLEN', '~', ARGV[7])
redis.call('HSET', KEYS[1], 'last_id', id)
return {seq, exp_s, now_s, epoch}
