-- Ask tollgate about the current request; the decision lands in txn variables
-- that haproxy.cfg turns into a response:
--   txn.tg_status       tollgate's status (200, 429, 403) or 503 when unreachable
--   txn.tg_retry_after  Retry-After of a denial
--   txn.tg_ratelimit    the RateLimit header
-- The address it calls is haproxy.cfg's, never written here: the cfg's global
-- section sets TOLLGATE_CHECK (and its "listen tollgate" section binds it).
-- A call that gets no decision (no answer, or a status tollgate never decides
-- with) is logged once when calls start failing, naming the address and what
-- came back, and once when they work again: a state change, not a flood.

local CHECK = os.getenv("TOLLGATE_CHECK")
if CHECK == nil or CHECK == "" then
    error("tollgate.lua: TOLLGATE_CHECK is not set; haproxy.cfg's global section must set it (setenv TOLLGATE_CHECK host:port) before lua-load")
end
local CHECK_URL = "http://" .. CHECK .. "/check"

-- The statuses tollgate decides with; anything else is a failed call.
local DECISIONS = { [200] = true, [403] = true, [429] = true }

-- Whether the last call failed (one Lua state for all threads with lua-load).
local failing = false
-- tollgate's answer header -> the transaction variable that carries it.
RATELIMIT_HEADERS = {
    ["ratelimit"] = "txn.tg_ratelimit",
    ["ratelimit-policy"] = "txn.tg_ratelimit_policy",
    ["x-ratelimit-limit"] = "txn.tg_xrl_limit",
    ["x-ratelimit-remaining"] = "txn.tg_xrl_remaining",
    ["x-ratelimit-reset"] = "txn.tg_xrl_reset",
}

core.register_action("tollgate", { "http-req" }, function(txn)
    local client = core.httpclient()
    local res = client:get{
        url = CHECK_URL,
        headers = {
            -- Only these headers are sent (nothing of the client's is copied):
            -- the family tollgate reads, server.forwarded_request = "x-forwarded".
            -- pathq is the raw path and query: tollgate normalises the path.
            ["x-forwarded-uri"] = { txn.sf:pathq() },
            ["x-forwarded-method"] = { txn.sf:method() },
            ["x-forwarded-host"] = { txn.sf:req_hdr("host") or "" },
            -- The connection's address; the client's own X-Forwarded-For is ignored.
            ["x-forwarded-for"] = { txn.sf:src() },
        },
        timeout = 2000,
    }
    local status = res and res.status
    if not DECISIONS[status] then
        if not failing then
            failing = true
            core.Alert(string.format(
                "tollgate: call to %s failed: %s %s; answering 503 until it answers",
                CHECK_URL, tostring(status), tostring(res and res.reason)))
        end
        txn:set_var("txn.tg_status", 503)
        return
    end
    if failing then
        failing = false
        core.Warning("tollgate: calls to " .. CHECK_URL .. " answer again")
    end
    txn:set_var("txn.tg_status", res.status)
    local h = res.headers or {}
    if h["retry-after"] then txn:set_var("txn.tg_retry_after", h["retry-after"][0]) end
    -- The RateLimit headers, for the client's answer (haproxy.cfg adds them).
    for name, var in pairs(RATELIMIT_HEADERS) do
        if h[name] then txn:set_var(var, h[name][0]) end
    end
end, 0)
