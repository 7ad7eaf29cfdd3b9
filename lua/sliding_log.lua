-- sliding_log: exact sliding window; a sorted set holds one member per unit
-- admitted in the last period, scored by its arrival time in microseconds.
--
-- KEYS[i]  sorted set of limit i. One {hash tag}.
-- ARGV[1]  cost (1 <= cost <= every limit); 0 peeks: computes the reply, writes nothing; a request adds `cost` members
-- ARGV[2i], ARGV[2i+1]  limit i: allowed units, period in ms
-- Returns  {allowed (1|0), retry_after_ms, remaining_1, reset_ms_1, ...}
--          retry_after_ms: until enough old members leave the period.
--          reset_ms: until the newest member leaves (quota fully restored).
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
local n = #KEYS
assert(n >= 1 and #ARGV == 1 + 2 * n, 'sliding_log: expected ARGV = cost, then limit and period_ms per key')
local cost = tonumber(ARGV[1])
local t = redis.call('TIME')
local now_s = t[1] .. string.format('%06d', tonumber(t[2]))
local now = tonumber(now_s)

local counts, resets = {}, {}
local allowed, retry = 1, 0
for i = 1, n do
  local limit, period_us = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1]) * 1000
  -- Units older than the period no longer count; dropping them changes no decision.
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - period_us)
  local count = redis.call('ZCARD', KEYS[i])
  counts[i] = count
  resets[i] = 0
  if count > 0 then
    local newest = redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')
    resets[i] = math.ceil((tonumber(newest[2]) + period_us - now) / 1000)
  end
  if count + cost > limit then
    allowed = 0
    -- The (count + cost - limit)-th oldest member must leave first.
    local idx = count + cost - limit - 1
    local e = redis.call('ZRANGE', KEYS[i], idx, idx, 'WITHSCORES')
    -- No such member: cost > limit can never pass; come back in a period.
    local wait = period_us / 1000
    if e[2] then wait = math.ceil((tonumber(e[2]) + period_us - now) / 1000) end
    if wait < 1 then wait = 1 end
    if wait > retry then retry = wait end
  end
end

if allowed == 1 and cost > 0 then
  for i = 1, n do
    local seq = redis.call('ZCOUNT', KEYS[i], now_s, now_s)
    local j = 0
    while j < cost do
      local args = {}
      local last = math.min(j + 500, cost)
      for m = j + 1, last do
        args[#args + 1] = now_s
        args[#args + 1] = now_s .. '-' .. string.format('%d', seq + m)
      end
      redis.call('ZADD', KEYS[i], unpack(args))
      j = last
    end
    redis.call('PEXPIRE', KEYS[i], ARGV[2 * i + 1])
    resets[i] = tonumber(ARGV[2 * i + 1])
  end
end

local out = {allowed, retry}
for i = 1, n do
  local used = counts[i]
  if allowed == 1 then used = used + cost end
  out[#out + 1] = math.max(tonumber(ARGV[2 * i]) - used, 0)
  out[#out + 1] = resets[i]
end
return out
