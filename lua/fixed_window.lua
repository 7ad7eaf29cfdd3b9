-- fixed_window: a counter per limit; a window starts at its key's first hit.
-- An algorithm module: run by `one_rule.lua` (one rule a call) or
-- `all_rules.lua` (a request's rules together); see either for ARGV.
--
-- KEYS[i]  counter of limit i (a string holding an integer). All keys of one
--          rule share one {hash tag}, so the rule stays in one cluster slot.
-- a        per limit: allowed units, period in ms (2 numbers a limit)
-- cost     units this request takes (1 <= cost <= every limit); 0 peeks
-- Reply    per limit: remaining, reset_ms. All limits are checked first and
--          charged only if all pass: a denied request consumes nothing.
--          remaining counts this request when it was charged.
-- Writes:  a fresh window is `SET key cost PX period` (never INCRBY onto a
--          leftover value: a counter that lost its TTL starts again at cost);
--          a running window is INCRBY (its PTTL is the window's end). No clock
--          is read: the window's end is the key's PTTL.
--
-- Example: KEYS = {"tg:rl:{login|203.0.113.7}:fw:60000"}, ARGV = {1, 5, 60000}
--   1st call in a fresh window -> {1, 0, 4, 60000}
--   6th call, 18.8 s later     -> {0, 41200, 0, 41200}
local fixed_window = {per_limit = 2, args = 'limit and period_ms'}

function fixed_window.check(keys, a, cost, _)
  local st = {allowed = true, retry = 0, counts = {}, ttls = {}}
  for i = 1, #keys do
    local limit, period = a[2 * i - 1], a[2 * i]
    local count = tonumber(redis.call('GET', keys[i]) or '0') or 0
    local ttl = period
    if count > 0 then
      ttl = redis.call('PTTL', keys[i])
      -- -1 (no expiry) would make a counter immortal: treat it as a window that
      -- ends now; the charge starts a fresh one with SET.
      if ttl < 0 then count, ttl = 0, period end
    end
    st.counts[i], st.ttls[i] = count, ttl
    if count + cost > limit then
      st.allowed = false
      if ttl > st.retry then st.retry = ttl end
    end
  end
  return st
end

function fixed_window.charge(keys, a, cost, st)
  for i = 1, #keys do
    if st.counts[i] == 0 then
      redis.call('SET', keys[i], cost, 'PX', a[2 * i])
    else
      redis.call('INCRBY', keys[i], cost)
    end
  end
end

function fixed_window.reply(a, st, cost, charged, out)
  for i = 1, #st.counts do
    local used = st.counts[i]
    if charged then used = used + cost end
    out[#out + 1] = math.max(a[2 * i - 1] - used, 0)
    out[#out + 1] = st.ttls[i]
  end
end
