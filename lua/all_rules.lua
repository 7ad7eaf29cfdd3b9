-- all_rules: every rule of one request, decided together (after the four
-- algorithm modules; see limiter/redis_store.rs). A denied request consumes
-- nothing: unless every deciding rule passes, no rule is charged.
--
-- KEYS     the keys of rule 1's limits, then rule 2's, ... (a rule's keys share
--          one {hash tag}; rules' may not, so this runs on one Redis, not a Cluster)
-- ARGV[1]  R, the number of rules; then per rule:
--            algorithm tag (fw, sw, sl, gc), limit count n, cost (negative:
--            checked, never charged, as in one_rule.lua), decides (1|0),
--            then its module's numbers per limit (limit, period_ms[, burst])
--          A rule that does not decide (shadow) is charged when the request
--          passes and it passes itself, but its denial refuses nothing.
-- Returns  per rule, in order: allowed (1|0), retry_after_ms, then
--          remaining and reset_ms per limit (remaining counts this request
--          only where the rule was charged).
--
-- Example: login 2/m (fixed_window, over) and api 100/m (gcra):
--   KEYS = {"tg:rl:{login|ip}:fw:60000", "tg:rl:{api|ip}:gc:60000"}
--   ARGV = {2, "fw", 1, 1, 1, 2, 60000, "gc", 1, 1, 1, 100, 60000, 100}
--   -> {0, 41200, 0, 41200, 1, 0, 100, 0}: login denies, api is not charged
local ALG = {fw = fixed_window, sw = sliding_window, sl = sliding_log, gc = gcra}
local R = tonumber(ARGV[1])
assert(R and R >= 1, 'all_rules: ARGV[1] must be the number of rules')
local t = redis.call('TIME')

local rules, pos, kpos = {}, 2, 1
for r = 1, R do
  local M = ALG[ARGV[pos]]
  assert(M, 'all_rules: unknown algorithm tag ' .. tostring(ARGV[pos]))
  local n, cost = tonumber(ARGV[pos + 1]), tonumber(ARGV[pos + 2])
  local x = {M = M, cost = math.abs(cost), charges = cost >= 0, decides = ARGV[pos + 3] == '1', keys = {}, a = {}}
  pos = pos + 4
  for i = 1, n do x.keys[i] = KEYS[kpos]; kpos = kpos + 1 end
  for i = 1, M.per_limit * n do x.a[i] = tonumber(ARGV[pos]); pos = pos + 1 end
  rules[r] = x
end
assert(kpos == #KEYS + 1 and pos == #ARGV + 1, 'all_rules: KEYS and ARGV do not match the rules described')

local pass = true
for r = 1, R do
  local x = rules[r]
  x.st = x.M.check(x.keys, x.a, x.cost, t)
  if x.decides and not x.st.allowed then pass = false end
end

local out = {}
for r = 1, R do
  local x = rules[r]
  local charged = pass and x.charges and x.st.allowed and x.cost > 0
  if charged then x.M.charge(x.keys, x.a, x.cost, x.st) end
  out[#out + 1] = x.st.allowed and 1 or 0
  out[#out + 1] = x.st.retry
  x.M.reply(x.a, x.st, x.cost, charged, out)
end
return out
