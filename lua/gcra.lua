-- gcra: generic cell rate algorithm. One key per limit holds the theoretical
-- arrival time (TAT, microseconds). Exact and smooth: a burst of `limit` is
-- allowed, then one unit every period / limit.
--
-- KEYS[i]  string of limit i holding the TAT. One {hash tag}.
-- ARGV[1]  cost (1 <= cost <= every limit); 0 peeks: computes the reply, writes nothing
-- ARGV[2i], ARGV[2i+1]  limit i: allowed units, period in ms
-- Returns  {allowed (1|0), retry_after_ms, remaining_1, reset_ms_1, ...}
--          A request passes when new_tat - now <= period, with
--          new_tat = max(tat, now) + cost * period / limit.
--          reset_ms: until the TAT reaches now (quota fully restored).
-- Numbers: the arithmetic is done relative to now (small values, exact to far
--          below a microsecond). The TAT is stored as a whole microsecond,
--          rounded up (never more permissive), so Redis keeps it as an integer
--          (no string allocation: ~88 bytes per key). The 1 us tolerance below
--          absorbs that rounding; it cannot admit a whole unit unless a unit is
--          shorter than 1 us (over a million per second).
--
-- Example: KEYS = {"tg:rl:{api|203.0.113.7}:gc:60000"}, ARGV = {1, 60, 60000}
--   60 calls at once pass; the 61st -> {0, 1000, 0, 60000}
local n = #KEYS
assert(n >= 1 and #ARGV == 1 + 2 * n, 'gcra: expected ARGV = cost, then limit and period_ms per key')
local cost = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local ahead, after = {}, {}
local allowed, retry = 1, 0
for i = 1, n do
  local limit, period = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1]) * 1000
  local interval = period / limit
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  local diff = math.max(tat - now, 0)
  local new_diff = diff + cost * interval
  ahead[i], after[i] = diff, new_diff
  if new_diff > period + 1 then
    allowed = 0
    local wait = math.ceil((new_diff - period) / 1000)
    if wait < 1 then wait = 1 end
    if wait > retry then retry = wait end
  end
end

local out = {allowed, retry}
for i = 1, n do
  local limit, period = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1]) * 1000
  local interval = period / limit
  local d = ahead[i]
  if allowed == 1 and cost > 0 then
    d = after[i]
    redis.call('SET', KEYS[i], string.format('%.0f', now + math.ceil(d)), 'PX', math.max(math.ceil(d / 1000), 1))
  end
  out[#out + 1] = math.max(math.floor((period - d) / interval + 1e-9), 0)
  out[#out + 1] = math.ceil(d / 1000)
end
return out
