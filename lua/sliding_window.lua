-- sliding_window: two fixed windows, the previous one weighted by how much of
-- it still overlaps the sliding period. O(1) memory: one hash per limit.
-- An algorithm module: run by `one_rule.lua` (one rule a call) or
-- `all_rules.lua` (a request's rules together); see either for ARGV.
--
-- KEYS[i]  hash of limit i: w = current window index (floor(now_ms / period)),
--          c = units in window w, p = units in window w - 1. One {hash tag}.
-- a        per limit: allowed units, period in ms (2 numbers a limit)
-- cost     units this request takes (1 <= cost <= every limit); 0 peeks
-- Reply    per limit: remaining, reset_ms (the time left in the current window).
--          estimate = p * (period - elapsed) / period + c; a request passes when
--          estimate + cost <= limit for every limit (checked first, charged only
--          if all pass).
-- Error:   within one fixed window at most `limit` pass (c <= limit). Over an
--          arbitrary sliding period the estimate assumes the previous window's
--          requests were spread evenly; if they were all at its very end, up to
--          p * elapsed / period more can pass (at worst just under 2 x limit).
--
-- Example: KEYS = {"tg:rl:{api|203.0.113.7}:sw:60000"}, ARGV = {1, 10, 60000}
--   p = 10, c = 0, 30 s into the window: estimate 5 -> {1, 0, 4, 30000}
local sliding_window = {per_limit = 2, args = 'limit and period_ms'}

function sliding_window.check(keys, a, cost, t)
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local st = {allowed = true, retry = 0, now = now, wins = {}, cs = {}, ps = {}, ests = {}}
  for i = 1, #keys do
    local limit, period = a[2 * i - 1], a[2 * i]
    local win = math.floor(now / period)
    local elapsed = now - win * period
    local h = redis.call('HMGET', keys[i], 'w', 'c', 'p')
    local w, c, p = tonumber(h[1]), tonumber(h[2]) or 0, tonumber(h[3]) or 0
    if w == nil then
      c, p = 0, 0
    elseif w == win - 1 then
      p, c = c, 0
    elseif w ~= win then
      c, p = 0, 0
    end
    local est = p * (period - elapsed) / period + c
    st.wins[i], st.cs[i], st.ps[i], st.ests[i] = win, c, p, est
    -- 1e-9 absorbs float rounding of the weight; it can never admit a whole unit.
    if est + cost > limit + 1e-9 then
      st.allowed = false
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
      if wait > st.retry then st.retry = wait end
    end
  end
  return st
end

function sliding_window.charge(keys, a, cost, st)
  for i = 1, #keys do
    redis.call('HSET', keys[i], 'w', st.wins[i], 'c', st.cs[i] + cost, 'p', st.ps[i])
    -- Two periods: the window itself, then its time as the weighted previous one.
    redis.call('PEXPIRE', keys[i], 2 * a[2 * i])
  end
end

function sliding_window.reply(a, st, cost, charged, out)
  for i = 1, #st.ests do
    local limit, period = a[2 * i - 1], a[2 * i]
    local used = st.ests[i]
    if charged then used = used + cost end
    out[#out + 1] = math.max(math.floor(limit - used + 1e-9), 0)
    out[#out + 1] = (st.wins[i] + 1) * period - st.now
  end
end
