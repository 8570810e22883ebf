"""How a stored record reads at a given instant: overrides, their expiry, and the recovery ramp.

Everything time-dependent is evaluated when read, never by a timer or a writer: a forced
state ends and a ramp completes on time even if nobody writes to Redis again. The write
scripts in `breaker_client.store` apply the same rules in Lua; tests pin that they agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

from breaker_client.model import (
    ROW_FORCED,
    ROW_SHADOW_SINCE_MS,
    ROW_STATE,
    BreakerState,
    MonitorState,
    Record,
    RecordRow,
    State,
)

# A ramp starts by letting this share of calls through, like Envoy's slow-start
# `min_weight_percent`: a trickle probes the vendor at once instead of nothing for a while.
RAMP_START_SHARE = 0.1


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
        shadow=record.shadow_since_ms is not None,
        shadow_by=record.shadow_by or None,
        shadow_since_ms=record.shadow_since_ms,
    )


# A record compiled for `Breakers.is_open`, as a plain tuple (see `RecordRow` for why):
# `(static, until, share0, slope, after, row, shadow)`. `static` True: every call is refused.
# False: a recovery ramp, which refuses a call when `rng() >= share0 + slope * now` (its
# share is linear in time, so one multiply-add) and needs no end check: the share reaches 1
# at `until` and only grows after it, so from then on no call is refused (the sync thread's
# sweep drops the entry soon after). None: an override with an expiry (a share of -inf or
# +inf) before `until` (Unix s); from `until` on, `after` answers (None: evaluate `row`
# afresh). `shadow`: the record is in shadow mode, so a refusal is first checked by
# `shadow_lets`; False costs a refused call nothing more. A keyless record in shadow mode
# always has an entry (a ramp that never refuses, while closed): it covers every key of its
# name.
Entry = tuple[bool | None, float, float, float, bool | None, RecordRow, bool]  # see above
STATIC: Final = 0
UNTIL: Final = 1
SHARE0: Final = 2
SLOPE: Final = 3
AFTER: Final = 4
ROW: Final = 5
SHADOW: Final = 6


def compile_entry(row: RecordRow, now_ms: int) -> Entry | None:
    """The hot-path entry for `row`, or None when it can never refuse a call from now on."""
    shadow = row[ROW_SHADOW_SINCE_MS] is not None
    if row[ROW_STATE] == "closed" and row[ROW_FORCED] is None and not shadow:  # the common case
        return None
    timed = _compile(Record(*row), row, now_ms)
    if timed is None:
        # A keyless breaker in shadow mode marks its whole name even while it lets all through.
        return (
            (False, math.inf, math.inf, 0.0, False, row, True)
            if shadow and row[1] is None
            else None
        )
    return (*timed, shadow)


# `Entry` without its `shadow` flag: what the time-dependent rules alone decide.
Timed = tuple[bool | None, float, float, float, bool | None, RecordRow]


def _compile(record: Record, row: RecordRow, now_ms: int) -> Timed | None:
    if override_active(record, now_ms):
        if record.forced_until_ms is None:
            return (True, math.inf, 0.0, 0.0, True, row) if record.forced == "open" else None
        share = -math.inf if record.forced == "open" else math.inf
        ends = record.forced_until_ms
        after: bool | None = {"open": True, "closed": False}.get(monitor_state(record, ends))
        return (None, ends / 1000, share, 0.0, after, row)
    mon = monitor_state(record, now_ms)
    if mon == "open":
        return (True, math.inf, 0.0, 0.0, True, row)
    if mon == "recovering" and record.ramp_ms > 0:
        start, window = (record.since_ms or 0) / 1000, record.ramp_ms / 1000
        slope = (1.0 - RAMP_START_SHARE) / window
        return (False, start + window, RAMP_START_SHARE - slope * start, slope, False, row)
    return None


def shadow_lets(entry: Entry, keyless: Entry | None, now_ms: int) -> bool:
    """Whether shadow mode lets through a call that `entry` refuses: the breaker or its
    keyless breaker is in shadow mode, and no person holds this breaker forced open (an
    override is a decision about the vendor, not a monitor still being tuned)."""
    if not entry[SHADOW] and (keyless is None or not keyless[SHADOW]):
        return False
    row = entry[ROW]
    return not (row[ROW_FORCED] == "open" and override_active(Record(*row), now_ms))


def timed_denies(entry: Entry, now: float, rng: Callable[[], float]) -> bool:
    """The slow path of a timed entry past `until` whose `after` is not known in advance."""
    fresh = _compile(Record(*entry[ROW]), entry[ROW], int(now * 1000))
    if fresh is None:
        return False
    if fresh[STATIC]:
        return True
    return now < fresh[UNTIL] and rng() >= fresh[SHARE0] + fresh[SLOPE] * now


def denies(entry: Entry, now: float, rng: Callable[[], float]) -> bool:
    """Whether a timed entry refuses a call at `now` (`Breakers.is_open` inlines only a ramp's
    rule, the common timed entry, and calls this for an override that ends)."""
    if now < entry[UNTIL]:
        return rng() >= entry[SHARE0] + entry[SLOPE] * now
    if entry[AFTER] is None:
        return timed_denies(entry, now, rng)
    return entry[AFTER]
