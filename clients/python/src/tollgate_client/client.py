"""The clients: `Client` (sync, for Django) and `AsyncClient` (for
FastAPI/Starlette), over one kept-alive `httpx` connection pool each.

Both build their calls and read the answers in `_Calls`; they differ only in
whether they await. A 4xx from tollgate (a bad key, a cost above a limit) is
raised as `TollgateError`; a connection error, a timeout or a 5xx means
tollgate is unreachable, and `on_unreachable` decides (`fallback.py`). A
report (`report()`) made while tollgate is unreachable is lost: it returns
None, and the outage is logged as for checks.
"""

from typing import Any, Dict, Optional, Sequence, Union
from urllib.parse import urlsplit

import httpx

from .decision import Decision, Reported
from .errors import ConfigError, TollgateError
from .fallback import Health, LocalLimiter, check_policy, fallback_decision
from .rates import parse_rate

Limits = Union[str, Sequence[str], None]
# Short: tollgate answers in about a millisecond, and waiting longer only
# holds the app's request; past it the fallback decides.
DEFAULT_TIMEOUT = 0.5
ALGORITHMS = ("fixed_window", "sliding_window", "sliding_log", "gcra")


def check_url(url: Optional[str], name: str = "url") -> str:
    if not url:
        raise ConfigError(f"{name} is missing: tollgate's address, e.g. 'http://127.0.0.1:8080'")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name}: {url!r} is not an http(s) URL such as 'http://127.0.0.1:8080'")
    return url.rstrip("/")


class _Calls:
    """Settings, checked once, and the body and answer of every call."""

    def __init__(self, url: Optional[str], admin_url: Optional[str], admin_token: Optional[str],
                 timeout: float, on_unreachable: str, fallback_workers: int,
                 retry_interval: float) -> None:
        self.url = check_url(url)
        self.admin_url = check_url(admin_url, "admin_url") if admin_url else None
        self.admin_token = admin_token
        if not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigError(f"timeout: {timeout!r} must be a number of seconds above 0")
        self.timeout = float(timeout)
        self.health = Health(self.url, check_policy(on_unreachable), retry_interval)
        self.local = LocalLimiter(fallback_workers)

    def check_body(self, key: str, limits: Limits, rule: Optional[str], cost: int,
                   algorithm: Optional[str], burst: Optional[int]) -> Dict[str, Any]:
        body: Dict[str, Any] = {"key": key, "cost": cost}
        if rule is not None:
            body["rule"] = rule
        if limits is not None:
            body["limits"] = list(self.limits(limits))
        if algorithm is not None:
            if algorithm not in ALGORITHMS:
                raise ConfigError(f"algorithm: {algorithm!r} is not one of {', '.join(ALGORITHMS)}")
            body["algorithm"] = algorithm
        if burst is not None:
            body["burst"] = burst
        return body

    @staticmethod
    def limits(limits: Union[str, Sequence[str]]) -> Sequence[str]:
        items = [limits] if isinstance(limits, str) else list(limits)
        return [parse_rate(t, f"limits[{i}]").text for i, t in enumerate(items)]

    def admin(self, path: str) -> str:
        if self.admin_url is None:
            raise ConfigError("admin_url is missing: the reads are on tollgate's admin listener, e.g. 'http://127.0.0.1:8081'")
        return self.admin_url + path

    def admin_headers(self) -> Dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"} if self.admin_token else {}

    def decision(self, r: "Optional[httpx.Response]", err: Optional[Exception],
                 body: Dict[str, Any]) -> Decision:
        """The answer to a check: tollgate's, or the fallback's when it failed."""
        if r is not None and r.status_code == 200:
            self.health.answered()
            return Decision.from_json(r.json())
        if r is not None and 400 <= r.status_code < 500:
            self.health.answered()
            raise _refused(r)
        if r is not None or err is not None:  # else not tried: tollgate is down
            self.health.failed(f"HTTP {r.status_code}" if r is not None else _reason(err))
        self.health.fallback_total += 1
        return fallback_decision(self.health.policy, self.local, body["key"],
                                 body.get("limits"), body["cost"])

    @staticmethod
    def report_body(rule: str, client: Optional[str], key: Optional[str], cost: int) -> Dict[str, Any]:
        """tollgate checks the rest (one of client or key, the rule, the cost)
        and names the field of anything wrong: `TollgateError`."""
        body: Dict[str, Any] = {"rule": rule, "cost": cost}
        if client is not None:
            body["client"] = client
        if key is not None:
            body["key"] = key
        return body

    def reported(self, r: "Optional[httpx.Response]", err: Optional[Exception]) -> Optional[Reported]:
        """The report's answer; None while tollgate cannot take it (the
        failure is not counted: a login view must not fail for it)."""
        if r is None or r.status_code >= 500:
            self.health.failed(f"HTTP {r.status_code}" if r is not None else _reason(err))
            return None
        self.health.answered()
        return Reported.from_json(self.ok(r))

    def heartbeat_answer(self, r: "Optional[httpx.Response]", err: Optional[Exception]) -> bool:
        """True once recorded; False while tollgate (or its Redis: 503) cannot
        record it, since presence is best effort; a 4xx (a bad id) raises."""
        if r is None or r.status_code >= 500:
            self.health.failed(f"HTTP {r.status_code}" if r is not None else _reason(err))
            return False
        self.health.answered()
        self.ok(r)
        return True

    def ok(self, r: httpx.Response) -> Any:
        if r.status_code >= 400:
            raise _refused(r)
        return r.json() if r.content else None


def _refused(r: httpx.Response) -> TollgateError:
    try:
        j = r.json()
        return TollgateError(r.status_code, str(j.get("field")), str(j.get("error")))
    except ValueError:
        return TollgateError(r.status_code, "(body)", r.text[:200])


def _reason(err: Optional[Exception]) -> str:
    return f"{type(err).__name__}: {err}" if err else "no answer"


def _pool() -> httpx.Limits:
    return httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30)


class _Settings:
    """What both clients take. `url` is tollgate's decision listener
    (`server.listen`); `admin_url` its admin listener, for the activity reads;
    `on_unreachable`, `fallback_workers`, `retry_interval`: `fallback.py`."""

    def __init__(self, url: Optional[str], *, admin_url: Optional[str] = None,
                 admin_token: Optional[str] = None, timeout: float = DEFAULT_TIMEOUT,
                 on_unreachable: str = "local", fallback_workers: int = 1,
                 retry_interval: float = 1.0) -> None:
        self._c = _Calls(url, admin_url, admin_token, timeout, on_unreachable,
                         fallback_workers, retry_interval)
        self._open(self._c.timeout)

    def _open(self, timeout: float) -> None:
        raise NotImplementedError

    @property
    def health(self) -> Health:
        """Whether tollgate answers, and the outage counters."""
        return self._c.health


class Client(_Settings):
    """Sync client, for Django and other threaded apps (thread-safe)."""

    def _open(self, timeout: float) -> None:
        self._http = httpx.Client(timeout=timeout, limits=_pool())

    def check(self, key: str, limits: Limits = None, *, rule: Optional[str] = None, cost: int = 1,
              algorithm: Optional[str] = None, burst: Optional[int] = None) -> Decision:
        """`POST /v1/check` by `rule` or with ad-hoc `limits` ("5/m", "100/day")."""
        body = self._c.check_body(key, limits, rule, cost, algorithm, burst)
        if not self._c.health.should_try():
            return self._c.decision(None, None, body)
        try:
            r = self._http.post(self._c.url + "/v1/check", json=body)
        except httpx.HTTPError as e:
            return self._c.decision(None, e, body)
        return self._c.decision(r, None, body)

    def heartbeat(self, id: Optional[str] = None) -> bool:
        """`POST /v1/heartbeat` (the client is `id`, else this app's address).
        False when tollgate is unreachable: presence is best effort."""
        try:
            r = self._http.post(self._c.url + "/v1/heartbeat", json={"id": id} if id else None)
        except httpx.HTTPError as e:
            return self._c.heartbeat_answer(None, e)
        return self._c.heartbeat_answer(r, None)

    def report(self, rule: str, *, client: Optional[str] = None, key: Optional[str] = None,
               cost: int = 1) -> Optional[Reported]:
        """`POST /v1/report`: charge `cost` units of `rule` (a rule with
        `count = "reported"`) for `client` (an address; the rule keyed by ip)
        or `key` (as the rule builds it), e.g. after a wrong password. None
        when tollgate is unreachable; a 4xx raises `TollgateError`."""
        body = self._c.report_body(rule, client, key, cost)
        try:
            r = self._http.post(self._c.url + "/v1/report", json=body)
        except httpx.HTTPError as e:
            return self._c.reported(None, e)
        return self._c.reported(r, None)

    def online(self, within: str = "10m") -> int:
        """Clients whose last heartbeat is within `within`, across replicas."""
        r = self._http.get(self._c.admin("/v1/activity/online"), params={"within": within},
                           headers=self._c.admin_headers())
        return int(self._c.ok(r)["online"])

    def online_list(self, within: str = "10m") -> Any:
        """Who is online (needs `admin_token`): the answer with `clients`."""
        r = self._http.get(self._c.admin("/v1/activity/online"),
                           params={"within": within, "list": "true"}, headers=self._c.admin_headers())
        return self._c.ok(r)

    def active(self, days: int = 7) -> int:
        """Distinct clients that sent a heartbeat on the last `days` UTC days."""
        r = self._http.get(self._c.admin("/v1/activity/active"), params={"days": days},
                           headers=self._c.admin_headers())
        return int(self._c.ok(r)["active"])

    def close(self) -> None:
        self._http.close()


class AsyncClient(_Settings):
    """`Client`'s twin for asyncio apps; the same arguments and methods, awaited."""

    def _open(self, timeout: float) -> None:
        self._http = httpx.AsyncClient(timeout=timeout, limits=_pool())

    async def check(self, key: str, limits: Limits = None, *, rule: Optional[str] = None,
                    cost: int = 1, algorithm: Optional[str] = None,
                    burst: Optional[int] = None) -> Decision:
        body = self._c.check_body(key, limits, rule, cost, algorithm, burst)
        if not self._c.health.should_try():
            return self._c.decision(None, None, body)
        try:
            r = await self._http.post(self._c.url + "/v1/check", json=body)
        except httpx.HTTPError as e:
            return self._c.decision(None, e, body)
        return self._c.decision(r, None, body)

    async def heartbeat(self, id: Optional[str] = None) -> bool:
        try:
            r = await self._http.post(self._c.url + "/v1/heartbeat", json={"id": id} if id else None)
        except httpx.HTTPError as e:
            return self._c.heartbeat_answer(None, e)
        return self._c.heartbeat_answer(r, None)

    async def report(self, rule: str, *, client: Optional[str] = None,
                     key: Optional[str] = None, cost: int = 1) -> Optional[Reported]:
        body = self._c.report_body(rule, client, key, cost)
        try:
            r = await self._http.post(self._c.url + "/v1/report", json=body)
        except httpx.HTTPError as e:
            return self._c.reported(None, e)
        return self._c.reported(r, None)

    async def online(self, within: str = "10m") -> int:
        r = await self._http.get(self._c.admin("/v1/activity/online"), params={"within": within},
                                 headers=self._c.admin_headers())
        return int(self._c.ok(r)["online"])

    async def online_list(self, within: str = "10m") -> Any:
        r = await self._http.get(self._c.admin("/v1/activity/online"),
                                 params={"within": within, "list": "true"},
                                 headers=self._c.admin_headers())
        return self._c.ok(r)

    async def active(self, days: int = 7) -> int:
        r = await self._http.get(self._c.admin("/v1/activity/active"), params={"days": days},
                                 headers=self._c.admin_headers())
        return int(self._c.ok(r)["active"])

    async def aclose(self) -> None:
        await self._http.aclose()
