-- allow_snapshot_begin: where a paged snapshot starts. One atomic, O(1) read
-- of the dataset's epoch, seq and stream position, Redis TIME (the reader
-- measures its clock offset) and how many entries there are. The reader then
-- pages `entries` with HSCAN and tails `events` from last_id: every change
-- made while it pages has an event after this position (see README, "IP
-- allowlist", why the result equals a consistent snapshot).
--
-- KEYS[1]  meta     hash: epoch, seq, last_id
-- KEYS[2]  entries  hash: canonical CIDR -> JSON {expires_at, note, created_at, actor, ver}
-- ARGV     none
-- Returns  {epoch, seq, last_id, now_ms, entries}, all strings. An empty
--          dataset (never written) is {"", "0", "0-0", now_ms, "0"}.
--
-- Example: -> {"9f2c4e1a07b3d5c6", "5", "1700000000123-0", "1700000000500", "1000000"}
assert(#KEYS == 2 and #ARGV == 0, 'allow_snapshot_begin: expected 2 keys and no args')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'last_id')
return {meta[1] or '', meta[2] or '0', meta[3] or '0-0', string.format('%.0f', now),
  tostring(redis.call('HLEN', KEYS[2]))}
