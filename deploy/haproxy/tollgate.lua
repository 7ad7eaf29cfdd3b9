-- Ask tollgate about the current request; the decision lands in txn variables
-- that haproxy.cfg turns into a response:
--   txn.tg_status       tollgate's status (200, 429, 403) or 503 when unreachable
--   txn.tg_retry_after  Retry-After of a denial
--   txn.tg_ratelimit    the RateLimit header
-- and report the upstream's answer to an allowed request (action
-- tollgate_report, http-response): POST /report with the request described
-- as to /check plus X-Upstream-Status, which charges the rules with
-- count = "reported" whose report_statuses hold it (failed logins). The
-- request's description is kept in txn.tg_uri/_method/_host/_src for it.
-- The address it calls is haproxy.cfg's, never written here: the cfg's global
-- section sets TOLLGATE_CHECK (and its "listen tollgate" section binds it).
-- A call that gets no decision (no answer, or a status tollgate never decides
-- with) is logged once when calls start failing, naming the address and what
-- came back, and once when they work again: a state change, not a flood.
-- A report that fails likewise (the upstream's answer passes on uncounted).

local CHECK = os.getenv("TOLLGATE_CHECK")
if CHECK == nil or CHECK == "" then
    error("tollgate.lua: TOLLGATE_CHECK is not set; haproxy.cfg's global section must set it (setenv TOLLGATE_CHECK host:port) before lua-load")
end
local CHECK_URL = "http://" .. CHECK .. "/check"
local REPORT_URL = "http://" .. CHECK .. "/report"

-- The statuses tollgate decides with; anything else is a failed call.
local DECISIONS = { [200] = true, [403] = true, [429] = true }

-- Whether the last call of each kind ("call": /check, "report": /report)
-- failed (one Lua state for all threads with lua-load).
local failing = {}

-- Log a call of `kind` to `url` that got `res` (nil: no answer): one alert
-- when calls of that kind start failing, saying what happens meanwhile, one
-- warning when they work again. True when it worked.
local function logged(kind, url, res, worked, meanwhile)
    if not worked then
        if not failing[kind] then
            failing[kind] = true
            core.Alert(string.format("tollgate: %s to %s failed: %s %s; %s",
                kind, url, tostring(res and res.status), tostring(res and res.reason), meanwhile))
        end
        return false
    end
    if failing[kind] then
        failing[kind] = false
        core.Warning("tollgate: " .. kind .. "s to " .. url .. " answer again")
    end
    return true
end

-- tollgate's answer header -> the transaction variable that carries it.
RATELIMIT_HEADERS = {
    ["ratelimit"] = "txn.tg_ratelimit",
    ["ratelimit-policy"] = "txn.tg_ratelimit_policy",
    ["x-ratelimit-limit"] = "txn.tg_xrl_limit",
    ["x-ratelimit-remaining"] = "txn.tg_xrl_remaining",
    ["x-ratelimit-reset"] = "txn.tg_xrl_reset",
}

-- The original request as /check and /report read it, from the txn variables.
local function described(txn)
    return {
        ["x-forwarded-uri"] = { txn:get_var("txn.tg_uri") },
        ["x-forwarded-method"] = { txn:get_var("txn.tg_method") },
        ["x-forwarded-host"] = { txn:get_var("txn.tg_host") },
        ["x-forwarded-for"] = { txn:get_var("txn.tg_src") },
    }
end

core.register_action("tollgate", { "http-req" }, function(txn)
    -- Only these headers are sent (nothing of the client's is copied): the
    -- family tollgate reads, server.forwarded_request = "x-forwarded". pathq
    -- is the raw path and query: tollgate normalises the path. The address
    -- is the connection's; the client's own X-Forwarded-For is ignored.
    -- Kept for the report: the request is gone when the answer comes.
    txn:set_var("txn.tg_uri", txn.sf:pathq())
    txn:set_var("txn.tg_method", txn.sf:method())
    txn:set_var("txn.tg_host", txn.sf:req_hdr("host") or "")
    txn:set_var("txn.tg_src", txn.sf:src())
    local client = core.httpclient()
    local res = client:get{
        url = CHECK_URL,
        headers = described(txn),
        timeout = 2000,
    }
    local decided = res ~= nil and DECISIONS[res.status] ~= nil
    if not logged("call", CHECK_URL, res, decided, "answering 503 until it answers") then
        txn:set_var("txn.tg_status", 503)
        return
    end
    txn:set_var("txn.tg_status", res.status)
    local h = res.headers or {}
    if h["retry-after"] then txn:set_var("txn.tg_retry_after", h["retry-after"][0]) end
    -- The RateLimit headers, for the client's answer (haproxy.cfg adds them).
    for name, var in pairs(RATELIMIT_HEADERS) do
        if h[name] then txn:set_var(var, h[name][0]) end
    end
end, 0)

-- The upstream answered an allowed request: tell tollgate its status, before
-- the answer goes on (the client's next request already sees the charge).
-- haproxy.cfg runs it only for the statuses worth a call. A failed report is
-- logged once when reports start failing and once when they work again; the
-- answer passes on unchanged either way (the request has happened: fail open).
core.register_action("tollgate_report", { "http-res" }, function(txn)
    local headers = described(txn)
    headers["x-upstream-status"] = { tostring(txn.sf:status()) }
    local client = core.httpclient()
    local res = client:post{
        url = REPORT_URL,
        headers = headers,
        body = "",
        timeout = 2000,
    }
    logged("report", REPORT_URL, res, res ~= nil and res.status == 200,
        "upstream answers pass on uncounted until it answers")
end, 0)
