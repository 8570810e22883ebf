"""`router breakers report`: when a breaker would have been open, and the calls it let through.

Pure code over what Redis holds: the breaker's history (each entry says what the monitor's
state became) and its shadow counts by minute (`breaker_client.shadow`). A period starts
when the monitor's state becomes `open` and ends when it leaves it (a recovery, which may
ramp). A minute's would-be refusals belong to the period that started last before it (the
ramp after a period is part of it), or to none when it is older than the first period.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from breaker_client.model import HistoryEntry
from breaker_client.shadow import BUCKET_MS


@dataclass(frozen=True)
class Period:
    """One stretch in which the monitor held the breaker open (`end_ms` None: still open)."""

    start_ms: int
    end_ms: int | None
    # The breaker was already open when the report's window began (`start_ms` is its start).
    open_before: bool
    refusals: int

    def duration_ms(self, now_ms: int) -> int:
        return (self.end_ms if self.end_ms is not None else now_ms) - self.start_ms


@dataclass(frozen=True)
class BreakerReport:
    name: str
    key: str | None
    shadow: bool
    since_ms: int
    now_ms: int
    periods: list[Period]
    # Would-be refusals in the window, and those of them in no period of it.
    refusals: int
    outside_periods: int
    # The oldest change held (None: none); later than `since_ms`, the history was trimmed
    # or the breaker is younger than the window.
    history_from_ms: int | None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for period, raw in zip(self.periods, data["periods"], strict=True):
            raw["duration_ms"] = period.duration_ms(self.now_ms)
        return data


def build_report(
    name: str,
    key: str | None,
    history: Iterable[HistoryEntry],
    buckets: Mapping[int, int],
    *,
    since_ms: int,
    now_ms: int,
    shadow: bool,
) -> BreakerReport:
    """The report of one breaker over `[since_ms, now_ms]`."""
    # By time, then by stream id: changes made in the same millisecond keep their order.
    entries = sorted(history, key=lambda e: (e.time_ms, *map(int, e.id.split("-"))))
    before = [e for e in entries if e.time_ms < since_ms]
    open_at = since_ms if before and before[-1].monitor_state == "open" else None
    spans: list[tuple[int, int | None, bool]] = []
    for entry in entries:
        if entry.time_ms < since_ms or entry.time_ms > now_ms:
            continue
        is_open = entry.monitor_state == "open"
        if is_open and open_at is None:
            open_at = entry.time_ms
        elif not is_open and open_at is not None:
            spans.append((open_at, entry.time_ms, open_at == since_ms and bool(before)))
            open_at = None
    if open_at is not None:
        spans.append((open_at, None, open_at == since_ms and bool(before)))

    counts = [0] * len(spans)
    outside = total = 0
    first_minute = since_ms - since_ms % BUCKET_MS
    for minute, calls in sorted(buckets.items()):
        if minute < first_minute or minute > now_ms:
            continue
        total += calls
        owner = None
        for index, (start, _, _) in enumerate(spans):
            if start - start % BUCKET_MS <= minute:
                owner = index
        if owner is None:
            outside += calls
        else:
            counts[owner] += calls
    periods = [
        Period(start, end, early, count)
        for (start, end, early), count in zip(spans, counts, strict=True)
    ]
    return BreakerReport(
        name=name,
        key=key,
        shadow=shadow,
        since_ms=since_ms,
        now_ms=now_ms,
        periods=periods,
        refusals=total,
        outside_periods=outside,
        history_from_ms=entries[0].time_ms if entries else None,
    )


def span(ms: int) -> str:
    """A duration as `3d04h`, `2h05m`, `12m30s` or `45s`."""
    seconds = max(0, ms // 1000)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
