-- fixed_window: a counter per limit; a window starts at its key's first hit.
--
-- KEYS[i]  counter of limit i (a string holding an integer). All keys of one
--          call share one {hash tag}, so the call stays in one cluster slot.
-- ARGV[1]  cost: units this request takes (1 <= cost <= every limit); 0 peeks: writes nothing
-- ARGV[2i], ARGV[2i+1]  limit i: allowed units, period in ms
-- Returns  {allowed (1|0), retry_after_ms, remaining_1, reset_ms_1, ..., remaining_n, reset_ms_n}
--          All limits are checked first and charged only if all pass: a
--          denied request consumes nothing. remaining counts this request.
-- Writes:  a fresh window is `SET key cost PX period` (never INCRBY onto a
--          leftover value: a counter that lost its TTL starts again at cost);
--          a running window is INCRBY (its PTTL is the window's end).
--
-- Example: KEYS = {"tg:rl:{login|203.0.113.7}:fw:60000"}, ARGV = {1, 5, 60000}
--   1st call in a fresh window -> {1, 0, 4, 60000}
--   6th call, 18.8 s later     -> {0, 41200, 0, 41200}
local n = #KEYS
assert(n >= 1 and #ARGV == 1 + 2 * n, 'fixed_window: expected ARGV = cost, then limit and period_ms per key')
local cost = tonumber(ARGV[1])

local counts, ttls = {}, {}
local allowed, retry = 1, 0
for i = 1, n do
  local limit, period = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local count = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
  local ttl = period
  if count > 0 then
    ttl = redis.call('PTTL', KEYS[i])
    -- -1 (no expiry) would make a counter immortal: treat it as a window that
    -- ends now; the charge below starts a fresh one with SET.
    if ttl < 0 then count, ttl = 0, period end
  end
  counts[i], ttls[i] = count, ttl
  if count + cost > limit then
    allowed = 0
    if ttl > retry then retry = ttl end
  end
end

if allowed == 1 and cost > 0 then
  for i = 1, n do
    if counts[i] == 0 then
      redis.call('SET', KEYS[i], cost, 'PX', ARGV[2 * i + 1])
    else
      redis.call('INCRBY', KEYS[i], cost)
    end
  end
end

local out = {allowed, retry}
for i = 1, n do
  local used = counts[i]
  if allowed == 1 then used = used + cost end
  out[#out + 1] = math.max(tonumber(ARGV[2 * i]) - used, 0)
  out[#out + 1] = ttls[i]
end
return out
