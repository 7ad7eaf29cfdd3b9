"""Rates as Django REST framework and tollgate write them, turned into the one
spelling tollgate parses (`src/rate.rs`): `COUNT/s|m|h|d` or `COUNT/<duration>`.

DRF reads only the first letter of the unit (`"100/day"`, `"3/minutes"`, and
also `"5/mango"`, which it takes as minutes). Here the unit must be one of the
words below, so a typo is an error at startup rather than a silent minute.
"""

import re
from typing import NamedTuple

from .errors import ConfigError

# Every unit word DRF users write, mapped explicitly to tollgate's unit.
_UNITS = {
    "s": "s", "sec": "s", "secs": "s", "second": "s", "seconds": "s",
    "m": "m", "min": "m", "mins": "m", "minute": "m", "minutes": "m",
    "h": "h", "hr": "h", "hrs": "h", "hour": "h", "hours": "h",
    "d": "d", "day": "d", "days": "d",
}  # fmt: skip
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# tollgate's own duration form: "100/30s", "10/2h", "5/250ms".
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")


class Rate(NamedTuple):
    """One limit: `limit` per `seconds`, written `text` for tollgate."""

    limit: int
    seconds: float
    text: str


def parse_rate(rate: str, where: str = "rate") -> Rate:
    """`"3/m"`, `"100/day"`, `"100/30s"` → a Rate; anything else is a
    ConfigError naming `where` (the setting it came from)."""
    if not isinstance(rate, str) or "/" not in rate:
        raise ConfigError(f'{where}: bad rate {rate!r}: expected COUNT/PERIOD, e.g. "5/m" or "100/day"')
    count_text, unit = (p.strip() for p in rate.split("/", 1))
    if not count_text.isdigit() or int(count_text) < 1:
        raise ConfigError(f"{where}: bad rate {rate!r}: the count must be a whole number of at least 1")
    count = int(count_text)
    if unit.lower() in _UNITS:
        u = _UNITS[unit.lower()]
        return Rate(count, float(_SECONDS[u]), f"{count}/{u}")
    m = _DURATION.match(unit)
    if m and int(m.group(1)) >= 1:
        n, u = int(m.group(1)), m.group(2)
        seconds = n / 1000 if u == "ms" else float(n * _SECONDS[u])
        return Rate(count, seconds, f"{count}/{n}{u}")
    raise ConfigError(
        f"{where}: bad rate {rate!r}: unknown unit {unit!r} "
        "(use s, sec, m, min, h, hour, d, day, their plurals, or a duration such as 30s, 2h)"
    )
