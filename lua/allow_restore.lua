-- allow_restore: switch the allowlist to the dataset staged by
-- allow_restore_stage.lua, as a new epoch, in one atomic step: the entries,
-- the expiry index, meta (epoch, seq 1, last_id) and one `restore` event move
-- together. Every follower sees the new epoch (in the event, or in meta at its
-- next look) and loads a fresh snapshot. O(1) at any size: entries that had
-- expired were never staged (allow_restore_stage.lua), the old list is freed
-- in the background (UNLINK), and an entry that expired between its staging
-- and this call is left to the reaper, which expires it in its bounded
-- batches with an `expire` event like any other (nodes stop matching it at
-- its expires_at meanwhile). Writes made to the old epoch while the chunks
-- were staged are replaced too: a restore sets the whole list.
--
-- The old events stay in the stream (trimmed by age as usual): a follower
-- still on the old epoch reads them, then the restore event, then resyncs.
--
-- KEYS[1]  meta     hash: epoch, seq, last_id
-- KEYS[2]  entries  hash: canonical CIDR -> JSON entry
-- KEYS[3]  exp      sorted set: CIDR scored by expires_at
-- KEYS[4]  events   stream
-- KEYS[5]  staged entries (allow_restore_stage.lua's KEYS[1])
-- KEYS[6]  staged exp     (allow_restore_stage.lua's KEYS[2])
-- KEYS[7]  lost     hash: the witness of a lost dataset; a restore ends that state
-- ARGV[1]  the new epoch (random, from the caller)
-- ARGV[2]  how many entries the caller staged: anything else (a staged key
--          expired, a chunk was lost) is an error and changes nothing
-- ARGV[3]  actor
-- ARGV[4]  event retention in ms (XADD MINID ~)
-- ARGV[5]  event cap (XTRIM MAXLEN ~)
-- ARGV[6]  how the epoch is born, kept in meta.born: "restore" (an operator's
--          file), "clear" (an intended wipe: nothing staged) or "fleet" (a
--          node put back the table Redis lost)
-- ARGV[7], ARGV[8], ARGV[9]  where it came from: node id, old epoch, old seq
--          ("" "" "" for an operator's restore or clear); kept in meta as
--          origin_node, origin_epoch, origin_seq and in the event
-- ARGV[10] what Redis must still hold (a fleet restore never replaces an
--          epoch an operator made meanwhile): "any" (an operator's restore or
--          clear), "absent" (no meta: the list was lost), or "write" (meta
--          holds epoch ARGV[11] at seq ARGV[12], born of a plain write into a
--          Redis that had lost the list: the fleet merges it with its table)
-- ARGV[11], ARGV[12]  with "write": that epoch and seq ("" "" otherwise)
-- Returns  {epoch, seq, entries}, all strings: seq is "1" (the restore
--          event is the new epoch's first). {"", "0", "0"} when Redis no
--          longer holds what ARGV[10] expects: the staged keys are dropped,
--          nothing changed.
--
-- Example: ARGV = {"5b0e2f6a9c1d3e47", "2", "cli", "604800000", "1000000"}
--   with 203.0.113.7/32 and 198.51.100.0/24 staged
--   -> {"5b0e2f6a9c1d3e47", "1", "2"} and the event
--   epoch 5b0e2f6a9c1d3e47 seq 1 op restore cidr "" expires_at 0
--   note "restored 2 entries" actor cli ver 1 born restore
--   (ARGV continuing {"restore", "", "", "", "any", "", ""})
--   (a fleet restore adds origin_node, origin_epoch, origin_seq)
assert(#KEYS == 7 and #ARGV == 12, 'allow_restore: expected 7 keys and 12 args')
local born, over = ARGV[6], ARGV[10]
assert(born == 'restore' or born == 'clear' or born == 'fleet',
  'allow_restore: born must be restore, clear or fleet')
assert(over == 'any' or over == 'absent' or over == 'write',
  'allow_restore: ARGV[10] must be any, absent or write')
local still = true
if over == 'absent' then
  still = redis.call('EXISTS', KEYS[1]) == 0
elseif over == 'write' then
  local m = redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'born')
  still = m[1] == ARGV[11] and m[2] == ARGV[12] and m[3] == 'write'
end
if not still then
  redis.call('DEL', KEYS[5], KEYS[6])
  return {'', '0', '0'}
end
local expected = tonumber(ARGV[2])
assert(expected and expected >= 0, 'allow_restore: the staged count must be a number >= 0')
local staged = redis.call('HLEN', KEYS[5])
if staged ~= expected then
  return redis.error_reply('allow_restore: ' .. staged .. ' entries staged, expected ' ..
    expected .. ' (a staged key expired?); nothing changed')
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- UNLINK: a large old list is freed in the background, not inside this script.
redis.call('UNLINK', KEYS[2], KEYS[3])
if redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('RENAME', KEYS[5], KEYS[2])
  redis.call('PERSIST', KEYS[2])
end
if redis.call('EXISTS', KEYS[6]) == 1 then
  redis.call('RENAME', KEYS[6], KEYS[3])
  redis.call('PERSIST', KEYS[3])
end

local epoch = ARGV[1]
local kept = tostring(staged)
local min_id = string.format('%.0f', now - tonumber(ARGV[4]))
local note = 'restored ' .. kept .. ' entries'
if born == 'clear' then
  note = 'cleared the allowlist'
elseif born == 'fleet' then
  note = note .. ' from node ' .. ARGV[7] .. ' (epoch ' .. ARGV[8] .. ', seq ' .. ARGV[9] ..
    ') after Redis lost them'
end
local fields = {'epoch', epoch, 'seq', '1', 'op', 'restore', 'cidr', '', 'expires_at', '0',
  'note', note, 'actor', ARGV[3], 'ver', '1', 'born', born}
local origin = {}
if ARGV[7] ~= '' then
  origin = {'origin_node', ARGV[7], 'origin_epoch', ARGV[8], 'origin_seq', ARGV[9]}
  for _, v in ipairs(origin) do fields[#fields + 1] = v end
end
local id = redis.call('XADD', KEYS[4], 'MINID', '~', min_id, '*', unpack(fields))
redis.call('XTRIM', KEYS[4], 'MAXLEN', '~', ARGV[5])
redis.call('DEL', KEYS[1], KEYS[7])
redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', '1', 'last_id', id, 'born', born,
  'born_at', string.format('%.0f', now), unpack(origin))
return {epoch, '1', kept}
