"""Bad settings stop the app at startup, naming the setting; DRF's rate
spellings map to rates tollgate itself accepts."""

import subprocess
import sys

import httpx
import pytest
from conftest import HERE, app_env

from tollgate_client import ConfigError, parse_rate


BAD = {
    "rate": "REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']['burst']: bad rate '3/fortnight': unknown unit 'fortnight'",
    "url": "TOLLGATE['URL']: url is missing",
}


@pytest.fixture(scope="module")
def bad_runs(tollgate_url, admin_url):
    """`runserver` with each bad setting, the processes run side by side."""
    # Port 1: never bound, since each process must stop before serving.
    procs = {bad: subprocess.Popen([sys.executable, "-m", "django", "runserver", "--noreload", "127.0.0.1:1"],
                                   env=app_env(tollgate_url, admin_url, TG_TEST_BAD=bad), cwd=HERE,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for bad in BAD}
    return {bad: (p.wait(timeout=60), p.stderr.read().decode()) for bad, p in procs.items()}


@pytest.mark.parametrize("bad", sorted(BAD))
def test_bad_django_settings_stop_runserver_at_startup(bad_runs, bad):
    code, err = bad_runs[bad]
    assert code != 0
    assert "ImproperlyConfigured" in err and BAD[bad] in err, err[-3000:]


def test_bad_fastapi_settings_raise_when_the_app_is_built(monkeypatch):
    from tollgate_client import fastapi as tf

    monkeypatch.delenv("TOLLGATE_URL", raising=False)
    monkeypatch.setattr(tf, "_default", None)
    with pytest.raises(ConfigError, match="TOLLGATE_URL is not set"):
        tf.limit("5/m")
    monkeypatch.setenv("TOLLGATE_URL", "http://127.0.0.1:9")
    with pytest.raises(ConfigError, match=r"limits\[0\]: bad rate '5/fortnight': unknown unit"):
        tf.limit("5/fortnight")
    assert callable(tf.limit("5/m"))
    with pytest.raises(ConfigError, match="url is missing"):
        tf.Limiter(None)
    with pytest.raises(ConfigError, match="url: 'localhost:8080' is not an http"):
        tf.Limiter("localhost:8080")
    with pytest.raises(ConfigError, match="on_unreachable: 'open' is not one of"):
        tf.Limiter("http://127.0.0.1:9", on_unreachable="open")
    with pytest.raises(ConfigError, match=r"limits\[1\]: bad rate '5'"):
        tf.PathRule("/api", ["5/m", "5"])


SPELLINGS = {"3/m": "3/m", "3/min": "3/m", "3/minute": "3/m", "3/minutes": "3/m",
             "100/day": "100/d", "100/days": "100/d", "100/d": "100/d",
             "5/s": "5/s", "5/sec": "5/s", "5/second": "5/s", "5/seconds": "5/s",
             "7/h": "7/h", "7/hour": "7/h", "7/hours": "7/h", "100/30s": "100/30s", "10/2h": "10/2h"}


def test_drf_rate_spellings_map_to_rates_tollgate_accepts(tollgate_url):
    with httpx.Client() as http:
        for drf, expected in SPELLINGS.items():
            assert parse_rate(drf).text == expected, drf
            r = http.post(tollgate_url + "/v1/check", json={"key": "spelling", "limits": [expected]})
            assert r.status_code == 200, (expected, r.text)
    for bad in ["5/mango", "5/", "0/m", "x/m", "5m", "5/0s"]:
        with pytest.raises(ConfigError, match="bad rate"):
            parse_rate(bad)
