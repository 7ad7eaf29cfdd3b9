-- one_rule: one rule's limits for one key, by the algorithm module before it
-- (`local M = <module>` is placed between the two; see limiter/redis_store.rs).
--
-- KEYS[i]  the key of limit i (see the module). One {hash tag}.
-- ARGV[1]  cost: units this request takes; 0 peeks: computes the reply, writes nothing;
--          negative (-cost) checks whether cost would pass and charges nothing
--          (a rule with count = "reported": the application charges it later)
-- ARGV[2..] per limit, the module's numbers (limit, period_ms[, burst])
-- Returns  {allowed (1|0), retry_after_ms, remaining_1, reset_ms_1, ..., remaining_n, reset_ms_n}
--          Every limit is checked first and charged only if all pass.
local n = #KEYS
assert(n >= 1 and #ARGV == 1 + M.per_limit * n, 'expected ARGV = cost, then ' .. M.args .. ' per key')
local cost = tonumber(ARGV[1])
local charges = cost >= 0
if not charges then cost = -cost end
local a = {}
for i = 2, #ARGV do a[i - 1] = tonumber(ARGV[i]) end
local t = redis.call('TIME')

local st = M.check(KEYS, a, cost, t)
local charged = charges and st.allowed and cost > 0
if charged then M.charge(KEYS, a, cost, st) end
local out = {st.allowed and 1 or 0, st.retry}
M.reply(a, st, cost, charged, out)
return out
