"""Datadog Webhooks integration payloads (default or our recommended custom one) to a Notification.

Datadog substitutes `$VARIABLES` textually, so every value arrives as a string and a variable
that does not apply stays as the literal `$NAME` or becomes empty. The default payload has no
monitor id or transition fields: those come from the links in the body and the title prefix.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal

from router.errors import PayloadError
from router.model import Notification, Transition, split_tags
from router.parsing.callbacks import extract_callback_urls
from router.parsing.datadog_text import (
    TitleTransition,
    event_link_ids,
    is_event_id,
    monitor_id_from_text,
    transition_from_name,
    transition_from_title,
)

# Our field names, each with the keys that may carry it, preferred first. The aliases come
# from hand-written templates seen in the wild (`event_id: $ID`, `event_tags: $TAGS`, ...).
_KEYS: dict[str, tuple[str, ...]] = {
    "id": ("id", "event_id"),
    "alert_id": ("alert_id", "monitor_id"),
    "alert_transition": ("alert_transition", "transition"),
    "alert_type": ("alert_type",),
    "alert_cycle_key": ("alert_cycle_key",),
    "alert_scope": ("alert_scope", "scope"),
    "title": ("title", "event_title"),
    "body": ("body", "event_msg", "text_only_msg", "message"),
    "date": ("date",),
    "tags": ("tags", "event_tags"),
    "link": ("link",),
    "org_id": ("org_id",),
    "event_type": ("event_type",),
}
# Ids may arrive as JSON numbers; anything else numeric would be a guess at what was meant.
_INT_ALLOWED = frozenset({"id", "alert_id", "org_id", "alert_cycle_key", "date"})

# `$ALERT_ID`, `$TAGS[env]`: a variable Datadog left unfilled.
_UNFILLED = re.compile(r"^\$[A-Z][A-Z0-9_]*(?:\[[^\]]*\])?$")
# ASCII digits only: `\d` also matches other scripts' digits, which `Decimal` would accept.
_EPOCH = re.compile(r"[0-9]+(?:\.[0-9]+)?")
# Longer than this is no epoch a sender means (13 digits of milliseconds, a few decimals).
_EPOCH_CHARS = 40
# A monitor id is a 64-bit integer: at most 20 digits.
_MONITOR_ID = re.compile(r"[0-9]{1,20}")
# Below this an epoch is in seconds: 10^11 s is the year 5138, 10^11 ms is March 1973.
_SECONDS_BELOW = 10**11
# A `date` later than this after receipt is refused: as a breaker's version it would block every
# real event after it. Old dates are harmless (an older event never overwrites a newer state).
_FUTURE_SLACK_MS = 24 * 60 * 60 * 1000
_EVENT_ID_EXPECTED = "expected a Datadog event id ($ID: at most 64 letters, digits, '_' or '-')"
# What a Notification keeps of the text (the queue stores one copy per callback URL).
MAX_MESSAGE_CHARS = 16_384
MAX_TITLE_CHARS = 1_024
TRUNCATED = "\u2026[truncated]"
_SHOWN_CHARS = 80


def parse_datadog_webhook(
    payload: Mapping[str, object], *, keyword: str, received_at_ms: int
) -> Notification:
    """Read a Datadog webhook payload; `PayloadError` (422) names the first field that is wrong."""
    body = _text(payload, "body")
    if body is None:
        raise PayloadError(
            "field 'body': expected the monitor message ($EVENT_MSG), got "
            + _absent_or(payload, "body")
        )
    title = _text(payload, "title") or ""
    titled = transition_from_title(title)
    transition, datadog_transition, renotification = _transition(payload, title, titled)

    # The event id comes only from `$ID` or `$LINK`: never from a link the user wrote into the
    # message, which would make different alerts share a dedup key.
    link = _text(payload, "link")
    event_id = _event_id(payload, link)
    monitor_id = _text(payload, "alert_id")
    if monitor_id is not None and not _MONITOR_ID.fullmatch(monitor_id):
        raise PayloadError(
            f"field {_key(payload, 'alert_id')!r}: expected the monitor id ($ALERT_ID, "
            f"at most 20 digits), got {_show(monitor_id)}"
        )
    if monitor_id is None:
        monitor_id = monitor_id_from_text(body)

    date = _text(payload, "date")
    event_time_ms = None if date is None else _epoch_ms(payload, date, received_at_ms)
    if event_id is not None:
        dedup_key = f"datadog:{event_id}:{transition}"
    else:
        # No id to name the event: a sender's byte-identical retry must still dedup.
        dedup_key = f"datadog:sha256:{_digest(payload)}"
    return Notification(
        source="datadog",
        dedup_key=dedup_key,
        transition=transition,
        datadog_transition=datadog_transition,
        renotification=renotification,
        title=_truncated(title, MAX_TITLE_CHARS),
        # Callback lines and the monitor link were read from the whole message above.
        message=_truncated(body, MAX_MESSAGE_CHARS),
        callback_urls=extract_callback_urls(body, keyword),
        received_at_ms=received_at_ms,
        event_id=event_id,
        monitor_id=monitor_id,
        event_time_ms=event_time_ms,
        tags=_tags(payload),
        scope=_text(payload, "alert_scope") or (titled.scope if titled else None),
        alert_cycle_key=_text(payload, "alert_cycle_key"),
        link=link,
        org_id=_text(payload, "org_id") or _org_id(payload),
        alert_type=_text(payload, "alert_type"),
        event_type=_text(payload, "event_type"),
    )


def _event_id(payload: Mapping[str, object], link: str | None) -> str | None:
    """`$ID`, else the id in the `$LINK` event link; `PayloadError` when either is no id."""
    event_id = _text(payload, "id")
    if event_id is not None:
        if not is_event_id(event_id):
            raise PayloadError(
                f"field {_key(payload, 'id')!r}: {_EVENT_ID_EXPECTED}, got {_show(event_id)}"
            )
        return event_id
    if link is None:
        return None
    found = list(event_link_ids(link))
    if not found:
        return None
    if not is_event_id(found[-1]):
        raise PayloadError(
            f"field {_key(payload, 'link')!r}: {_EVENT_ID_EXPECTED} in the event link, "
            f"got {_show(found[-1])} in {_show(link)}"
        )
    return found[-1]


def _truncated(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, saying so at the end when it was cut."""
    if len(text) <= limit:
        return text
    return text[: limit - len(TRUNCATED)] + TRUNCATED


def _transition(
    payload: Mapping[str, object], title: str, titled: TitleTransition | None
) -> tuple[Transition, str, bool]:
    """`$ALERT_TRANSITION` when Datadog filled it with a known name, else the title prefix."""
    named = _text(payload, "alert_transition")
    if named is not None:
        found = transition_from_name(named)
        if found:
            return found[0], " ".join(named.split()), found[1]
    if titled:
        return titled.transition, titled.datadog_transition, titled.renotification
    expected = (
        'a Datadog $ALERT_TRANSITION ("Triggered", "Re-Triggered", "Warn", "Re-Warn", '
        '"Recovered", "No Data", "Re-No Data", "Renotify") or a title that starts with one '
        'in brackets, like "[Triggered on {host:a}] ..."'
    )
    if named is not None:
        received = f"{_show(named)} and title {_show(title)}"
        field = _key(payload, "alert_transition")
    else:
        received = f"no transition field and title {_show(title)}"
        field = _key(payload, "title")
    raise PayloadError(f"field {field!r}: expected {expected}, got {received}")


def _text(payload: Mapping[str, object], name: str) -> str | None:
    """The stripped string under `name` or its aliases; None when absent, empty or unfilled."""
    key = _key(payload, name)
    return _string(key, payload.get(key), allow_int=name in _INT_ALLOWED)


def _string(key: str, value: object, *, allow_int: bool) -> str | None:
    if value is None:
        return None
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        # Ids exceed 2^53: kept as exact decimal text, never through float.
        return str(value)
    if not isinstance(value, str):
        expected = "a string or an integer" if allow_int else "a string"
        raise PayloadError(f"field {key!r}: expected {expected}, got {_show(value)}")
    return None if _is_blank(value) else value.strip()


def _key(payload: Mapping[str, object], name: str) -> str:
    """The first key for `name` that holds a value, or the preferred key when none does."""
    keys = _KEYS[name]
    for key in keys:
        value = payload.get(key)
        if value is not None and not (isinstance(value, str) and _is_blank(value)):
            return key
    return keys[0]


def _is_blank(value: str) -> bool:
    text = value.strip()
    return not text or bool(_UNFILLED.match(text))


def _absent_or(payload: Mapping[str, object], name: str) -> str:
    present = [key for key in _KEYS[name] if key in payload]
    if not present:
        return "no " + " / ".join(repr(key) for key in _KEYS[name]) + " field"
    return f"{_show(payload[present[0]])} in {present[0]!r}"


def _epoch_ms(payload: Mapping[str, object], text: str, received_at_ms: int) -> int:
    field = _key(payload, "date")
    if len(text) > _EPOCH_CHARS or not _EPOCH.fullmatch(text):
        raise PayloadError(
            f"field {field!r}: expected epoch milliseconds as a string, got {_show(text)}"
        )
    number = Decimal(text)
    milliseconds = number * 1000 if number < _SECONDS_BELOW else number
    if milliseconds > received_at_ms + _FUTURE_SLACK_MS:
        # The date itself may be past what a calendar can show (year 10000 and later).
        received = datetime.fromtimestamp(received_at_ms / 1000, tz=UTC)
        raise PayloadError(
            f"field {field!r}: {_show(text)} is in the future (more than a day after the "
            f"router received it at {received.isoformat(timespec='seconds')})"
        )
    return int(milliseconds)


def _tags(payload: Mapping[str, object]) -> tuple[str, ...]:
    key = _key(payload, "tags")
    value = payload.get(key)
    if isinstance(value, list):
        if not all(isinstance(tag, str) for tag in value):
            raise PayloadError(
                f"field {key!r}: expected comma-separated tags ($TAGS) or a list of strings, "
                f"got {_show(value)}"
            )
        return tuple(tag.strip() for tag in value if tag.strip())
    return split_tags(_text(payload, "tags"))


def _org_id(payload: Mapping[str, object]) -> str | None:
    """`org.id` of the default payload."""
    org = payload.get("org")
    if org is None:
        return None
    if not isinstance(org, Mapping):
        raise PayloadError(f"field 'org': expected an object with an 'id', got {_show(org)}")
    return _string("org.id", org.get("id"), allow_int=True)


def _digest(payload: Mapping[str, object]) -> str:
    canonical = json.dumps(
        dict(payload), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _show(value: object) -> str:
    """A received value as a sender would recognise it: JSON text, shortened."""
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "an array"
    shown = json.dumps(value, ensure_ascii=False, default=repr)
    return shown if len(shown) <= _SHOWN_CHARS else shown[: _SHOWN_CHARS - 1] + "\u2026"
