"""DRF throttles that ask tollgate: drop-in for DRF's own.

```python
REST_FRAMEWORK = {
    "DEFAULT_THROTTLE_CLASSES": [
        "tollgate_client.django.throttling.AnonRateThrottle",
        "tollgate_client.django.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {"anon": "100/day", "user": "1000/day"},
}
```

Each class is DRF's own with its scope, rate lookup and key (`get_cache_key`:
`throttle_anon_<address by NUM_PROXIES>`, `throttle_user_<pk>`,
`throttle_<scope>_<...>`), so keys and rates mean what they meant; only the
counting moves from the cache (a history list each worker reads and writes
without a lock) to one atomic call to tollgate (`POST /v1/check` with the key
and the rate as an ad-hoc limit). `wait()` is tollgate's `retry_after_ms`.
"""

from typing import Any, Optional, Tuple

from django.core.exceptions import ImproperlyConfigured
from rest_framework import throttling as drf

from ..decision import Decision
from ..errors import ConfigError
from ..rates import parse_rate
from . import settings as tg


class SimpleRateThrottle(drf.SimpleRateThrottle):
    """DRF's SimpleRateThrottle counted by tollgate; subclass it as DRF's
    (set `scope`, override `get_cache_key`)."""

    decision: Optional[Decision] = None
    tollgate_rate: Optional[str] = None

    def parse_rate(self, rate: Optional[str]) -> Tuple[Optional[int], Optional[float]]:
        if rate is None:
            return None, None
        try:
            r = parse_rate(rate, f"throttle rate of scope {getattr(self, 'scope', None)!r}")
        except ConfigError as e:
            raise ImproperlyConfigured(str(e)) from None
        self.tollgate_rate = r.text
        return r.limit, r.seconds

    def allow_request(self, request: Any, view: Any) -> bool:
        if self.rate is None or self.tollgate_rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        self.decision = tg.client().check(key, [self.tollgate_rate], algorithm=tg.algorithm())
        return self.decision.allowed

    def wait(self) -> Optional[float]:
        """Seconds until a request can pass: tollgate's `retry_after_ms`."""
        if self.decision is None or self.decision.allowed:
            return None
        return self.decision.retry_after


class AnonRateThrottle(drf.AnonRateThrottle, SimpleRateThrottle):
    """Anonymous requests by address (DRF's `get_ident`, `NUM_PROXIES`), scope `anon`."""


class UserRateThrottle(drf.UserRateThrottle, SimpleRateThrottle):
    """By user pk, anonymous ones by address, scope `user`."""


class ScopedRateThrottle(drf.ScopedRateThrottle, SimpleRateThrottle):
    """By the view's `throttle_scope`, then user pk or address."""


# Bad settings raise when DRF imports this module (URLconf loading, at
# startup), even without the app in INSTALLED_APPS.
tg.client()
