"""Reading what a person or script sent (query strings, forms, JSON), strictly: every bad
value is refused with a message that names the field, what was expected and what came."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from router.config import parse_duration
from router.errors import ConfigError
from router.ui.data import DEFAULT_LIMIT, MAX_LIMIT, STATUSES, Filters, Status
from router.ui.security import Refused

# A filter or reason longer than this is a paste gone wrong.
MAX_TEXT_CHARS = 500
FILTER_FIELDS = ("breaker", "monitor", "callback")


def check_known(given: Iterable[str], allowed: Iterable[str], *, what: str) -> None:
    known = set(allowed)
    unknown = sorted(set(given) - known)
    if unknown:
        raise Refused(
            f"unknown {what} {', '.join(repr(u) for u in unknown)}; "
            f"expected {', '.join(sorted(known)) or 'none'}",
            400,
        )


def text(values: Mapping[str, Any], field: str, *, required: bool = False) -> str:
    value = values.get(field, "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise Refused(f"{field}: expected a string, got {type(value).__name__}", 422)
    value = value.strip()
    if required and not value:
        raise Refused(f"{field}: required", 422)
    if len(value) > MAX_TEXT_CHARS:
        raise Refused(f"{field}: at most {MAX_TEXT_CHARS} characters, got {len(value)}", 422)
    return value


def filters(args: Mapping[str, str]) -> Filters:
    return Filters(**{field: text(args, field) for field in FILTER_FIELDS})


def limit(args: Mapping[str, str]) -> int:
    raw = args.get("limit")
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise Refused(f"limit: expected a whole number from 1 to {MAX_LIMIT}, got {raw!r}", 400)
    return value


def status(args: Mapping[str, str]) -> Status | None:
    raw = args.get("status") or ""
    if not raw:
        return None
    if raw not in STATUSES:
        raise Refused(f"status: expected one of {', '.join(STATUSES)}, got {raw!r}", 400)
    return raw


def breaker_key(values: Mapping[str, Any]) -> str | None:
    """The breaker's key, or None for the keyless breaker (an empty key means none)."""
    return text(values, "key") or None


def expiry(values: Mapping[str, Any], field: str) -> float | None:
    """`30m`, `2h`, `1d`, a number of seconds, or nothing for an override until cleared."""
    raw = values.get(field)
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise Refused(f"{field}: expected a duration such as 30m or 2h, got {raw!r}", 422)
    try:
        seconds = parse_duration(str(raw), name=field)
    except ConfigError as exc:
        raise Refused(str(exc), 422) from exc
    if seconds <= 0:
        raise Refused(f"{field}: must be longer than zero, got {raw!r}", 422)
    return seconds
