-- allow_recover: the election of the one node that puts back a list Redis
-- lost (restarted without persistence, flushed, failed over to an empty
-- replica). Generic in its keys: any list on the allowlist's machinery
-- (meta + a restore path) uses it with its own three keys.
--
-- "Lost" is told apart from "wiped" by `meta` alone: every write, restore and
-- intended wipe (`allow clear`: a restore of nothing) leaves `meta` holding an
-- epoch, so an absent `meta` while a node holds a table of an epoch means Redis
-- lost the data. The node that finds it so claims: it leaves a witness
-- (`lost`: which node saw which epoch and seq, with how many entries), which
-- makes every write that would start an epoch refuse (allow_upsert.lua), and
-- takes the lock if free. Only the lock's holder stages its table; the final
-- swap (allow_restore.lua with ARGV[10] = "1") runs only while `meta` is still
-- absent, so two nodes never both restore and an operator's restore or
-- `--new-epoch` made meanwhile wins.
--
-- KEYS[1]  meta          hash: epoch, seq, last_id, ...
-- KEYS[2]  lost          hash: node, epoch, seq, entries, at
-- KEYS[3]  restore_lock  string: the holder's token (expires after ARGV[3] ms)
-- ARGV[1]  "claim" | "extend" | "release"
-- ARGV[2]  the caller's token (random per attempt)
-- ARGV[3]  lock ttl, ms (claim and extend)
-- ARGV[4], ARGV[5], ARGV[6], ARGV[7]  claim only: node id, its epoch, its seq,
--          its live entries (the witness, written if none is there yet)
-- ARGV[8]  claim only: "" when meta must be absent (the list was lost); else
--          the epoch meta must hold, born of a plain write (`born = write`):
--          a write created it in a Redis that had lost the list before any
--          node noticed, so it is merged with the fleet's table (no witness)
-- Returns  claim: {"present"} (meta exists: nothing lost, nothing written),
--          {"won"} (the caller holds the lock), or {"held", pttl} (another
--          node restores; ask again later);
--          extend: {"ok"} or {"lost"} (the lock expired or is another's);
--          release: {"ok"}.
--
-- Example: ARGV = {"claim", "a1b2", "10000", "web-3", "9f2c4e1a07b3d5c6", "42", "1200", ""}
--   on an empty Redis -> {"won"}, and lost = {node web-3, epoch 9f2c..., seq 42,
--   entries 1200, at <ms>}; a second node's claim then -> {"held", "9987"}.
assert(#KEYS == 3, 'allow_recover: expected 3 keys')
local op, token = ARGV[1], ARGV[2]
if op == 'claim' then
  assert(#ARGV == 8, 'allow_recover: claim takes 8 args')
  if ARGV[8] ~= '' then
    local m = redis.call('HMGET', KEYS[1], 'epoch', 'born')
    if m[1] ~= ARGV[8] or m[2] ~= 'write' then
      return {'present'}
    end
  elseif redis.call('EXISTS', KEYS[1]) == 1 then
    return {'present'}
  elseif redis.call('EXISTS', KEYS[2]) == 0 then
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    redis.call('HSET', KEYS[2], 'node', ARGV[4], 'epoch', ARGV[5], 'seq', ARGV[6],
      'entries', ARGV[7], 'at', string.format('%.0f', now))
  end
  if redis.call('SET', KEYS[3], token, 'NX', 'PX', ARGV[3]) then
    return {'won'}
  end
  return {'held', tostring(redis.call('PTTL', KEYS[3]))}
elseif op == 'extend' then
  assert(#ARGV == 3, 'allow_recover: extend takes 3 args')
  if redis.call('GET', KEYS[3]) == token then
    redis.call('PEXPIRE', KEYS[3], ARGV[3])
    return {'ok'}
  end
  return {'lost'}
elseif op == 'release' then
  if redis.call('GET', KEYS[3]) == token then
    redis.call('DEL', KEYS[3])
  end
  return {'ok'}
end
return redis.error_reply('allow_recover: unknown op ' .. tostring(op))
