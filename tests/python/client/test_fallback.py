"""tollgate unreachable: the documented fallback (`on_unreachable`, default
"local": each worker limits by itself), one log line entering and one leaving,
in the plain client, the DRF throttle and the FastAPI dependency."""

import asyncio
import logging
import os

import httpx
import pytest
from conftest import eventually
from tcp_gate import Gate

from tollgate_client import AsyncClient, Client


def lines(caplog, text):
    return [r for r in caplog.records if r.name == "tollgate_client" and text in r.getMessage()]


def test_unreachable_tollgate_limits_locally_with_one_log_line_each_way(tollgate_url, caplog):
    caplog.set_level(logging.INFO, logger="tollgate_client")
    gate = Gate(tollgate_url)  # closed: its port refuses
    c = Client(gate.url, retry_interval=0)
    ds = [c.check("fb:k", "2/m") for _ in range(4)]
    assert [d.allowed for d in ds] == [True, True, False, False]
    assert {d.source for d in ds} == {"fallback"}
    assert 0 < ds[2].retry_after_ms <= 60_000
    assert ds[2].headers("k")["Retry-After"] == str(-(-ds[2].retry_after_ms // 1000))
    assert c.health.fallback_total == 4 and c.health.unreachable_total == 4
    assert len(lines(caplog, "tollgate unreachable")) == 1
    assert c.heartbeat("u1") is False
    assert len(lines(caplog, "tollgate unreachable")) == 1

    gate.open()
    try:
        eventually("tollgate answers through the gate", lambda: c.check("fb:k2", "2/m").source == "tollgate")
        c.check("fb:k2", "2/m")
    finally:
        gate.close()
    assert len(lines(caplog, "tollgate reachable again")) == 1
    assert len(lines(caplog, "tollgate unreachable")) == 1


@pytest.mark.parametrize("policy, outcomes", [("allow", [True] * 3), ("deny", [False] * 3)])
def test_on_unreachable_allow_and_deny(tollgate_url, policy, outcomes):
    c = Client(Gate(tollgate_url).url, on_unreachable=policy)
    assert [c.check("fb:p", "1/m").allowed for _ in range(3)] == outcomes


def test_fallback_workers_divide_the_local_limit(tollgate_url):
    c = Client(Gate(tollgate_url).url, fallback_workers=2)
    assert [c.check("fb:w", "4/m").allowed for _ in range(3)] == [True, True, False]


def test_drf_throttle_falls_back_locally(tollgate_url, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="tollgate_client")
    monkeypatch.setenv("TOLLGATE_URL", Gate(tollgate_url).url)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangoapp.settings")
    import django

    django.setup()
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory
    from rest_framework.views import APIView

    from tollgate_client.django.throttling import ScopedRateThrottle

    view = APIView()
    view.throttle_scope = "wait"
    request = Request(APIRequestFactory().get("/x"))
    throttles = [ScopedRateThrottle() for _ in range(3)]
    assert [t.allow_request(request, view) for t in throttles] == [True, True, False]
    assert 0 < throttles[2].wait() <= 60
    assert throttles[2].decision.source == "fallback"
    assert len(lines(caplog, "tollgate unreachable")) == 1


def test_fastapi_dependency_falls_back_locally(tollgate_url, caplog):
    caplog.set_level(logging.INFO, logger="tollgate_client")
    from fastapi import Depends, FastAPI

    from tollgate_client.fastapi import Limiter

    limiter = Limiter(Gate(tollgate_url).url)
    app = FastAPI()

    @app.get("/x", dependencies=[Depends(limiter.limit("2/m"))])
    async def x():
        return {}

    async def run():
        t = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=t, base_url="http://app") as c:
            return [await c.get("/x") for _ in range(3)]

    rs = asyncio.run(run())
    assert [r.status_code for r in rs] == [200, 200, 429]
    assert 1 <= int(rs[2].headers["Retry-After"]) <= 60
    assert len(lines(caplog, "tollgate unreachable")) == 1
    assert isinstance(limiter.client, AsyncClient)
