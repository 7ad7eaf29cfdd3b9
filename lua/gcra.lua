-- gcra: generic cell rate algorithm (a token bucket told in times). One key
-- per limit holds the theoretical arrival time (TAT). Exact and smooth: a
-- burst of `burst` units is allowed, then one unit every period / limit.
--
-- KEYS[i]  string of limit i holding the TAT. One {hash tag}.
-- ARGV[1]  cost (1 <= cost); 0 peeks: computes the reply, writes nothing
-- ARGV[3i-1], ARGV[3i], ARGV[3i+1]  limit i: units per period, period in ms,
--          burst (bucket size; tollgate sends the limit when none is set)
-- Returns  {allowed (1|0), retry_after_ms, remaining_1, reset_ms_1, ...}
--          With interval = period / limit and tau = burst * interval, a
--          request passes when new_tat - now <= tau, where
--          new_tat = max(tat, now) + cost * interval.
--          remaining = floor((tau - (tat - now)) / interval), at most burst.
--          reset_ms: until the TAT reaches now (quota fully restored).
-- Numbers: exact integer arithmetic, no rounding that could add up while a
--          key is backlogged. interval = q + r / limit us (q, r integers), and
--          the TAT is kept as whole microseconds T plus a fraction f / limit
--          (0 <= f < limit): the value is "T f", or just "T" when f = 0 (then
--          Redis keeps an integer). Every product stays below 2^53 (exact in
--          Lua's doubles) while burst x period_us < 2^53 (e.g. 100 000/day).
--          A value written for another limit keeps T and clamps f (< 1 us).
--
-- Example: KEYS = {"tg:rl:{api|203.0.113.7}:gc:60000"}, ARGV = {1, 60, 60000, 60}
--   60 calls at once pass; the 61st -> {0, 1000, 0, 60000}
local n = #KEYS
assert(n >= 1 and #ARGV == 1 + 3 * n, 'gcra: expected ARGV = cost, then limit, period_ms and burst per key')
local cost = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

-- Per limit, times ahead of now as (whole us, fraction / limit).
local D, F, D2, F2 = {}, {}, {}, {}
local allowed, retry = 1, 0
for i = 1, n do
  local limit, period = tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i]) * 1000
  local burst = tonumber(ARGV[3 * i + 1])
  local q, r = math.floor(period / limit), period % limit
  local v = redis.call('GET', KEYS[i])
  local tat, f = 0, 0
  if v then
    local a, b = string.match(v, '^(%d+) ?(%d*)$')
    tat, f = tonumber(a) or 0, tonumber(b) or 0
    if f >= limit then f = limit - 1 end
  end
  local d, fr = 0, 0
  if tat >= now then d, fr = tat - now, f end
  local f2 = fr + cost * r
  local d2 = d + cost * q + math.floor(f2 / limit)
  f2 = f2 % limit
  D[i], F[i], D2[i], F2[i] = d, fr, d2, f2
  local tau_i = burst * q + math.floor(burst * r / limit)
  local tau_f = (burst * r) % limit
  if d2 > tau_i or (d2 == tau_i and f2 > tau_f) then
    allowed = 0
    local wait = d2 - tau_i
    if f2 > tau_f then wait = wait + 1 end
    wait = math.ceil(wait / 1000)
    if wait < 1 then wait = 1 end
    if wait > retry then retry = wait end
  end
end

local out = {allowed, retry}
for i = 1, n do
  local limit, period = tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i]) * 1000
  local burst = tonumber(ARGV[3 * i + 1])
  local q, r = math.floor(period / limit), period % limit
  local d, fr = D[i], F[i]
  if allowed == 1 and cost > 0 then
    d, fr = D2[i], F2[i]
    local v = string.format('%.0f', now + d)
    if fr > 0 then v = v .. ' ' .. string.format('%.0f', fr) end
    local ahead_us = d
    if fr > 0 then ahead_us = d + 1 end
    redis.call('SET', KEYS[i], v, 'PX', math.max(math.ceil(ahead_us / 1000), 1))
  end
  -- (tau - ahead) in 1/limit us; an interval is `period` of those units.
  local tau_i = burst * q + math.floor(burst * r / limit)
  local tau_f = (burst * r) % limit
  local x = (tau_i - d) * limit + (tau_f - fr)
  local rem = 0
  if x > 0 then
    rem = math.floor(x / period)
    if rem * period > x then rem = rem - 1 end
  end
  out[#out + 1] = rem
  local ahead_us = d
  if fr > 0 then ahead_us = d + 1 end
  out[#out + 1] = math.ceil(ahead_us / 1000)
end
return out
