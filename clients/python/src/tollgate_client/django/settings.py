"""The `TOLLGATE` setting, checked once, and the one `Client` per process.

```python
TOLLGATE = {
    "URL": "http://127.0.0.1:8080",        # required: tollgate's decision listener
    "ADMIN_URL": "http://127.0.0.1:8081",  # for online()/active() (optional)
    "ADMIN_TOKEN": None,                   # for online_list() (optional)
    "TIMEOUT": 0.5,                        # seconds per call
    "ON_UNREACHABLE": "local",             # local | allow | deny
    "FALLBACK_WORKERS": 1,                 # "local": the limit is divided by this
    "ALGORITHM": "sliding_window",         # what DRF's rolling history is closest to
}
```

Every problem, in `TOLLGATE` or in `REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`,
is reported at once as `ImproperlyConfigured` naming the key.
"""

import threading
from typing import Any, Dict, List, Optional, Tuple

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from ..client import ALGORITHMS, Client
from ..errors import ConfigError
from ..rates import parse_rate

KNOWN = {"URL", "ADMIN_URL", "ADMIN_TOKEN", "TIMEOUT", "ON_UNREACHABLE", "FALLBACK_WORKERS",
         "ALGORITHM"}
DEFAULT_ALGORITHM = "sliding_window"

_lock = threading.Lock()
_cached: Optional[Tuple[Any, Client, str]] = None


def _read() -> Tuple[Client, str]:
    conf: Dict[str, Any] = getattr(settings, "TOLLGATE", None) or {}
    problems: List[str] = []
    for k in sorted(set(conf) - KNOWN):
        problems.append(f"TOLLGATE[{k!r}]: unknown key (known: {', '.join(sorted(KNOWN))})")
    algorithm = conf.get("ALGORITHM", DEFAULT_ALGORITHM)
    if algorithm not in ALGORITHMS:
        problems.append(f"TOLLGATE['ALGORITHM']: {algorithm!r} is not one of {', '.join(ALGORITHMS)}")
    rates = (getattr(settings, "REST_FRAMEWORK", None) or {}).get("DEFAULT_THROTTLE_RATES") or {}
    for scope, rate in rates.items():
        if rate is not None:
            try:
                parse_rate(rate, f"REST_FRAMEWORK['DEFAULT_THROTTLE_RATES'][{scope!r}]")
            except ConfigError as e:
                problems.append(str(e))
    c = None
    try:
        c = Client(conf.get("URL"), admin_url=conf.get("ADMIN_URL"),
                   admin_token=conf.get("ADMIN_TOKEN"), timeout=conf.get("TIMEOUT", 0.5),
                   on_unreachable=conf.get("ON_UNREACHABLE", "local"),
                   fallback_workers=conf.get("FALLBACK_WORKERS", 1))
    except ConfigError as e:
        problems.insert(0, f"TOLLGATE['{_setting_of(str(e))}']: {e}")
    if problems or c is None:
        raise ImproperlyConfigured("tollgate settings: " + "; ".join(problems))
    return c, algorithm


def _setting_of(message: str) -> str:
    """The TOLLGATE key a Client argument error is about."""
    arg = message.split(" ", 1)[0].rstrip(":")
    return arg.upper()


def client() -> Client:
    """The process's client, rebuilt when the settings change (tests)."""
    return _current()[0]


def algorithm() -> str:
    return _current()[1]


def _current() -> Tuple[Client, str]:
    global _cached
    key = (repr(getattr(settings, "TOLLGATE", None)),
           repr((getattr(settings, "REST_FRAMEWORK", None) or {}).get("DEFAULT_THROTTLE_RATES")))
    with _lock:
        if _cached is None or _cached[0] != key:
            c, alg = _read()
            _cached = (key, c, alg)
        return _cached[1], _cached[2]
