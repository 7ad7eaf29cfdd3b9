-- fleet_beat: one replica's heartbeat in the fleet registry, and the fleet as
-- it stands. Every replica calls it every `fleet::BEAT_EVERY` (2 s); a replica
-- whose last beat is older than the TTL (10 s) is removed by whichever beat
-- comes next, so the registry holds the live replicas only, on Redis time
-- (replica clocks never compared). A replica that stops cleanly leaves at once
-- (ARGV[4] = "leave"). Sent with EVAL (fleet/beat.rs says why).
--
-- KEYS[1]  seen  sorted set: replica id -> last beat (ms, Redis time)
-- KEYS[2]  info  hash: replica id -> its JSON description
-- ARGV[1]  this replica's id
-- ARGV[2]  its JSON description (version, config hash, uptime, listen address)
-- ARGV[3]  TTL in ms (>= 1): a replica not seen for longer is gone
-- ARGV[4]  "beat" or "leave"
-- Returns  {now_ms, id1, last_seen_ms1, json1, id2, ...}: Redis's time and
--          every live replica (this one included after a beat), oldest beat
--          first. Strings throughout (scores as Redis prints them).
--
-- Example: ARGV = {"a-1f2e3d", "{...}", "10000", "beat"}, with "b-99" last
--   seen 4 s ago and "c-07" 12 s ago -> "c-07" is removed, and the reply is
--   {"1700000004000", "b-99", "1700000000000", "{...}", "a-1f2e3d",
--    "1700000004000", "{...}"}.
assert(#KEYS == 2 and #ARGV == 4, 'fleet_beat: expected 2 keys and 4 args')
local id = ARGV[1]
local ttl = tonumber(ARGV[3])
assert(id ~= '', 'fleet_beat: the replica id is empty')
assert(ttl and ttl >= 1, 'fleet_beat: the TTL must be >= 1 ms')
assert(ARGV[4] == 'beat' or ARGV[4] == 'leave', 'fleet_beat: ARGV[4] must be beat or leave')

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

if ARGV[4] == 'leave' then
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
else
  redis.call('ZADD', KEYS[1], now, id)
  redis.call('HSET', KEYS[2], id, ARGV[2])
end

-- Replicas gone silent: their last beat is older than the TTL.
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - ttl))
for _, dead in ipairs(gone) do
  redis.call('ZREM', KEYS[1], dead)
  redis.call('HDEL', KEYS[2], dead)
end
-- A fleet that stopped altogether leaves nothing behind.
redis.call('PEXPIRE', KEYS[1], 2 * ttl)
redis.call('PEXPIRE', KEYS[2], 2 * ttl)

local reply = { tostring(now) }
local live = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #live, 2 do
  local desc = redis.call('HGET', KEYS[2], live[i])
  reply[#reply + 1] = live[i]
  reply[#reply + 1] = live[i + 1]
  reply[#reply + 1] = desc or '{}'
end
return reply
