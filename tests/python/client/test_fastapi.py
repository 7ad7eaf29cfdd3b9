"""FastAPI on tollgate: two uvicorn processes share exactly one limit (the
dependency and the middleware), Retry-After and the RateLimit headers are
tollgate's, heartbeats from both workers add up."""

import httpx
import pytest
from conftest import app_env, burst, direct_check, eventually, secs_up

from tollgate_client import Client


def uvicorn(port: int):
    return ["-m", "uvicorn", "fastapi_app:app", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning"]


@pytest.fixture(scope="module")
def urls(workers, tollgate_url, admin_url):
    """Two uvicorn processes, started once for this file."""
    return workers.start(uvicorn, app_env(tollgate_url, admin_url))


def test_two_uvicorn_workers_share_exactly_one_limit(urls):
    assert burst(urls, "/limited") == {200: 10, 429: 54}
    assert burst(urls, "/mw/items") == {200: 10, 429: 54}
    r = httpx.get(urls[0] + "/mw/items")
    assert r.status_code == 429 and r.headers["RateLimit-Policy"] == '"/mw";q=10;w=60'


def test_fastapi_retry_after_and_ratelimit_headers_are_tollgates(urls, tollgate_url):
    url = urls[1]
    first = httpx.get(url + "/wait")
    assert first.status_code == 200
    assert first.headers["RateLimit-Policy"] == '"/wait";q=2;w=60'
    assert first.headers["RateLimit"].startswith('"/wait";r=1;t=')
    assert [httpx.get(url + "/wait").status_code for _ in range(2)] == [200, 429]
    key = "/wait|ip:127.0.0.1"
    before = direct_check(tollgate_url, key, ["2/m"], "fixed_window")
    r = httpx.get(url + "/wait")
    after = direct_check(tollgate_url, key, ["2/m"], "fixed_window")
    assert r.status_code == 429
    assert secs_up(after["retry_after_ms"]) <= int(r.headers["Retry-After"]) <= secs_up(before["retry_after_ms"])
    assert r.headers["X-RateLimit-Remaining"] == "0"
    assert r.headers["RateLimit"].startswith('"/wait";r=0;t=')


def test_heartbeats_from_two_uvicorn_workers_count_each_client_once(urls, tollgate_url, admin_url):
    a, b = urls
    for url, who in [(a, "u1"), (a, "u2"), (b, "u2"), (b, "u3"), (b, "u4")]:
        r = httpx.post(f"{url}/hb/{who}")
        assert r.status_code == 200 and r.json() == {"recorded": True}, r.text
    c = Client(tollgate_url, admin_url=admin_url)
    eventually("4 online", lambda: c.online("1m") == 4)
    assert c.active(1) == 4
