-- lease_fixed_window: a slice of a fixed_window rule's remaining quota, taken
-- at once by a replica that then answers from it locally (a lease; see
-- src/limiter/lease.rs). Run after the fixed_window module (concatenated in
-- limiter/redis_store.rs): it charges the very counters fixed_window charges,
-- so every unit handed out is counted in Redis first and a window never
-- admits more than its limit, however the slices are spent.
--
-- KEYS[i]  counter of limit i (fixed_window's keys). One {hash tag}.
-- ARGV[1]  cost: the units the asking request needs (the least slice)
-- ARGV[2..] per limit: allowed units, period in ms (2 numbers a limit)
-- ARGV[n-1] divisor d: the slice is floor(room / d), at least cost, where
--          room is the least of the limits' remaining units (tollgate sends
--          2 x the replicas it sees, so no replica takes more than half of
--          its share of what is left, and the last units of a window go one by one)
-- ARGV[n]  cap: at most this many units (0: no cap; `lease = "auto"`)
-- Returns  {granted, retry_after_ms, remaining_1, reset_ms_1, ...}: granted 0
--          is a denial (nothing written; retry_after_ms as fixed_window's);
--          remaining counts the slice as spent, reset_ms is the window's end
--          (the slice expires there: unspent units are not given back).
--
-- Example: KEYS = {"tg:rl:{api|k1}:fw:1000"}, ARGV = {1, 2000, 1000, 4, 0}
--   fresh window -> {500, 0, 1500, 1000}; then {375, 0, 1125, 998}; ...;
--   with 1 unit left -> {1, 0, 0, 412}; with none -> {0, 412, 0, 412}
local n = #KEYS
assert(n >= 1 and #ARGV == 3 + 2 * n, 'expected ARGV = cost, then limit and period_ms per key, then divisor and cap')
local cost = tonumber(ARGV[1])
local a = {}
for i = 2, 1 + 2 * n do a[i - 1] = tonumber(ARGV[i]) end
local d, cap = tonumber(ARGV[2 + 2 * n]), tonumber(ARGV[3 + 2 * n])
assert(cost >= 1 and d >= 1 and cap >= 0, 'expected cost >= 1, divisor >= 1, cap >= 0')

local st = fixed_window.check(KEYS, a, cost, nil)
local granted = 0
if st.allowed then
  local room = a[1] - st.counts[1]
  for i = 2, n do room = math.min(room, a[2 * i - 1] - st.counts[i]) end
  granted = math.max(math.floor(room / d), cost)
  if cap > 0 then granted = math.max(math.min(granted, cap), cost) end
  fixed_window.charge(KEYS, a, granted, st)
end
local out = {granted, st.retry}
fixed_window.reply(a, st, granted, granted > 0, out)
return out
