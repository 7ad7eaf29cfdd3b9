"""What the client does while tollgate cannot be reached.

`on_unreachable` (default `"local"`) mirrors tollgate's own `on_redis_error`,
whose default is `"local"` and which ad-hoc limits of `POST /v1/check` always
use: an app that cannot reach tollgate is where tollgate is when it cannot
reach Redis, so it does the same thing. Each worker process enforces the limit
by itself (divided by `fallback_workers`, like tollgate's `fallback_replicas`):
an outage neither opens a login form to unlimited guessing (`"allow"`) nor
answers every request with a 429 (`"deny"`). `"allow"` and `"deny"` are there
for apps that prefer one of those.

The state is logged once on entering (`tollgate unreachable`) and once on
leaving (`tollgate reachable again`), with counters in `Health`.
"""

import logging
import threading
import time
from typing import Dict, Optional, Sequence, Tuple

from .decision import Decision, LimitState
from .errors import ConfigError
from .rates import Rate, parse_rate

log = logging.getLogger("tollgate_client")

POLICIES = ("local", "allow", "deny")
# Keys the local limiter holds at most; beyond, the oldest windows go first.
MAX_LOCAL_KEYS = 100_000


def check_policy(value: str) -> str:
    if value not in POLICIES:
        raise ConfigError(f"on_unreachable: {value!r} is not one of {', '.join(POLICIES)}")
    return value


class Health:
    """Whether tollgate answers, the one log line per change, and counters
    (`unreachable_total`: failed calls; `fallback_total`: decisions made here)."""

    def __init__(self, url: str, policy: str, retry_interval: float) -> None:
        self.url = url
        self.policy = policy
        self.retry_interval = retry_interval
        self.up = True
        self.unreachable_total = 0
        self.fallback_total = 0
        self._last_try = 0.0
        self._lock = threading.Lock()

    def should_try(self) -> bool:
        """While down, one call per `retry_interval` probes tollgate; the rest
        go straight to the fallback instead of each waiting for a timeout."""
        with self._lock:
            now = time.monotonic()
            if self.up or now - self._last_try >= self.retry_interval:
                self._last_try = now
                return True
            return False

    def failed(self, reason: str) -> None:
        with self._lock:
            self.unreachable_total += 1
            entering, self.up = self.up, False
        if entering:
            log.warning(
                "tollgate unreachable at %s (%s): deciding with on_unreachable=%s until it answers",
                self.url, reason, self.policy,
            )

    def answered(self) -> None:
        with self._lock:
            leaving, self.up = not self.up, True
        if leaving:
            log.warning("tollgate reachable again at %s", self.url)


class LocalLimiter:
    """A fixed window per (key, limit) in this process: the `"local"` policy."""

    def __init__(self, workers: int) -> None:
        if not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"fallback_workers: {workers!r} must be a whole number of at least 1")
        self.workers = workers
        self._windows: Dict[Tuple[str, str], Tuple[float, int]] = {}
        self._lock = threading.Lock()

    def check(self, key: str, rates: Sequence[Rate], cost: int) -> Decision:
        now = time.monotonic()
        with self._lock:
            states, denied_ms = [], 0
            for r in rates:
                start, used = self._windows.get((key, r.text), (now, 0))
                if now - start >= r.seconds:
                    start, used = now, 0
                share = max(1, r.limit // self.workers)
                reset_ms = int((start + r.seconds - now) * 1000)
                if used + cost > share:
                    denied_ms = max(denied_ms, reset_ms)
                states.append((r, start, used, share, reset_ms))
            allowed = denied_ms == 0
            out = []
            for r, start, used, share, reset_ms in states:
                if allowed:
                    used += cost
                    self._remember((key, r.text), (start, used))
                out.append(LimitState(share, int(r.seconds * 1000), max(0, share - used), reset_ms))
        tight = min(out, key=lambda s: s.remaining)
        return Decision(allowed, tight.limit, tight.remaining, tight.reset_ms,
                        0 if allowed else max(1, denied_ms), out, source="fallback")

    def _remember(self, k: Tuple[str, str], v: Tuple[float, int]) -> None:
        if k not in self._windows and len(self._windows) >= MAX_LOCAL_KEYS:
            del self._windows[next(iter(self._windows))]
        self._windows[k] = v


def fallback_decision(policy: str, local: LocalLimiter, key: str,
                      limits: Optional[Sequence[str]], cost: int) -> Decision:
    """The answer while tollgate is unreachable. A configured `rule` has
    limits only tollgate knows, so `"local"` allows those calls."""
    if policy == "local" and limits:
        return local.check(key, [parse_rate(t) for t in limits], cost)
    allowed = policy != "deny"
    return Decision(allowed, 0, 0, 0, 0 if allowed else 1000, [], source="fallback")
