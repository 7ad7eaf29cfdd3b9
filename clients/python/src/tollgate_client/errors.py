"""The two errors the client raises; everything else is an answer."""


class ConfigError(ValueError):
    """A bad setting (an unknown rate unit, a missing URL, an unknown option).

    Raised where the setting is read, at startup: `Client(...)`, `limit(...)`,
    Django's `AppConfig.ready()` or a throttle's construction, never on the
    first request that happens to use it.
    """


class TollgateError(Exception):
    """tollgate refused the call itself (a 4xx: a key too long, a cost above a
    limit). A programming error, so it is raised, not treated as an outage."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(f"tollgate answered {status} about {field!r}: {message}")
        self.status = status
        self.field = field
        self.message = message
