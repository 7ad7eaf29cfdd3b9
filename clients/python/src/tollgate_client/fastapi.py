"""FastAPI / Starlette on tollgate.

```python
limiter = Limiter(url="http://127.0.0.1:8080")
@app.get("/items", dependencies=[Depends(limiter.limit("5/m", key=by_user))])
app.add_middleware(RateLimitMiddleware, limiter=limiter, rules=[PathRule("/api", "100/m")])
```

`limit()` (module level) uses a Limiter built from the `TOLLGATE_URL`
environment variable. A denied request gets 429 with `Retry-After` and the
RateLimit headers, built from tollgate's answer as tollgate's `/check` builds
them; an allowed one gets the RateLimit headers. Bad arguments (an unknown
rate unit, no URL) raise `ConfigError` when `limit()`, `PathRule()` or
`Limiter()` is called, i.e. while the app is built.

The default key is the client's address as Starlette sees it
(`request.client.host`): behind a proxy, run uvicorn with
`--proxy-headers --forwarded-allow-ips=<the proxy>` so that it is the client's.
"""

import inspect
import os
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Union

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .client import AsyncClient
from .decision import Decision
from .errors import ConfigError
from .rates import parse_rate

KeyFunc = Callable[[Request], Union[Optional[str], Awaitable[Optional[str]]]]


def client_address(request: HTTPConnection) -> Optional[str]:
    """The default key: `ip:<address>` (None, so no limit, without a peer)."""
    return f"ip:{request.client.host}" if request.client else None


async def _key_of(key: KeyFunc, request: Request) -> Optional[str]:
    k = key(request)
    if inspect.isawaitable(k):
        return await k
    return k


def _rates(limits: Union[str, Sequence[str]]) -> List[str]:
    items = [limits] if isinstance(limits, str) else list(limits)
    if not items:
        raise ConfigError("limits: give at least one rate such as '5/m'")
    return [parse_rate(t, f"limits[{i}]").text for i, t in enumerate(items)]


def too_many(decision: Decision, name: str) -> Response:
    return Response(status_code=429, headers=decision.headers(name))


class Limiter:
    """One AsyncClient and the dependencies built on it; arguments as `AsyncClient`."""

    def __init__(self, url: Optional[str] = None, **client_args: Any) -> None:
        self.client = AsyncClient(url, **client_args)

    def limit(self, limits: Union[str, Sequence[str]], *, key: KeyFunc = client_address,
              name: Optional[str] = None, cost: int = 1,
              algorithm: Optional[str] = None) -> Callable[..., Awaitable[None]]:
        """A dependency: `Depends(limiter.limit("5/m", key=...))`. The bucket is
        `name` (default: the route's path) plus the key."""
        rates = _rates(limits)
        client = self.client

        async def dependency(request: Request, response: Response) -> None:
            k = await _key_of(key, request)
            if k is None:
                return
            route = request.scope.get("route")
            label = name or getattr(route, "path", None) or request.url.path
            d = await client.check(f"{label}|{k}", rates, cost=cost, algorithm=algorithm)
            if not d.allowed:
                from fastapi import HTTPException

                raise HTTPException(status_code=429, detail="rate limited", headers=d.headers(label))
            response.headers.update(d.headers(label))

        return dependency

    def heartbeat(self, id: Optional[KeyFunc] = None) -> Callable[..., Awaitable[None]]:
        """A dependency that records the caller as online (by `id(request)`,
        else this app's address); never fails the request."""
        client = self.client

        async def dependency(request: Request) -> None:
            who = await _key_of(id, request) if id else None
            await client.heartbeat(who)

        return dependency


_default: Optional[Limiter] = None


def limit(limits: Union[str, Sequence[str]], *, key: KeyFunc = client_address,
          name: Optional[str] = None, cost: int = 1,
          algorithm: Optional[str] = None) -> Callable[..., Awaitable[None]]:
    """`Limiter(url=$TOLLGATE_URL).limit(...)`, the Limiter made once."""
    global _default
    if _default is None:
        url = os.environ.get("TOLLGATE_URL")
        if not url:
            raise ConfigError("TOLLGATE_URL is not set: tollgate's address, e.g. "
                              "'http://127.0.0.1:8080' (or use Limiter(url=...).limit)")
        _default = Limiter(url)
    return _default.limit(limits, key=key, name=name, cost=cost, algorithm=algorithm)


class PathRule:
    """A middleware rule: requests whose path is `prefix` or below it (whole
    segments, as tollgate's `path_prefix`), optionally only some methods."""

    def __init__(self, prefix: str, limits: Union[str, Sequence[str]], *,
                 key: KeyFunc = client_address, methods: Optional[Sequence[str]] = None,
                 name: Optional[str] = None) -> None:
        if not prefix.startswith("/"):
            raise ConfigError(f"prefix: {prefix!r} must start with '/'")
        self.prefix = prefix.rstrip("/")
        self.rates = _rates(limits)
        self.key = key
        self.methods = {m.upper() for m in methods} if methods else None
        self.name = name or prefix

    def matches(self, path: str, method: str) -> bool:
        if self.methods is not None and method.upper() not in self.methods:
            return False
        return path == self.prefix or path.startswith(self.prefix + "/") or not self.prefix


class RateLimitMiddleware:
    """ASGI middleware: every matching rule must pass (in order; the first
    denial answers 429). Allowed answers carry the RateLimit headers of the
    last rule that applied."""

    def __init__(self, app: ASGIApp, *, limiter: Limiter, rules: Sequence[PathRule]) -> None:
        self.app = app
        self.client = limiter.client
        self.rules = list(rules)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        headers: Dict[str, str] = {}
        for rule in self.rules:
            if not rule.matches(scope["path"], scope["method"]):
                continue
            k = await _key_of(rule.key, request)
            if k is None:
                continue
            d = await self.client.check(f"{rule.name}|{k}", rule.rates)
            if not d.allowed:
                await too_many(d, rule.name)(scope, receive, send)
                return
            headers = d.headers(rule.name)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and headers:
                raw = list(message.get("headers", []))
                raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
                message = {**message, "headers": raw}
            await send(message)

        await self.app(scope, receive, send_with_headers)
