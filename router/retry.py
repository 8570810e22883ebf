"""When to try a failed callback again: the configured schedule, jitter, and `Retry-After`."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# Spread retries of many deliveries that failed together, so a recovering endpoint is not hit
# by all of them in the same second (Svix uses the same ±20 %).
JITTER = 0.2
# A receiver may slow us down with Retry-After, but not park a delivery for a day.
MAX_RETRY_AFTER_S = 2 * 3600.0
# ASCII digits only: str.isdigit() also admits '²', which float() cannot read.
_SECONDS = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class RetryPolicy:
    """`schedule[n]` is the wait after the (n+1)-th failed attempt; past its end, give up."""

    schedule: tuple[float, ...]
    jitter: float = JITTER
    rng: Callable[[], float] = field(default=random.random, compare=False)

    @property
    def max_attempts(self) -> int:
        return len(self.schedule) + 1

    def next_delay(self, attempts_made: int, retry_after_s: float | None = None) -> float | None:
        """Seconds to wait before the next attempt, or None when attempts are exhausted."""
        if attempts_made < 1 or attempts_made > len(self.schedule):
            return None
        base = self.schedule[attempts_made - 1]
        delay = base * (1 + self.jitter * (2 * self.rng() - 1))
        if retry_after_s is not None:
            # Retry-After may lengthen a wait (up to a cap), never shorten the schedule's.
            delay = max(delay, min(retry_after_s, MAX_RETRY_AFTER_S))
        return max(delay, 0.0)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds: either a number of seconds or an HTTP date; None if unusable."""
    if not value:
        return None
    value = value.strip()
    if _SECONDS.fullmatch(value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(tz=UTC))).total_seconds(), 0.0)
