-- allow_snapshot: one consistent, read-only view of the allowlist: every
-- entry, the dataset's epoch and seq, and the stream id to tail from, plus
-- Redis TIME so the reader can measure its clock offset.
-- A follower loads this, then XREAD BLOCKs on `events` from last_id.
--
-- KEYS[1]  meta     hash: epoch, seq, last_id
-- KEYS[2]  entries  hash: canonical CIDR -> JSON {expires_at, note, created_at, actor, ver}
-- ARGV     none
-- Returns  {epoch, seq, last_id, now_ms, cidr_1, json_1, cidr_2, json_2, ...}, all
--          strings. An empty dataset (never written) is {"", "0", "0-0", now_ms}.
--          Entries whose expires_at has passed but that the reaper has not
--          removed yet are included; the reader filters them by time.
--
-- Example: -> {"9f2c4e1a07b3d5c6", "5", "1700000000123-0", "1700000000500",
--              "203.0.113.7/32", '{"expires_at":1700086400123,"note":"login alice",...}'}
assert(#KEYS == 2 and #ARGV == 0, 'allow_snapshot: expected 2 keys and no args')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'last_id')
local out = {meta[1] or '', meta[2] or '0', meta[3] or '0-0', string.format('%.0f', now)}
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all do
  out[#out + 1] = all[i]
end
return out
