-- sliding_window: two fixed windows, the previous one weighted by how much of
-- it still overlaps the sliding period. O(1) memory: one hash per limit.
--
-- KEYS[i]  hash of limit i: w = current window index (floor(now_ms / period)),
--          c = units in window w, p = units in window w - 1. One {hash tag}.
-- ARGV[1]  cost (1 <= cost <= every limit); 0 peeks: computes the reply, writes nothing
-- ARGV[2i], ARGV[2i+1]  limit i: allowed units, period in ms
-- Returns  {allowed (1|0), retry_after_ms, remaining_1, reset_ms_1, ...}
--          estimate = p * (period - elapsed) / period + c; a request passes when
--          estimate + cost <= limit for every limit (checked first, charged only
--          if all pass). reset_ms is the time left in the current window.
-- Error:   within one fixed window at most `limit` pass (c <= limit). Over an
--          arbitrary sliding period the estimate assumes the previous window's
--          requests were spread evenly; if they were all at its very end, up to
--          p * elapsed / period more can pass (at worst just under 2 x limit).
--
-- Example: KEYS = {"tg:rl:{api|203.0.113.7}:sw:60000"}, ARGV = {1, 10, 60000}
--   p = 10, c = 0, 30 s into the window: estimate 5 -> {1, 0, 4, 30000}
local n = #KEYS
assert(n >= 1 and #ARGV == 1 + 2 * n, 'sliding_window: expected ARGV = cost, then limit and period_ms per key')
local cost = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local wins, cs, ps, ests = {}, {}, {}, {}
local allowed, retry = 1, 0
for i = 1, n do
  local limit, period = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local win = math.floor(now / period)
  local elapsed = now - win * period
  local st = redis.call('HMGET', KEYS[i], 'w', 'c', 'p')
  local w, c, p = tonumber(st[1]), tonumber(st[2]) or 0, tonumber(st[3]) or 0
  if w == nil then
    c, p = 0, 0
  elseif w == win - 1 then
    p, c = c, 0
  elseif w ~= win then
    c, p = 0, 0
  end
  local est = p * (period - elapsed) / period + c
  wins[i], cs[i], ps[i], ests[i] = win, c, p, est
  -- 1e-9 absorbs float rounding of the weight; it can never admit a whole unit.
  if est + cost > limit + 1e-9 then
    allowed = 0
    local wait
    if c + cost <= limit and p > 0 then
      -- This window will do: wait until p's weight has decayed enough.
      wait = math.ceil(period * (1 - (limit - c - cost) / p)) - elapsed
    else
      -- Next window: this window's c becomes the weighted one.
      wait = period - elapsed
      if c > 0 then
        wait = wait + math.max(0, math.ceil(period * (1 - (limit - cost) / c)))
      end
    end
    if wait < 1 then wait = 1 end
    if wait > retry then retry = wait end
  end
end

if allowed == 1 and cost > 0 then
  for i = 1, n do
    redis.call('HSET', KEYS[i], 'w', wins[i], 'c', cs[i] + cost, 'p', ps[i])
    -- Two periods: the window itself, then its time as the weighted previous one.
    redis.call('PEXPIRE', KEYS[i], 2 * tonumber(ARGV[2 * i + 1]))
  end
end

local out = {allowed, retry}
for i = 1, n do
  local limit, period = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local used = ests[i]
  if allowed == 1 then used = used + cost end
  out[#out + 1] = math.max(math.floor(limit - used + 1e-9), 0)
  out[#out + 1] = (wins[i] + 1) * period - now
end
return out
