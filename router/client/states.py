"""How a stored record reads at a given instant: overrides, their expiry, and the recovery ramp.

Everything time-dependent is evaluated when read, never by a timer or a writer: a forced
state ends and a ramp completes on time even if nobody writes to Redis again. The write
scripts in `router.client.store` apply the same rules in Lua; tests pin that they agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

from router.client.model import BreakerState, MonitorState, Record, State

# A ramp starts by letting this share of calls through, like Envoy's slow-start
# `min_weight_percent`: a trickle probes the vendor at once instead of nothing for a while.
RAMP_START_SHARE = 0.1

_NO_OVERRIDE = -math.inf


def override_active(record: Record, now_ms: int) -> bool:
    if record.forced is None:
        return False
    return record.forced_until_ms is None or now_ms < record.forced_until_ms


def monitor_state(record: Record, now_ms: int) -> MonitorState:
    """The monitor's state now: a ramp whose window has passed reads as closed."""
    if record.state == "recovering":
        ends = (record.since_ms or 0) + record.ramp_ms
        return "closed" if now_ms >= ends else "recovering"
    if record.state == "open":
        return "open"
    return "closed"


def effective_state(record: Record, now_ms: int) -> State:
    if override_active(record, now_ms):
        return "forced_open" if record.forced == "open" else "forced_closed"
    return monitor_state(record, now_ms)


def ramp_share_at(elapsed_ms: float, window_ms: float) -> float:
    """Share of calls let through `elapsed_ms` into a ramp of `window_ms` (linear, any unit)."""
    if window_ms <= 0 or elapsed_ms >= window_ms:
        return 1.0
    progress = max(elapsed_ms, 0.0) / window_ms
    return RAMP_START_SHARE + (1.0 - RAMP_START_SHARE) * progress


def breaker_state(record: Record, now_ms: int) -> BreakerState:
    state = effective_state(record, now_ms)
    mon = monitor_state(record, now_ms)
    forced = state in ("forced_open", "forced_closed")
    share: float | None = None
    ramp_ends: int | None = None
    if mon == "recovering":
        ramp_ends = (record.since_ms or 0) + record.ramp_ms
        share = ramp_share_at(now_ms - (record.since_ms or 0), record.ramp_ms)
    return BreakerState(
        name=record.name,
        key=record.key,
        state=state,
        reason=record.forced_reason if forced else record.reason,
        source=f"person:{record.forced_by}" if forced else record.source,
        since_ms=record.forced_since_ms if forced else record.since_ms,
        monitor_state=mon,
        monitor_reason=record.reason,
        monitor_source=record.source,
        monitor_since_ms=record.since_ms,
        version=record.version,
        forced=forced,
        forced_by=record.forced_by if forced else None,
        expires_at_ms=record.forced_until_ms if forced else None,
        ramp_share=share,
        ramp_ends_at_ms=ramp_ends,
        updated_ms=record.updated_ms,
    )


class Entry:
    """A record compiled for `Breakers.is_open`: a few floats compared against the clock.

    `static` is the answer when it cannot change with time (an open breaker, an override
    without expiry); `None` means call `denies()`, which reads the clock and maybe the rng.
    """

    __slots__ = (
        "forced_open",
        "forced_until",
        "mon",
        "ramp_start",
        "ramp_window",
        "record",
        "static",
    )

    def __init__(self, record: Record, now_ms: int) -> None:
        self.record = record
        self.forced_open = record.forced == "open"
        if record.forced is None:
            self.forced_until = _NO_OVERRIDE
        elif record.forced_until_ms is None:
            self.forced_until = math.inf
        else:
            self.forced_until = record.forced_until_ms / 1000
        self.mon: MonitorState = cast(MonitorState, record.state)
        self.ramp_start = (record.since_ms or 0) / 1000
        self.ramp_window = record.ramp_ms / 1000
        self.static: bool | None = self._static(now_ms)

    def _static(self, now_ms: int) -> bool | None:
        active = override_active(self.record, now_ms)
        if active and self.forced_until == math.inf:
            return self.forced_open
        if active:
            return None  # the override ends at a known time
        mon = monitor_state(self.record, now_ms)
        if mon == "open":
            return True
        if mon == "recovering":
            return None
        return False

    def denies(self, clock: Callable[[], float], rng: Callable[[], float]) -> bool:
        """Whether this breaker refuses a call now; a ramp refuses a shrinking random share."""
        now = clock()
        if now < self.forced_until:
            return self.forced_open
        if self.mon == "open":
            return True
        if self.mon == "recovering":
            elapsed = now - self.ramp_start
            if elapsed >= self.ramp_window:
                return False
            return rng() >= ramp_share_at(elapsed, self.ramp_window)
        return False


def compile_entry(record: Record, now_ms: int) -> Entry | None:
    """The hot-path entry for `record`, or None when it can never refuse a call from now on."""
    entry = Entry(record, now_ms)
    if entry.static is False:
        return None
    return entry
