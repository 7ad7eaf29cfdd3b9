-- list_upsert: the one write of a list entry (allowlist, denylist, overrides), as a
-- module: every upsert goes through `list_upsert.write`, whoever asks for it.
-- Concatenated before the script that calls it (src/allowlist/redis_store.rs):
-- lua/allow_upsert.lua (the admin API, the CLI, the admin page) and
-- lua/deny_ban.lua (a rule's ban). The entry, its expiry index, `seq` and
-- the stream event change together, in the calling script's one atomic call.
--
-- keys  {meta, entries, exp, events, lost}: all under the list's {hash tag}
--       (meta: hash epoch, seq, last_id; entries: hash canonical CIDR -> JSON
--       {expires_at, note, created_at, actor, ver}; exp: sorted set of CIDRs
--       by expires_at, permanent entries are not in it; events: stream;
--       lost: the witness of a lost dataset, see allow_recover.lua)
-- a     {cidr = canonical CIDR (validated by the caller), ttl = ms > 0 or 0
--       for a permanent entry, note, actor, epoch = the epoch to create if
--       the dataset has none yet, retention = event retention in ms (XADD
--       MINID ~), cap = about this many events kept (XTRIM MAXLEN ~; one XADD
--       cannot take both), deliberate = true: start a new, empty list if
--       Redis holds none (`--new-epoch`), exempt = true: an allowlist entry
--       never banned automatically (`"exempt":true` in its JSON and
--       `exempt 1` in its event; both absent otherwise), payload = JSON text
--       passed through as the entry's and the event's `payload` (an
--       override's limits; nil or "" for the IP lists: both absent)}
-- Returns {seq, expires_at, created_at, epoch}, all strings; expires_at "0" =
--       never. Or, when Redis holds no list, a node witnessed one (`lost`)
--       and `deliberate` is false: {"lost", node, epoch, seq, entries} of
--       that witness, and nothing is written. A write never silently starts
--       a fleet's list from nothing.
--       Times are ms since the Unix epoch from Redis TIME; created_at is the
--       time of this write.
local list_upsert = {}

-- Redis TIME in ms.
function list_upsert.now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The witness of a lost list, as a reply, when Redis holds none and a write
-- may not start one; nil otherwise.
function list_upsert.lost(keys, deliberate)
  if deliberate or redis.call('HEXISTS', keys[1], 'epoch') == 1 then return nil end
  if redis.call('EXISTS', keys[5]) == 0 then return nil end
  local w = redis.call('HMGET', keys[5], 'node', 'epoch', 'seq', 'entries')
  return {'lost', w[1] or '', w[2] or '', w[3] or '0', w[4] or '0'}
end

function list_upsert.write(keys, a)
  local now = list_upsert.now()
  local expires = 0
  if a.ttl > 0 then expires = now + a.ttl end
  -- %.0f: exact for integers below 2^53, unlike tostring (which may use exponents).
  local now_s, exp_s = string.format('%.0f', now), string.format('%.0f', expires)

  local epoch = redis.call('HGET', keys[1], 'epoch')
  if not epoch then
    local lost = list_upsert.lost(keys, a.deliberate)
    if lost then return lost end
    epoch = a.epoch
    -- `born`: how this epoch began (README, "When Redis loses its data").
    local born = 'write'
    if a.deliberate then born = 'new_epoch' end
    redis.call('HSET', keys[1], 'epoch', epoch, 'born', born)
    redis.call('DEL', keys[5])
  end

  local exempt = ''
  if a.exempt then exempt = ',"exempt":true' end
  local entry = '{"expires_at":' .. exp_s .. ',"note":' .. cjson.encode(a.note) ..
    ',"created_at":' .. now_s .. ',"actor":' .. cjson.encode(a.actor) .. exempt .. ',"ver":1'
  local payload = a.payload or ''
  if payload ~= '' then entry = entry .. ',"payload":' .. payload end
  entry = entry .. '}'
  redis.call('HSET', keys[2], a.cidr, entry)
  if expires > 0 then
    redis.call('ZADD', keys[3], exp_s, a.cidr)
  else
    redis.call('ZREM', keys[3], a.cidr)
  end

  local seq = tostring(redis.call('HINCRBY', keys[1], 'seq', 1))
  local min_id = string.format('%.0f', now - a.retention)
  local fields = {'epoch', epoch, 'seq', seq, 'op', 'upsert', 'cidr', a.cidr,
    'expires_at', exp_s, 'note', a.note, 'actor', a.actor, 'ver', '1', 'created_at', now_s}
  if a.exempt then
    table.insert(fields, 'exempt')
    table.insert(fields, '1')
  end
  if payload ~= '' then
    table.insert(fields, 'payload')
    table.insert(fields, payload)
  end
  local id = redis.call('XADD', keys[4], 'MINID', '~', min_id, '*', unpack(fields))
  redis.call('XTRIM', keys[4], 'MAXLEN', '~', a.cap)
  redis.call('HSET', keys[1], 'last_id', id)
  return {seq, exp_s, now_s, epoch}
end
