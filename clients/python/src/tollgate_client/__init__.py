"""tollgate from inside a Python app.

- `Client` / `AsyncClient` (`client.py`): `POST /v1/check`, reports
  (`POST /v1/report`), heartbeats, the online/active reads; what happens while tollgate is unreachable is
  `fallback.py`'s (default `"local"`, like tollgate's `on_redis_error`).
- `tollgate_client.django.throttling`: DRF throttles (`pip install tollgate-client[django]`).
- `tollgate_client.fastapi`: `limit()` dependency, `RateLimitMiddleware` (`[fastapi]`).
- `rates.py`: DRF's rate strings ("100/day") in tollgate's spelling ("100/d").
"""

from .client import AsyncClient, Client
from .decision import Decision, LimitState, Reported
from .errors import ConfigError, TollgateError
from .rates import Rate, parse_rate

__all__ = ["AsyncClient", "Client", "ConfigError", "Decision", "LimitState", "Rate",
           "Reported", "TollgateError", "parse_rate"]
