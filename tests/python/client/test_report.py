"""`report()` on both clients against a real tollgate whose rules count
reported outcomes (`count = "reported"`, tests/python_client.rs's config):
reports fill the rule, a full counter adds nothing, the rule's check then
denies; bad reports raise `TollgateError` naming the field; while tollgate
is unreachable a report returns None, logged once each way."""

import asyncio
import logging

import pytest
from conftest import eventually
from tcp_gate import Gate

from tollgate_client import AsyncClient, Client, Reported, TollgateError


def test_sync_reports_fill_the_rule_and_its_check_then_denies(tollgate_url):
    c = Client(tollgate_url)
    client = "203.0.113.61"
    # Checks of a reported rule charge nothing.
    for _ in range(5):
        assert c.check(client, rule="login-failures").allowed
    got = [c.report("login-failures", client=client) for _ in range(4)]
    assert got[:3] == [Reported(True, 2, 0), Reported(True, 1, 0), Reported(True, 0, 0)]
    assert got[3].counted is False and got[3].retry_after_ms > 0
    d = c.check(client, rule="login-failures")
    assert not d.allowed and d.source == "tollgate"
    assert c.check("203.0.113.62", rule="login-failures").allowed
    c.close()


def test_async_reports_by_key_with_a_cost(tollgate_url):
    async def run():
        c = AsyncClient(tollgate_url)
        try:
            assert (await c.check("user:7", rule="by-user")).remaining == 2
            r = await c.report("by-user", key="user:7", cost=2)
            assert r == Reported(True, 0, 0)
            again = await c.report("by-user", key="user:7")
            assert again.counted is False
            assert not (await c.check("user:7", rule="by-user")).allowed
        finally:
            await c.aclose()

    asyncio.run(run())


def test_a_bad_report_raises_naming_the_field(tollgate_url):
    c = Client(tollgate_url)
    for kwargs, field in [
        (dict(rule="nope", client="203.0.113.63"), "rule"),
        (dict(rule="login-failures", client="not an address"), "client"),
        (dict(rule="login-failures"), "client"),
        (dict(rule="by-user", key="u1", cost=3), "cost"),
    ]:
        with pytest.raises(TollgateError) as e:
            c.report(**kwargs)
        assert (e.value.status, e.value.field) == (400, field), kwargs
    # Nothing was charged by any of them.
    assert c.check("203.0.113.63", rule="login-failures").remaining == 3
    c.close()


def test_an_unreachable_tollgate_loses_the_report_with_one_log_line_each_way(tollgate_url, caplog):
    caplog.set_level(logging.INFO, logger="tollgate_client")
    lines = lambda text: [r for r in caplog.records if text in r.getMessage()]
    gate = Gate(tollgate_url)  # closed: its port refuses
    c = Client(gate.url, retry_interval=0)
    assert c.report("login-failures", client="203.0.113.64") is None
    assert c.report("login-failures", client="203.0.113.64") is None
    assert c.health.unreachable_total == 2
    assert len(lines("tollgate unreachable")) == 1
    gate.open()
    try:
        eventually("a report through the gate",
                   lambda: c.report("login-failures", client="203.0.113.64") is not None)
    finally:
        gate.close()
    assert len(lines("tollgate reachable again")) == 1
    c.close()
