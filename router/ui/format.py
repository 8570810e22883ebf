"""How the pages write times, durations and states: UTC with a relative time beside it."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

from flask import Blueprint, url_for

STATE_LABELS = {
    "open": "OPEN",
    "forced_open": "FORCED OPEN",
    "recovering": "RECOVERING",
    "forced_closed": "FORCED CLOSED",
    "closed": "closed",
}


def utc(ms: int | None) -> str:
    """`2026-11-22 14:25:32Z`, or `-`."""
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def clock(ms: int | None) -> str:
    """`14:25:32Z` (the full date is in the element's title)."""
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%H:%M:%SZ")


def word(status: str) -> str:
    """A one-word status as a tile shows it: `OK`, `Degraded`, `Never`."""
    return "OK" if status == "ok" else status.replace("_", " ").capitalize()


def iso(ms: int | None) -> str:
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def span(ms: float) -> str:
    """A length of time, rounded to what a person reads: `45s`, `12m`, `3h 5m`, `2d 4h`."""
    seconds = int(abs(ms) // 1000)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m" if minutes >= 10 or not seconds else f"{minutes}m {seconds}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def ago(ms: int | None, now: int) -> str:
    """`5m ago`, `in 2h`, or `-` (the page's script keeps it current)."""
    if not ms:
        return "-"
    delta = now - ms
    if abs(delta) < 1000:
        return "just now"
    return f"{span(delta)} ago" if delta > 0 else f"in {span(delta)}"


def latency(ms: int | None) -> str:
    if ms is None:
        return "-"
    return f"{ms} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"


def state_label(state: str) -> str:
    return STATE_LABELS.get(state, state)


def breaker_url(name: str, key: str | None) -> str:
    url = url_for("ui.breaker", name=name)
    return f"{url}?{urlencode({'key': key})}" if key is not None else url


def register_filters(bp: Blueprint) -> None:
    for function in (utc, clock, word, iso, span, ago, latency, state_label):
        bp.add_app_template_filter(function)
    bp.add_app_template_global(breaker_url)
