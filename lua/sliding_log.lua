-- sliding_log: exact sliding window; a sorted set holds one member per unit
-- admitted in the last period, scored by its arrival time in microseconds.
-- An algorithm module: run by `one_rule.lua` (one rule a call) or
-- `all_rules.lua` (a request's rules together); see either for ARGV.
--
-- KEYS[i]  sorted set of limit i. One {hash tag}.
-- a        per limit: allowed units, period in ms (2 numbers a limit)
-- cost     units this request takes (1 <= cost <= every limit); 0 peeks; a
--          request adds `cost` members, so tollgate caps it (api.max_log_limit)
-- Reply    per limit: remaining, reset_ms (until the newest member leaves:
--          quota fully restored). retry_after_ms: until enough old members
--          leave the period.
-- Members: "<now_us>-<j>", now_us written digit for digit from the TIME reply
--          (never through Lua's %.14g number printing, which would round it to
--          100 us and make names collide), and the score is that same decimal
--          string, so it is exact. j continues from ZCOUNT of the members at
--          exactly now_us: a prune removes whole scores (<= now - period) and
--          never now itself, so those members are j = 1..c and a second call in
--          the same microsecond (on any replica) continues at c + 1. Names are
--          therefore unique: every admitted unit is one member.
-- Memory:  O(limit) per key: one member (about 30-40 bytes) per unit admitted.
--          Members are added in ZADD chunks of 500, so any cost works.
--
-- Example: KEYS = {"tg:rl:{api|203.0.113.7}:sl:1000"}, ARGV = {1, 2, 1000}
--   3rd call 400 ms after the 1st -> {0, 600, 0, 1000 - (age of newest)}
local sliding_log = {per_limit = 2, args = 'limit and period_ms'}

function sliding_log.check(keys, a, cost, t)
  local now_s = t[1] .. string.format('%06d', tonumber(t[2]))
  local now = tonumber(now_s)
  local st = {allowed = true, retry = 0, now_s = now_s, counts = {}, resets = {}}
  for i = 1, #keys do
    local limit, period_us = a[2 * i - 1], a[2 * i] * 1000
    -- Units older than the period no longer count; dropping them changes no decision.
    redis.call('ZREMRANGEBYSCORE', keys[i], '-inf', now - period_us)
    local count = redis.call('ZCARD', keys[i])
    st.counts[i] = count
    st.resets[i] = 0
    if count > 0 then
      local newest = redis.call('ZRANGE', keys[i], -1, -1, 'WITHSCORES')
      st.resets[i] = math.ceil((tonumber(newest[2]) + period_us - now) / 1000)
    end
    if count + cost > limit then
      st.allowed = false
      -- The (count + cost - limit)-th oldest member must leave first.
      local idx = count + cost - limit - 1
      local e = redis.call('ZRANGE', keys[i], idx, idx, 'WITHSCORES')
      -- No such member: cost > limit can never pass; come back in a period.
      local wait = period_us / 1000
      if e[2] then wait = math.ceil((tonumber(e[2]) + period_us - now) / 1000) end
      if wait < 1 then wait = 1 end
      if wait > st.retry then st.retry = wait end
    end
  end
  return st
end

function sliding_log.charge(keys, a, cost, st)
  local now_s = st.now_s
  for i = 1, #keys do
    local seq = redis.call('ZCOUNT', keys[i], now_s, now_s)
    local j = 0
    while j < cost do
      local args = {}
      local last = math.min(j + 500, cost)
      for m = j + 1, last do
        args[#args + 1] = now_s
        args[#args + 1] = now_s .. '-' .. string.format('%d', seq + m)
      end
      redis.call('ZADD', keys[i], unpack(args))
      j = last
    end
    redis.call('PEXPIRE', keys[i], a[2 * i])
    st.resets[i] = a[2 * i]
  end
end

function sliding_log.reply(a, st, cost, charged, out)
  for i = 1, #st.counts do
    local used = st.counts[i]
    if charged then used = used + cost end
    out[#out + 1] = math.max(a[2 * i - 1] - used, 0)
    out[#out + 1] = st.resets[i]
  end
end
