-- allow_reap: expire due allowlist entries, publishing one `expire` event for
-- each. Safe to run on every replica at once: the script is atomic, and an
-- entry one run removed is no longer in `exp` for the next, so each due entry
-- expires exactly once.
--
-- KEYS[1]  meta     hash: epoch, seq, last_id
-- KEYS[2]  entries  hash: canonical CIDR -> JSON entry
-- KEYS[3]  exp      sorted set: CIDR scored by expires_at
-- KEYS[4]  events   stream
-- ARGV[1]  at most this many entries per call (the caller loops while it gets a full batch)
-- ARGV[2]  epoch to create if the dataset has none (only if meta was lost)
-- ARGV[3]  event retention in ms (XADD MINID ~)
-- ARGV[4]  event cap (XTRIM MAXLEN ~)
-- Returns  the number of entries expired (an entry is due when expires_at <= now).
--
-- Example: ARGV = {"500", "77aa...", "604800000", "1000000"} with
--   203.0.113.7/32 due at 1700086400123, now 1700086400200, seq 5
--   -> 1, and the event epoch 9f2c4e1a07b3d5c6 seq 6 op expire
--   cidr 203.0.113.7/32 expires_at 1700086400123 note "" actor reaper ver 1
assert(#KEYS == 4 and #ARGV == 4, 'allow_reap: expected 4 keys and 4 args')
local limit = tonumber(ARGV[1])
assert(limit and limit >= 1, 'allow_reap: the batch size must be >= 1')

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_s = string.format('%.0f', now)
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now_s, 'WITHSCORES', 'LIMIT', 0, limit)
if #due == 0 then
  return 0
end

local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[2]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end

-- Per entry only its event is written; the deletes, `seq` and the trims are
-- one call each per batch, which keeps a batch's Redis time well under 1 ms
-- (scripts/allowlist_call_cost.py).
local cidrs = {}
for i = 1, #due, 2 do
  cidrs[#cidrs + 1] = due[i]
end
redis.call('HDEL', KEYS[2], unpack(cidrs))
redis.call('ZREM', KEYS[3], unpack(cidrs))
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local id
for i = 1, #due, 2 do
  seq = seq + 1
  id = redis.call('XADD', KEYS[4], '*',
    'epoch', epoch, 'seq', string.format('%.0f', seq), 'op', 'expire', 'cidr', due[i],
    'expires_at', string.format('%.0f', tonumber(due[i + 1])),
    'note', '', 'actor', 'reaper', 'ver', '1')
end
redis.call('XTRIM', KEYS[4], 'MINID', '~', string.format('%.0f', now - tonumber(ARGV[3])))
redis.call('XTRIM', KEYS[4], 'MAXLEN', '~', ARGV[4])
redis.call('HSET', KEYS[1], 'seq', string.format('%.0f', seq), 'last_id', id)
return #due / 2
