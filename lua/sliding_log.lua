-- sliding_log: exact sliding window; a sorted set holds one member per unit
-- admitted in the last period, scored by its arrival time in microseconds.
--
-- KEYS[i]  sorted set of limit i. One {hash tag}.
-- ARGV[1]  cost (1 <= cost <= every limit); 0 peeks: computes the reply, writes nothing; a request adds `cost` members
-- ARGV[2i], ARGV[2i+1]  limit i: allowed units, period in ms
-- Returns  {allowed (1|0), retry_after_ms, remaining_1, reset_ms_1, ...}
--          retry_after_ms: until enough old members leave the period.
--          reset_ms: until the newest member leaves (quota fully restored).
-- Members: "<now_us>-<count+j>". Two calls in the same microsecond see a
--          growing count (nothing expires between them), so members are unique.
-- Memory:  O(limit) per key: one member (about 30-40 bytes) per unit admitted.
--
-- Example: KEYS = {"tg:rl:{api|203.0.113.7}:sl:1000"}, ARGV = {1, 2, 1000}
--   3rd call 400 ms after the 1st -> {0, 600, 0, 1000 - (age of newest)}
local n = #KEYS
assert(n >= 1 and #ARGV == 1 + 2 * n, 'sliding_log: expected ARGV = cost, then limit and period_ms per key')
local cost = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

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
    local wait = math.ceil((tonumber(e[2]) + period_us - now) / 1000)
    if wait < 1 then wait = 1 end
    if wait > retry then retry = wait end
  end
end

if allowed == 1 and cost > 0 then
  for i = 1, n do
    local args = {}
    for j = 1, cost do
      args[#args + 1] = now
      args[#args + 1] = now .. '-' .. (counts[i] + j)
    end
    redis.call('ZADD', KEYS[i], unpack(args))
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
