-- Ask tollgate about the current request; the decision lands in txn variables
-- that haproxy.cfg turns into a response:
--   txn.tg_status       tollgate's status (200, 429, 403) or 503 when unreachable
--   txn.tg_retry_after  Retry-After of a denial
--   txn.tg_ratelimit    the RateLimit header
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
        url = "http://127.0.0.1:8079/check",
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
    if res == nil or res.status == nil or res.status == 0 then
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
