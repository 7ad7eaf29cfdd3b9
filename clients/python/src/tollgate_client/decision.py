"""What `POST /v1/check` and `POST /v1/report` answer, and the HTTP headers an app sends from it.

The headers are spelled as tollgate's own `/check` spells them
(`src/http/response.rs`): `Retry-After` in whole seconds rounded up (at least
1), the IETF draft's `RateLimit-Policy: "name";q=5;w=60` and
`RateLimit: "name";r=3;t=42`, and `X-RateLimit-Limit/-Remaining/-Reset` of the
tightest limit.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping


@dataclass(frozen=True)
class LimitState:
    limit: int
    window_ms: int
    remaining: int
    reset_ms: int


def _secs(ms: int) -> int:
    """Whole seconds, rounded up, as tollgate rounds them."""
    return -(-ms // 1000)


@dataclass(frozen=True)
class Decision:
    """One answer. `source` is `"tollgate"`, or `"fallback"` when tollgate
    could not be reached and `on_unreachable` decided instead."""

    allowed: bool
    limit: int
    remaining: int
    reset_ms: int
    retry_after_ms: int
    limits: List[LimitState] = field(default_factory=list)
    source: str = "tollgate"

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "Decision":
        return cls(
            allowed=bool(body["allowed"]),
            limit=int(body["limit"]),
            remaining=int(body["remaining"]),
            reset_ms=int(body["reset_ms"]),
            retry_after_ms=int(body["retry_after_ms"]),
            limits=[LimitState(**{k: int(v) for k, v in s.items()}) for s in body.get("limits", [])],
        )

    @property
    def retry_after(self) -> float:
        """Seconds until a retry can pass (0 when allowed): DRF's `wait()`."""
        return self.retry_after_ms / 1000

    def headers(self, name: str) -> Dict[str, str]:
        """The headers of an answer about the limit called `name`: the
        RateLimit ones always, `Retry-After` when denied."""
        many = len(self.limits) > 1
        policy, state = [], []
        for s in self.limits:
            label = f"{name}:{s.limit}/{_secs(s.window_ms)}s" if many else name
            policy.append(f'"{label}";q={s.limit};w={_secs(s.window_ms)}')
            state.append(f'"{label}";r={s.remaining};t={_secs(s.reset_ms)}')
        h = {
            "RateLimit-Policy": ", ".join(policy),
            "RateLimit": ", ".join(state),
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(_secs(self.reset_ms)),
        }
        if not self.limits:
            del h["RateLimit-Policy"], h["RateLimit"]
        if not self.allowed:
            h["Retry-After"] = str(max(1, _secs(self.retry_after_ms)))
        return h


@dataclass(frozen=True)
class Reported:
    """What `POST /v1/report` did: `counted` False when the rule's counter
    was full already (the client is limited anyway; nothing was added);
    `remaining` of its tightest limit; `retry_after_ms` until it has room."""

    counted: bool
    remaining: int
    retry_after_ms: int

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "Reported":
        return cls(counted=bool(body["counted"]), remaining=int(body["remaining"]),
                   retry_after_ms=int(body["retry_after_ms"]))
