"""Django REST framework on tollgate: two runserver processes share one limit
(DRF's own cache throttle over-admits beside it), wait() and Retry-After are
tollgate's retry_after_ms, NUM_PROXIES picks the key, heartbeats add up."""

import os

import django
import httpx
import pytest
from conftest import app_env, burst, direct_check, eventually, secs_up


def runserver(port: int):
    return ["-m", "django", "runserver", "--noreload", f"127.0.0.1:{port}"]


@pytest.fixture(scope="module")
def urls(workers, tollgate_url, admin_url):
    """Two `manage.py runserver` processes, started once for this file."""
    return workers.start(runserver, app_env(tollgate_url, admin_url))


def test_two_django_workers_share_exactly_one_limit_where_drf_cache_over_admits(urls):
    tollgate = burst(urls, "/limited")
    assert tollgate == {200: 10, 429: 54}, tollgate
    # DRF's own ScopedRateThrottle, same rate, each process its own cache.
    cache = burst(urls, "/drf")
    assert cache.get(200, 0) > 10, cache
    assert sum(cache.values()) == 64


def test_django_retry_after_is_tollgates_retry_after(urls, tollgate_url):
    url = urls[0]
    statuses = [httpx.get(url + "/wait").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    key = "throttle_wait_127.0.0.1"
    before = direct_check(tollgate_url, key, ["2/m"], "sliding_window")
    r = httpx.get(url + "/wait")
    after = direct_check(tollgate_url, key, ["2/m"], "sliding_window")
    assert r.status_code == 429 and not before["allowed"] and not after["allowed"]
    assert secs_up(after["retry_after_ms"]) <= int(r.headers["Retry-After"]) <= secs_up(before["retry_after_ms"])


def _in_process():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangoapp.settings")
    django.setup()


def _view(scope):
    from rest_framework.views import APIView

    v = APIView()
    v.throttle_scope = scope
    return v


def test_drf_wait_is_tollgates_retry_after_ms(tollgate_url, admin_url, monkeypatch):
    monkeypatch.setenv("TOLLGATE_URL", tollgate_url)
    _in_process()
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from tollgate_client.django.throttling import ScopedRateThrottle

    request = Request(APIRequestFactory().get("/x"))
    view = _view("inproc")
    seen = []
    for _ in range(3):
        t = ScopedRateThrottle()
        seen.append(t.allow_request(request, view))
    assert seen == [True, True, False]
    assert t.wait() is not None and t.rate == "2/minute" and t.tollgate_rate == "2/m"
    key = "throttle_inproc_127.0.0.1"
    before = direct_check(tollgate_url, key, ["2/m"], "sliding_window")
    t = ScopedRateThrottle()
    assert not t.allow_request(request, view)
    after = direct_check(tollgate_url, key, ["2/m"], "sliding_window")
    assert after["retry_after_ms"] / 1000 <= t.wait() <= before["retry_after_ms"] / 1000


def test_num_proxies_picks_the_address_drf_would(tollgate_url, monkeypatch):
    monkeypatch.setenv("TOLLGATE_URL", tollgate_url)
    _in_process()
    from django.test import override_settings
    from rest_framework.request import Request
    from rest_framework.settings import api_settings
    from rest_framework.test import APIRequestFactory

    from tollgate_client.django.throttling import ScopedRateThrottle

    rf = APIRequestFactory()
    with override_settings(REST_FRAMEWORK={**_rf_settings(), "NUM_PROXIES": 1}):
        api_settings.reload()
        try:
            # One proxy: the client is the last address it appended; what the
            # client wrote to its left does not move it to another bucket.
            a = Request(rf.get("/x", HTTP_X_FORWARDED_FOR="1.1.1.1, 203.0.113.9"))
            b = Request(rf.get("/x", HTTP_X_FORWARDED_FOR="2.2.2.2, 203.0.113.9"))
            c = Request(rf.get("/x", HTTP_X_FORWARDED_FOR="203.0.113.10"))
            view = _view("proxied")
            throttles = [ScopedRateThrottle() for _ in range(3)]
            outcomes = [t.allow_request(r, view) for t, r in zip(throttles, (a, b, c))]
            assert throttles[0].get_cache_key(a, view) == "throttle_proxied_203.0.113.9"
        finally:
            api_settings.reload()
    assert outcomes == [True, False, True]


def test_user_and_anon_keys_are_drfs(tollgate_url, monkeypatch):
    monkeypatch.setenv("TOLLGATE_URL", tollgate_url)
    _in_process()
    from django.contrib.auth.models import User
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from tollgate_client.django.throttling import AnonRateThrottle, UserRateThrottle

    rf = APIRequestFactory()

    def as_user(pk):
        r = Request(rf.get("/x"))
        r.user = User(pk=pk)
        return r

    users = [as_user(42), as_user(42), as_user(43)]
    throttles = [UserRateThrottle() for _ in users]
    assert [t.allow_request(r, None) for t, r in zip(throttles, users)] == [True, False, True]
    assert throttles[0].get_cache_key(users[0], None) == "throttle_user_42"
    assert throttles[1].wait() is not None and throttles[1].decision.source == "tollgate"
    # Anonymous: by address, the "anon" scope's "1000/day" asked as "1000/d".
    anon = AnonRateThrottle()
    assert anon.allow_request(Request(rf.get("/x")), None)
    assert anon.tollgate_rate == "1000/d" and anon.decision.limit == 1000
    assert anon.decision.limits[0].window_ms == 86_400_000


def _rf_settings():
    from django.conf import settings

    return dict(settings.REST_FRAMEWORK)


def test_heartbeats_from_two_django_workers_count_each_client_once(urls, tollgate_url, admin_url):
    a, b = urls
    for url, who in [(a, "u1"), (a, "u2"), (b, "u2"), (b, "u3")]:
        r = httpx.post(f"{url}/hb/{who}")
        assert r.status_code == 200 and r.json() == {"recorded": True}, r.text
    from tollgate_client import Client

    c = Client(tollgate_url, admin_url=admin_url)
    eventually("3 online", lambda: c.online("1m") == 3)
    assert c.active(1) == 3
