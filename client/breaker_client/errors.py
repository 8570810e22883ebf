"""One exception tree for `breaker_client`: callers catch `BreakerError` or one of its children."""

from __future__ import annotations

from datetime import UTC, datetime


class BreakerError(Exception):
    """Base of every error `breaker_client` raises on purpose."""


class BreakerOpen(BreakerError):
    """A guarded call was refused because a breaker is open (or ramping and this call lost).

    `name`/`key` are what the caller asked about; `breaker_key` is the breaker that refused,
    which is `None` when the whole vendor (the keyless breaker) is open.
    """

    def __init__(
        self,
        name: str,
        key: str | None,
        *,
        state: str,
        reason: str,
        since_ms: int | None,
        breaker_key: str | None,
    ) -> None:
        self.name = name
        self.key = key
        self.state = state
        self.reason = reason
        self.since_ms = since_ms
        self.breaker_key = breaker_key
        since = ""
        if since_ms is not None:
            when = datetime.fromtimestamp(since_ms / 1000, tz=UTC)
            since = f" since {when.isoformat(timespec='seconds')}"
        if key is not None and breaker_key is None:
            what = f"breaker {name}[{key}] refused: the whole-vendor breaker {name} is {state}"
        else:
            what = f"breaker {name if key is None else f'{name}[{key}]'} is {state}"
        super().__init__(f"{what}{since}: {reason or 'no reason given'}")


class BreakerStoreUnavailable(BreakerError):
    """Redis could not be reached or refused a write; nothing was changed, retry later (503)."""


class InvalidSignature(BreakerError):
    """A callback's Standard Webhooks headers are missing, stale, malformed or wrong (401)."""


class InvalidCallbackBody(BreakerError):
    """A signed callback body is not the JSON shape `router.callback_body` produces (422)."""
