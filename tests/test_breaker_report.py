"""The report's arithmetic: periods from a breaker's history, would-be refusals by minute."""

from __future__ import annotations

from breaker_client import HistoryEntry

from router.breaker_report import build_report, span

MIN = 60_000
T = 1_700_000_000_000 - 1_700_000_000_000 % MIN  # a minute's start


def change(at_ms: int, monitor_state: str, seq: int = 0) -> HistoryEntry:
    return HistoryEntry.from_stream(
        f"{at_ms}-{seq}",
        {"time_ms": str(at_ms), "name": "bank-charge", "monitor_state": monitor_state},
    )


def test_periods_and_the_minutes_each_owns() -> None:
    history = [
        change(T - 90 * MIN, "open"),  # before the window: still open when it begins
        change(T - 30 * MIN, "recovering"),
        change(T + 10 * MIN, "open"),
        change(T + 15 * MIN, "recovering"),
        change(T + 40 * MIN, "open"),
    ]
    buckets = {
        T - 120 * MIN: 50,  # before the window: not reported
        T - 59 * MIN: 4,
        T - 29 * MIN: 1,  # the ramp after the first period belongs to it
        T + 10 * MIN: 7,
        T + 16 * MIN: 2,
        T + 41 * MIN: 3,
    }
    report = build_report(
        "bank-charge",
        None,
        list(reversed(history)),  # as Redis gives it: newest first
        buckets,
        since_ms=T - 60 * MIN,
        now_ms=T + 45 * MIN,
        shadow=True,
    )
    assert [(p.start_ms, p.end_ms, p.open_before, p.refusals) for p in report.periods] == [
        (T - 60 * MIN, T - 30 * MIN, True, 5),
        (T + 10 * MIN, T + 15 * MIN, False, 9),
        (T + 40 * MIN, None, False, 3),
    ]
    assert (report.refusals, report.outside_periods) == (17, 0)
    assert report.to_dict()["periods"][2]["duration_ms"] == 5 * MIN


def test_minutes_older_than_every_period_are_counted_apart() -> None:
    report = build_report(
        "bank-charge",
        "0001",
        [
            change(T - 200 * MIN, "recovering"),
            change(T + 5 * MIN, "open"),
            change(T + 5 * MIN, "closed", 1),
        ],
        {T - 10 * MIN: 6, T + 5 * MIN: 1},
        since_ms=T - 60 * MIN,
        now_ms=T + 60 * MIN,
        shadow=False,
    )
    assert [(p.start_ms, p.end_ms) for p in report.periods] == [(T + 5 * MIN, T + 5 * MIN)]
    assert (report.refusals, report.outside_periods) == (7, 6)


def test_durations_read_at_a_glance() -> None:
    assert [span(ms) for ms in (45_000, 750_000, 7_500_000, 3 * 86_400_000 + 4 * 3_600_000)] == [
        "45s",
        "12m30s",
        "2h05m",
        "3d04h",
    ]
