-- allow_remove: remove one allowlist entry. The entry, its expiry index, `seq`
-- and the stream event change together; an absent entry changes nothing and
-- publishes nothing.
--
-- KEYS[1]  meta     hash: epoch, seq, last_id
-- KEYS[2]  entries  hash: canonical CIDR -> JSON entry
-- KEYS[3]  exp      sorted set: CIDR scored by expires_at
-- KEYS[4]  events   stream
-- KEYS[5]  lost     hash: the witness of a lost dataset (see allow_recover.lua)
-- ARGV[1]  cidr, canonical
-- ARGV[2]  actor
-- ARGV[3]  epoch to create if the dataset has none (only if meta was lost)
-- ARGV[4]  event retention in ms (XADD MINID ~)
-- ARGV[5]  event cap (XTRIM MAXLEN ~)
-- Returns  {} when there was no such entry; else {seq, epoch} (strings).
--          {"lost", node, epoch, seq, entries} when Redis holds no allowlist
--          and a node witnessed one: the entry may well be in that list,
--          "not on the allowlist" would be wrong.
--          The event carries the entry's last expires_at ("0" = never) and an
--          empty note.
--
-- Example: ARGV = {"203.0.113.7/32", "cli", "77aa...", "604800000", "1000000"}
--   with the entry present and seq 4 -> {"5", "9f2c4e1a07b3d5c6"} and the event
--   epoch 9f2c4e1a07b3d5c6 seq 5 op remove cidr 203.0.113.7/32
--   expires_at 1700086400123 note "" actor cli ver 1
assert(#KEYS == 5 and #ARGV == 5, 'allow_remove: expected 5 keys and 5 args')
local cidr, actor = ARGV[1], ARGV[2]
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[5]) == 1 then
  local w = redis.call('HMGET', KEYS[5], 'node', 'epoch', 'seq', 'entries')
  return {'lost', w[1] or '', w[2] or '', w[3] or '0', w[4] or '0'}
end
if redis.call('HEXISTS', KEYS[2], cidr) == 0 then
  return {}
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[3], cidr)
local exp_s = '0'
if score then exp_s = string.format('%.0f', tonumber(score)) end

local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[3]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'born', 'write')
end

redis.call('HDEL', KEYS[2], cidr)
redis.call('ZREM', KEYS[3], cidr)
local seq = tostring(redis.call('HINCRBY', KEYS[1], 'seq', 1))
local min_id = string.format('%.0f', now - tonumber(ARGV[4]))
local id = redis.call('XADD', KEYS[4], 'MINID', '~', min_id, '*',
  'epoch', epoch, 'seq', seq, 'op', 'remove', 'cidr', cidr, 'expires_at', exp_s,
  'note', '', 'actor', actor, 'ver', '1')
redis.call('XTRIM', KEYS[4], 'MAXLEN', '~', ARGV[5])
redis.call('HSET', KEYS[1], 'last_id', id)
return {seq, epoch}
