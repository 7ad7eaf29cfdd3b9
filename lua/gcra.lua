-- gcra: generic cell rate algorithm (a token bucket told in times). One key
-- per limit holds the theoretical arrival time (TAT). Exact and smooth: a
-- burst of `burst` units is allowed, then one unit every period / limit.
-- An algorithm module: run by `one_rule.lua` (one rule a call) or
-- `all_rules.lua` (a request's rules together); see either for ARGV.
--
-- KEYS[i]  string of limit i holding the TAT. One {hash tag}.
-- a        per limit: units per period, period in ms, burst (bucket size;
--          tollgate sends the limit when none is set): 3 numbers a limit
-- cost     units this request takes (1 <= cost); 0 peeks
-- Reply    per limit: remaining, reset_ms. With interval = period / limit and
--          tau = burst * interval, a request passes when new_tat - now <= tau,
--          where new_tat = max(tat, now) + cost * interval.
--          remaining = floor((tau - (tat - now)) / interval), at most burst.
--          reset_ms: until the TAT reaches now (quota fully restored).
-- Numbers: exact integer arithmetic, no rounding that could add up while a
--          key is backlogged. interval = q + r / limit us (q, r integers), and
--          the TAT is kept as whole microseconds T plus a fraction f / limit
--          (0 <= f < limit): the value is "T f", or just "T" when f = 0 (then
--          Redis keeps an integer). Every product stays below 2^53 (exact in
--          Lua's doubles) while burst x period_us < 2^53 (e.g. 100 000/day):
--          tollgate refuses a rule, an ad-hoc limit or an override past that.
--          A value written for another limit keeps T and clamps f (< 1 us).
--
-- Example: KEYS = {"tg:rl:{api|203.0.113.7}:gc:60000"}, ARGV = {1, 60, 60000, 60}
--   60 calls at once pass; the 61st -> {0, 1000, 0, 60000}
local gcra = {per_limit = 3, args = 'limit, period_ms and burst'}

-- Limit i's numbers: limit, period (us), burst, and interval = q + r / limit.
local function gcra_limit(a, i)
  local limit, period = a[3 * i - 2], a[3 * i - 1] * 1000
  local burst = a[3 * i]
  return limit, period, burst, math.floor(period / limit), period % limit
end

function gcra.check(keys, a, cost, t)
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  -- Per limit, times ahead of now as (whole us, fraction / limit).
  local st = {allowed = true, retry = 0, now = now, D = {}, F = {}, D2 = {}, F2 = {}}
  for i = 1, #keys do
    local limit, _, burst, q, r = gcra_limit(a, i)
    local v = redis.call('GET', keys[i])
    local tat, f = 0, 0
    if v then
      local x, y = string.match(v, '^(%d+) ?(%d*)$')
      tat, f = tonumber(x) or 0, tonumber(y) or 0
      if f >= limit then f = limit - 1 end
    end
    local d, fr = 0, 0
    if tat >= now then d, fr = tat - now, f end
    local f2 = fr + cost * r
    local d2 = d + cost * q + math.floor(f2 / limit)
    f2 = f2 % limit
    st.D[i], st.F[i], st.D2[i], st.F2[i] = d, fr, d2, f2
    local tau_i = burst * q + math.floor(burst * r / limit)
    local tau_f = (burst * r) % limit
    if d2 > tau_i or (d2 == tau_i and f2 > tau_f) then
      st.allowed = false
      local wait = d2 - tau_i
      if f2 > tau_f then wait = wait + 1 end
      wait = math.ceil(wait / 1000)
      if wait < 1 then wait = 1 end
      if wait > st.retry then st.retry = wait end
    end
  end
  return st
end

function gcra.charge(keys, _, _, st)
  for i = 1, #keys do
    local d, fr = st.D2[i], st.F2[i]
    local v = string.format('%.0f', st.now + d)
    if fr > 0 then v = v .. ' ' .. string.format('%.0f', fr) end
    local ahead_us = d
    if fr > 0 then ahead_us = d + 1 end
    redis.call('SET', keys[i], v, 'PX', math.max(math.ceil(ahead_us / 1000), 1))
  end
end

function gcra.reply(a, st, _, charged, out)
  for i = 1, #st.D do
    local limit, period, burst, q, r = gcra_limit(a, i)
    local d, fr = st.D[i], st.F[i]
    if charged then d, fr = st.D2[i], st.F2[i] end
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
end
