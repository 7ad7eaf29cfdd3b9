-- allow_snapshot_take: one snapshot page from the fleet's budget. Every node
-- calls it before each HSCAN page of a snapshot, so all the nodes resyncing at
-- once (a restore, an epoch change, a fleet restart) together ask Redis for
-- at most `allowlist.snapshot_fleet_pages_per_second` pages, however many
-- they are. A fixed window: the first take of a window starts it (INCR, and
-- PEXPIRE on the first), the window's first `pages` takes are granted, later
-- ones are told how long the window still runs. A denied take still counts
-- (the key is a counter, nothing more); it changes nothing but the wait.
--
-- KEYS[1]  snapshot_budget  string: pages taken in the current window (expires with it)
-- ARGV[1]  pages granted per window (>= 1)
-- ARGV[2]  window length in ms (>= 1)
-- Returns  0: take the page now; else the ms until the window ends (>= 1):
--          ask again then.
--
-- Example: ARGV = {"40", "100"} (400 pages a second), 40 pages already taken
--   in a window that started 30 ms ago -> 70; once it has expired -> 0.
assert(#KEYS == 1 and #ARGV == 2, 'allow_snapshot_take: expected 1 key and 2 args')
local pages = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
assert(pages and pages >= 1, 'allow_snapshot_take: pages per window must be >= 1')
assert(window and window >= 1, 'allow_snapshot_take: the window must be >= 1 ms')

local taken = redis.call('INCR', KEYS[1])
if taken == 1 then
  redis.call('PEXPIRE', KEYS[1], window)
end
if taken <= pages then
  return 0
end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  -- A counter without expiry (written by hand): never let it deny forever.
  redis.call('PEXPIRE', KEYS[1], window)
  left = window
end
return math.max(left, 1)
