"""Shared by the client tests: tollgate's addresses (from the Rust test that
started it), app workers as real processes, a concurrent burst, waiting."""

import asyncio
import filecmp
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import httpx
import pytest

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parents[2] / "clients" / "python" / "src" / "tollgate_client"


def pytest_sessionstart(session: pytest.Session) -> None:
    # The installed package must be the one in clients/python (scripts/test.sh
    # reinstalls it when its files change); else these tests test old code.
    import tollgate_client

    installed = Path(tollgate_client.__file__).parent
    stale = [str(p.relative_to(SOURCE)) for p in SOURCE.rglob("*.py")
             if not filecmp.cmp(p, installed / p.relative_to(SOURCE), shallow=False)]
    if stale:
        pytest.exit(f"the installed tollgate_client differs from clients/python ({stale}): "
                    "run scripts/test.sh, which reinstalls it", returncode=3)


@pytest.fixture(scope="session")
def tollgate_url() -> str:
    return os.environ["TOLLGATE_TEST_URL"]


@pytest.fixture(scope="session")
def admin_url() -> str:
    return os.environ["TOLLGATE_TEST_ADMIN_URL"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def eventually(what: str, cond: Callable[[], bool], deadline: float = 15.0) -> None:
    """Poll `cond` until true; fail naming `what` after a generous deadline."""
    end = time.monotonic() + deadline
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"not within {deadline}s: {what}")
        time.sleep(0.05)


def app_env(tollgate_url: str, admin_url: str, **extra: str) -> Dict[str, str]:
    env = dict(os.environ, TOLLGATE_URL=tollgate_url, TOLLGATE_ADMIN_URL=admin_url,
               PYTHONPATH=str(HERE), PYTHONDONTWRITEBYTECODE="1",
               DJANGO_SETTINGS_MODULE="djangoapp.settings")
    env.update(extra)
    return env


class Workers:
    """App worker processes on loopback ports, stopped at the end."""

    def __init__(self) -> None:
        self.procs: List[subprocess.Popen] = []
        self.urls: List[str] = []

    def start(self, argv: Callable[[int], Sequence[str]], env: Dict[str, str], count: int = 2) -> List[str]:
        urls = []
        for _ in range(count):
            port = free_port()
            # A file, not a pipe: a worker logging every request never blocks.
            log = tempfile.TemporaryFile()
            p = subprocess.Popen([sys.executable, *argv(port)], env=env, cwd=HERE,
                                 stdout=log, stderr=subprocess.STDOUT)
            p.log = log  # type: ignore[attr-defined]
            self.procs.append(p)
            urls.append(f"http://127.0.0.1:{port}")
        for url, p in zip(urls, self.procs[-count:]):
            eventually(f"{url} answers", lambda: _answers(url, p))
        self.urls += urls
        return urls

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def _answers(url: str, p: subprocess.Popen) -> bool:
    if p.poll() is not None:
        p.log.seek(0)  # type: ignore[attr-defined]
        raise AssertionError(f"worker exited {p.returncode}: {p.log.read().decode()[-2000:]}")  # type: ignore[attr-defined]
    try:
        httpx.get(url + "/ready", timeout=1)
        return True
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def workers():
    """Processes started by one test file, stopped after its last test."""
    w = Workers()
    yield w
    w.stop()


def burst(urls: Sequence[str], path: str, n: int = 64) -> Dict[int, int]:
    """`n` concurrent GETs spread evenly over `urls`: {status: count}."""

    async def run() -> List[int]:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=n)) as c:
            rs = await asyncio.gather(*(c.get(urls[i % len(urls)] + path) for i in range(n)))
        return [r.status_code for r in rs]

    counts: Dict[int, int] = {}
    for s in asyncio.run(run()):
        counts[s] = counts.get(s, 0) + 1
    return counts


def secs_up(ms: int) -> int:
    """tollgate's Retry-After: whole seconds rounded up, at least 1."""
    return max(1, -(-ms // 1000))


def direct_check(tollgate_url: str, key: str, limits: List[str], algorithm: str) -> dict:
    """tollgate's own answer for a key (a denied check charges nothing)."""
    r = httpx.post(tollgate_url + "/v1/check", json={"key": key, "limits": limits, "algorithm": algorithm})
    assert r.status_code == 200, r.text
    return r.json()
