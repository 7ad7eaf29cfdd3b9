-- allow_restore_stage: stage one chunk of a restore. A restore replaces the
-- whole allowlist with a new epoch; a large list is staged in chunks into two
-- temporary keys (same hash tag as the live keys, so one slot), then
-- allow_restore.lua swaps them in atomically. Nothing live changes here, so a
-- restore that dies half-way leaves the allowlist as it was; its staged keys
-- expire after ARGV[1] ms.
--
-- KEYS[1]  staged entries  hash: canonical CIDR -> JSON {expires_at, note, created_at, actor, ver}
-- KEYS[2]  staged exp      sorted set: CIDR scored by expires_at (permanent entries are not in it)
--          Both are <prefix>:{<prefix>:allow}:restore:<token>:entries|exp, one token per restore.
-- ARGV[1]  how long the staged keys live, ms (> 0)
-- ARGV[2], ARGV[3], ARGV[4]  cidr (canonical), entry JSON, expires_at ("0" = never);
--          repeated: one triple per entry.
-- Returns  {staged so far (HLEN of KEYS[1]), entries of this chunk skipped
--          because they had expired by Redis TIME}. Skipping them here keeps
--          allow_restore.lua O(1) whatever the file holds (an old export
--          of a million expired entries would otherwise be deleted one by
--          one inside that single call).
--
-- Example: ARGV = {"3600000", "203.0.113.7/32",
--                  '{"expires_at":1700086400123,"note":"alice","created_at":1700000000123,"actor":"cli","ver":1}',
--                  "1700086400123"}
--   on a fresh token at TIME 1700000000 -> {1, 0}; at TIME 1800000000 -> {0, 1}
assert(#KEYS == 2, 'allow_restore_stage: expected 2 keys')
assert(#ARGV >= 1 and (#ARGV - 1) % 3 == 0,
  'allow_restore_stage: expected a ttl and (cidr, json, expires_at) triples')
local ttl = tonumber(ARGV[1])
assert(ttl and ttl > 0, 'allow_restore_stage: the ttl must be > 0')

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- One variadic HSET, ZADD and ZREM for the whole chunk: a redis.call per
-- entry cost about twice the Redis time.
local skipped = 0
local hset, zadd, zrem = {}, {}, {}
for i = 2, #ARGV, 3 do
  local cidr, entry, exp = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if exp ~= '0' and tonumber(exp) <= now then
    skipped = skipped + 1
  else
    hset[#hset + 1] = cidr
    hset[#hset + 1] = entry
    if exp ~= '0' then
      zadd[#zadd + 1] = exp
      zadd[#zadd + 1] = cidr
    else
      zrem[#zrem + 1] = cidr
    end
  end
end
if #hset > 0 then
  redis.call('HSET', KEYS[1], unpack(hset))
end
if #zadd > 0 then
  redis.call('ZADD', KEYS[2], unpack(zadd))
end
if #zrem > 0 then
  redis.call('ZREM', KEYS[2], unpack(zrem))
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return {redis.call('HLEN', KEYS[1]), skipped}
