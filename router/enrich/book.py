"""Bookkeeping of Datadog API answers: call counts, gates, rate limits, failures, and the logs.

A gate is the clock time before which no call of an operation is made: a 429's reset, a used-up
window, an outage cooldown, or a pause after refused keys. Logging happens here, once per cause
or episode, so a storm of failing deliveries yields a handful of lines, not thousands.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from router.enrich.api import (
    DatadogApiError,
    DatadogAuthError,
    DatadogProtocolError,
    DatadogRateLimited,
    DatadogUnavailable,
    RateLimitInfo,
    exhausted_for,
)

logger = logging.getLogger(__name__)

# Distinct unreadable-answer causes remembered for logging each once; a bound, not a knob.
MAX_LOGGED_CAUSES = 100


def iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).isoformat(timespec="seconds")


GateKind = Literal["rate", "outage", "auth"]


@dataclass(frozen=True)
class Gate:
    """No call of an operation before `until` (clock), and why.

    `rate` (a 429 or a used-up window): worth waiting for if the budget allows. `outage`: only
    the caller whose own call failed waits for one more try; others fail fast meanwhile.
    `auth`: never worth waiting for.
    """

    until: float
    reason: str
    kind: GateKind


@dataclass
class _AuthFailure:
    operation: str
    status: int | None
    message: str
    since: float
    count: int = 1


class ApiBook:
    """Thread-safe bookkeeping of API answers: call counts, gates, rate limits, failures.

    A gate is the clock time before which no call of an operation is made (a 429's reset, an
    exhausted window, an outage cooldown). Logging happens here, once per cause or episode.
    """

    def __init__(self, clock: Callable[[], float], wall_clock: Callable[[], float]) -> None:
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self._gates: dict[str, Gate] = {}
        self._rate_limits: dict[str, tuple[RateLimitInfo, float]] = {}
        self._auth: dict[tuple[str, int | None, str], _AuthFailure] = {}
        self._outages: dict[str, tuple[str, float]] = {}
        self._logged_causes: set[tuple[str, str]] = set()

    def count(self, operation: str) -> None:
        with self._lock:
            self.calls[operation] += 1

    def gate(self, operation: str) -> Gate | None:
        """Why `operation` may not be called now, or None."""
        with self._lock:
            gate = self._gates.get(operation)
        return gate if gate is not None and gate.until > self._clock() else None

    def _close_gate(self, operation: str, wait_s: float, reason: str, kind: GateKind) -> None:
        until = self._clock() + wait_s
        current = self._gates.get(operation)
        if current is None or current.until < until:
            self._gates[operation] = Gate(until, reason, kind)

    def _note_rate_limit(self, operation: str, info: RateLimitInfo | None) -> None:
        if info is not None:
            self._rate_limits[info.name or operation] = (info, self._wall())

    def succeeded(self, operation: str, info: RateLimitInfo | None) -> None:
        with self._lock:
            self._note_rate_limit(operation, info)
            exhausted = exhausted_for(info)
            if exhausted is not None:
                name = info.name if info is not None and info.name else operation
                self._close_gate(operation, exhausted, f"rate limit {name} used up", "rate")
            recovered_auth = [key for key in self._auth if key[0] == operation]
            for key in recovered_auth:
                del self._auth[key]
            outage = self._outages.pop(operation, None)
        if recovered_auth:
            logger.info("Datadog accepts the router's keys for %s again", operation)
        if outage is not None:
            logger.info("Datadog answers %s again (failing since %s)", operation, iso(outage[1]))

    def failed(
        self, operation: str, exc: DatadogApiError, *, cooldown_s: float, auth_retry_s: float
    ) -> None:
        log: Callable[[], None] | None = None
        with self._lock:
            self._note_rate_limit(operation, exc.rate_limit)
            exhausted = exhausted_for(exc.rate_limit)
            if exhausted is not None and not isinstance(exc, DatadogRateLimited):
                # An error answer (a 404 while an event is indexed, a 403) still uses up the
                # window: `Remaining: 0` holds for it as for a success.
                info = exc.rate_limit
                name = info.name if info is not None and info.name else operation
                self._close_gate(operation, exhausted, f"rate limit {name} used up", "rate")
            if isinstance(exc, DatadogRateLimited):
                name = exc.rate_limit.name if exc.rate_limit and exc.rate_limit.name else operation
                current = self._gates.get(operation)
                newly = current is None or current.until <= self._clock()
                self._close_gate(operation, exc.reset_s, f"rate limit {name}", "rate")
                if newly:
                    log = lambda: logger.warning(  # noqa: E731
                        "Datadog rate limit %s reached (%s): no %s call for %.0fs",
                        name, exc, operation, exc.reset_s,
                    )  # fmt: skip
            elif isinstance(exc, DatadogUnavailable):
                self._close_gate(
                    operation, cooldown_s, f"Datadog API unavailable ({exc})", "outage"
                )
                if operation not in self._outages:
                    self._outages[operation] = (str(exc), self._wall())
                    log = lambda: logger.warning(  # noqa: E731
                        "Datadog API unavailable for %s: %s; deliveries go out partial "
                        "and the API is asked again at most every %.0fs",
                        operation, exc, cooldown_s,
                    )  # fmt: skip
            elif isinstance(exc, DatadogProtocolError):
                # An answer the router cannot read (a body the client cannot deserialise, not
                # a monitor, another 4xx): asking again at once would read the same, so it
                # counts as an outage; logged once per cause, not per delivery.
                self._close_gate(
                    operation, cooldown_s, f"Datadog's answer could not be read ({exc})", "outage"
                )
                if operation not in self._outages:
                    self._outages[operation] = (str(exc), self._wall())
                cause = (operation, str(exc))
                if cause not in self._logged_causes:
                    if len(self._logged_causes) >= MAX_LOGGED_CAUSES:
                        self._logged_causes.clear()
                    self._logged_causes.add(cause)
                    log = lambda: logger.warning(  # noqa: E731
                        "Datadog answered %s with something the router cannot read: %s; "
                        "deliveries go out without it and the API is asked again at most "
                        "every %.0fs. Logged once per cause.",
                        operation, exc, cooldown_s,
                    )  # fmt: skip
            elif isinstance(exc, DatadogAuthError):
                self._close_gate(
                    operation, auth_retry_s, f"Datadog refused the router's keys ({exc})", "auth"
                )
                key = (operation, exc.status, str(exc))
                failure = self._auth.get(key)
                if failure is not None:
                    failure.count += 1
                else:
                    self._auth[key] = _AuthFailure(operation, exc.status, str(exc), self._wall())
                    log = lambda: logger.error(  # noqa: E731
                        "DATADOG CREDENTIALS REFUSED: %s. Deliveries go out without "
                        "enrichment until this is fixed: check DD_API_KEY, DD_APP_KEY, DD_SITE "
                        "and that the application key has the scopes monitors_read and "
                        "events_read (docs/datadog.md). Logged once per cause.",
                        exc,
                    )  # fmt: skip
        if log is not None:
            log()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            now = self._clock()
            return {
                "calls": dict(self.calls),
                "auth_failures": [
                    {
                        "operation": f.operation,
                        "status": f.status,
                        "message": f.message,
                        "since": iso(f.since),
                        "count": f.count,
                    }
                    for f in self._auth.values()
                ],
                "outages": {
                    op: {"message": message, "since": iso(since)}
                    for op, (message, since) in self._outages.items()
                },
                "blocked": {
                    op: {"for_s": round(gate.until - now, 1), "reason": gate.reason}
                    for op, gate in self._gates.items()
                    if gate.until > now
                },
                "rate_limits": {
                    name: {
                        "limit": info.limit,
                        "period_s": info.period_s,
                        "remaining": info.remaining,
                        "reset_s": info.reset_s,
                        "observed_at": iso(seen),
                    }
                    for name, (info, seen) in self._rate_limits.items()
                },
            }
