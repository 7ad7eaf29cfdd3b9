-- activity_track: one replica's second of one tracked rule in one hour.
-- The path bound (`track_paths`) holds across every replica because it is
-- decided here, in Redis, against the hour's set of admitted paths: a path
-- already in the set counts under itself; a new one is admitted while the
-- set holds fewer than `track_paths`; every other path counts under "other".
-- A replica alone cannot know which paths the others admitted.
--
-- KEYS[1]  set: the paths admitted this hour (at most ARGV[1] members)
-- KEYS[2]  hash: path (or "other") -> requests this hour
-- KEYS[3]  HyperLogLog: the rule's clients this hour
-- KEYS[4]  HyperLogLog: the clients of "other" this hour
-- KEYS[4+i] HyperLogLog: the clients of path i this hour (its bounded key)
--          All keys share the rule's {hash tag}: one Cluster slot.
-- ARGV[1]  track_paths: most paths admitted per hour
-- ARGV[2]  ttl in seconds (retention): set on every key written
-- ARGV[3]  n: number of paths in this call
-- then, per path i: path, requests, c (number of clients), the c clients
--          ("other" is never admitted: a replica already folded it locally).
-- Returns  the number of paths of this call counted under "other".
--
-- Example: KEYS = {"tg:act:{tg:act:r:pages}:493000:paths", "...:req", "...:clients",
--                  "...:u:other", "...:u:/a"}
--          ARGV = {100, 2592000, 1, "/a", 3, 2, "ip:10.0.0.1", "ip:10.0.0.2"}
--   -> 0; HINCRBY req /a 3; PFADD u:/a and clients with both addresses.
assert(#ARGV >= 3, 'activity_track: expected ARGV = track_paths, ttl, n, then per path: path, requests, c, clients')
local limit = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
assert(#KEYS == 4 + n, 'activity_track: expected KEYS = paths, req, clients, other, then one per path')

-- PFADD in chunks: Lua's unpack() has a small stack limit.
local function pfadd(key, list, from, to)
  local i = from
  while i <= to do
    local j = math.min(i + 999, to)
    redis.call('PFADD', key, unpack(list, i, j))
    i = j + 1
  end
end

local folded = 0
local at = 4
for i = 1, n do
  local path = ARGV[at]
  local requests = tonumber(ARGV[at + 1])
  local c = tonumber(ARGV[at + 2])
  local first, last = at + 3, at + 2 + c
  at = last + 1
  local hll = KEYS[4 + i]
  local admitted = false
  if path ~= 'other' then
    if redis.call('SISMEMBER', KEYS[1], path) == 1 then
      admitted = true
    elseif redis.call('SCARD', KEYS[1]) < limit then
      redis.call('SADD', KEYS[1], path)
      admitted = true
    end
  end
  if not admitted then
    if path ~= 'other' then folded = folded + 1 end
    path = 'other'
    hll = KEYS[4]
  end
  redis.call('HINCRBY', KEYS[2], path, requests)
  if c > 0 then
    pfadd(hll, ARGV, first, last)
    pfadd(KEYS[3], ARGV, first, last)
    redis.call('EXPIRE', hll, ttl)
  end
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('EXPIRE', KEYS[3], ttl)
return folded
