-- lease_gcra: a run of a gcra rule's next emissions, reserved at once by a
-- replica that then spends them locally (a lease; see src/limiter/lease.rs).
-- Run after the gcra module (concatenated in limiter/redis_store.rs): it
-- advances the very TAT gcra advances, so each emission belongs to one
-- replica only. The reply tells where the run starts: the replica spends
-- emission k only while it lies ahead of now (it starts at first + k x
-- interval, first = now + ahead_us), never one already in the past, so every
-- unit admitted has its own interval of the timeline starting no earlier
-- than its admission and ending within tau of it, as a plain gcra unit does:
-- the bound (burst + t x rate in any interval t) is unchanged.
--
-- KEYS[1]  the TAT (one limit: tollgate refuses a gcra lease with several)
-- ARGV     cost (the asking request's units: the least slice), limit,
--          period_ms, burst, divisor d, cap (0: none)
-- Returns  {granted, retry_after_ms, remaining, reset_ms, ahead_us}: granted 0
--          is a denial (nothing written); remaining counts the run as spent;
--          ahead_us: the run's first emission starts this long after the
--          script's TIME (whole us, rounded down: never later than it is).
--          The run is at most floor(room / d) emissions (room = remaining
--          before the call), at least cost, and at most cap.
--
-- Example: KEYS = {"tg:rl:{api|k1}:gc:1000"}, ARGV = {1, 2000, 1000, 2000, 4, 0}
--   full bucket -> {500, 0, 1500, 250, 0}; the next -> {375, 0, 1125, 438, 250000}
local n = #KEYS
assert(n == 1 and #ARGV == 6, 'expected one key and ARGV = cost, limit, period_ms, burst, divisor, cap')
local cost = tonumber(ARGV[1])
local a = {tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])}
local d, cap = tonumber(ARGV[5]), tonumber(ARGV[6])
assert(cost >= 1 and d >= 1 and cap >= 0, 'expected cost >= 1, divisor >= 1, cap >= 0')
local t = redis.call('TIME')

local st = gcra.check(KEYS, a, cost, t)
local granted = 0
if st.allowed then
  local before = {}
  gcra.reply(a, st, cost, false, before)
  granted = math.max(math.floor(before[1] / d), cost)
  if cap > 0 then granted = math.max(math.min(granted, cap), cost) end
  -- room >= granted: the run passes as one request of `granted` units.
  st = gcra.check(KEYS, a, granted, t)
  gcra.charge(KEYS, a, granted, st)
end
local out = {granted, st.retry}
gcra.reply(a, st, granted, granted > 0, out)
out[#out + 1] = st.D[1]
return out
