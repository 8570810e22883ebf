"""Datadog Webhooks integration payloads (default, recommended or any team's own) to a Notification.

Datadog substitutes `$VARIABLES` textually, so every value arrives as a string and a variable
that does not apply stays as the literal `$NAME` or becomes empty. The default payload has no
monitor id or transition fields: those come from the links in the body and the title prefix.

Templates vary: flat keys, camelCase keys, `alert: {...}` / `event: {...}` / `org: {...}`
objects beside or instead of flat keys, and with "Encode as form" those objects arrive as JSON
text. Datadog retries only on a 5xx, so a 4xx loses the alert: only what makes a notification
unusable (no message, no way to tell alert from recovery) is refused. A malformed optional field
is ignored and named in `Notification.warnings`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache

from router.errors import PayloadError
from router.model import Notification, Transition, split_tags
from router.parsing.callbacks import extract_callback_urls
from router.parsing.datadog_text import (
    TitleTransition,
    event_id_from_text,
    event_link_ids,
    is_event_id,
    monitor_id_from_text,
    transition_from_name,
    transition_from_title,
)

# Our field names, each with the paths that may carry it, preferred first. Keys are compared in
# snake case (`alertTransition` is `alert_transition`), `a.b` is key `b` of object `a` (or the
# form field `a[b]`). The aliases come from templates teams publish (`event_id: $ID`,
# `event_tags: $TAGS`, Komodor's `alert.cycleId`, `event.msg`, ...).
_PATHS: dict[str, tuple[str, ...]] = {
    "id": ("id", "event_id", "event.id"),
    "alert_id": ("alert_id", "monitor_id", "alert.id", "alert.monitor_id"),
    "alert_transition": ("alert_transition", "transition", "alert.transition"),
    "alert_type": ("alert_type", "alert.type"),
    "alert_cycle_key": ("alert_cycle_key", "alert.cycle_key", "alert.cycle_id"),
    "alert_scope": ("alert_scope", "scope", "alert.scope"),
    "title": ("title", "event_title", "event.title", "alert_title", "alert.title"),
    # `$EVENT_MSG` (with Datadog's links) before `$TEXT_ONLY_MSG`.
    "body": (
        "body",
        "event_msg",
        "event.msg",
        "event.body",
        "event.message",
        "event.text",
        "text_only_msg",
        "event.text_only_msg",
        "message",
        "text",
    ),
    "date": ("date", "event.date"),
    "tags": ("tags", "event_tags", "event.tags"),
    "link": ("link", "event.link"),
    "org_id": ("org_id", "org.id"),
    "event_type": ("event_type", "event.type"),
}
# Objects whose keys are read as `<object>.<key>`.
_OBJECTS = frozenset({"alert", "event", "org"})
# Ids may arrive as JSON numbers; anything else numeric would be a guess at what was meant.
_INT_ALLOWED = frozenset({"id", "alert_id", "org_id", "alert_cycle_key", "date"})
# A float is exact enough for epoch milliseconds (below 2^53), never for a 64-bit id.
_FLOAT_ALLOWED = frozenset({"date"})

# `$ALERT_ID`, `$TAGS[env]`: a variable Datadog left unfilled.
_UNFILLED = re.compile(r"^\$[A-Z][A-Z0-9_]*(?:\[[^\]]*\])?$")
# `alertTransition` -> `alert_transition`; `org[id]` -> `org.id`.
_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_BRACKETED = re.compile(r"^([^\[\]]+)\[([^\[\]]+)\]$")
# ASCII digits only: `\d` also matches other scripts' digits, which `Decimal` would accept.
_EPOCH = re.compile(r"[0-9]+(?:\.[0-9]+)?")
# Longer than this is no epoch a sender means (13 digits of milliseconds, a few decimals).
_EPOCH_CHARS = 40
# A monitor id is a 64-bit integer: at most 20 digits.
_MONITOR_ID = re.compile(r"[0-9]{1,20}")
# Below this an epoch is in seconds: 10^11 s is the year 5138, 10^11 ms is March 1973.
_SECONDS_BELOW = 10**11
# A `date` later than this after receipt is ignored: as a breaker's version it would block every
# real event after it. Old dates are harmless (an older event never overwrites a newer state).
_FUTURE_SLACK_MS = 24 * 60 * 60 * 1000
_EVENT_ID_EXPECTED = "expected a Datadog event id ($ID: at most 64 letters, digits, '_' or '-')"
_IGNORED = "; ignored"
# What a Notification keeps of the text (the queue stores one copy per callback URL).
MAX_MESSAGE_CHARS = 16_384
MAX_TITLE_CHARS = 1_024
TRUNCATED = "\u2026[truncated]"
_SHOWN_CHARS = 80


def parse_datadog_webhook(
    payload: Mapping[str, object], *, keyword: str, received_at_ms: int
) -> Notification:
    """Read a Datadog webhook payload; `PayloadError` (422) only when it is unusable."""
    fields = _Fields(payload)
    body = fields.text("body")
    if body is None:
        raise PayloadError(
            "field 'body': expected the monitor message ($EVENT_MSG), got " + fields.absent("body")
        )
    title = fields.text("title") or ""
    titled = transition_from_title(title)
    transition, datadog_transition, renotification = _transition(fields, title, titled)

    monitor_id = fields.text("alert_id", check=_monitor_id_problem) or monitor_id_from_text(body)
    link = fields.text("link")
    # Only `$ID` or `$LINK` names this very event, so only they make the dedup key: a link the
    # user wrote into the message would make different alerts share one.
    named_event_id = _named_event_id(fields, link, monitor_id)
    date = fields.text("date", check=lambda text: _epoch_problem(text, received_at_ms))
    if named_event_id is not None:
        dedup_key = f"datadog:{named_event_id}:{transition}"
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
        # For enrichment, the link Datadog itself wrote into the message will do.
        event_id=named_event_id or event_id_from_text(body, generated_only=True),
        monitor_id=monitor_id,
        event_time_ms=None if date is None else _epoch_ms(date),
        tags=fields.tags(),
        scope=fields.text("alert_scope") or (titled.scope if titled else None),
        alert_cycle_key=fields.text("alert_cycle_key"),
        link=link,
        org_id=fields.text("org_id"),
        alert_type=fields.text("alert_type"),
        event_type=fields.text("event_type"),
        warnings=tuple(fields.warnings),
    )


class _Fields:
    """A payload's values by path (`alert.id`), whatever the template's spelling or nesting.

    Reading a field skips a malformed value (to the next alias) and notes it in `warnings`.
    """

    def __init__(self, payload: Mapping[str, object]) -> None:
        self.warnings: list[str] = []
        # path -> (the key as the sender wrote it, the value); the first spelling wins.
        self._values: dict[str, tuple[str, object]] = {}
        for key, value in payload.items():
            path = _path(key)
            if path not in _OBJECTS:
                self._values.setdefault(path, (key, value))
                continue
            found = self._object(key, value)
            for inner_key, inner_value in (found or {}).items():
                self._values.setdefault(
                    f"{path}.{_path(str(inner_key))}", (f"{key}.{inner_key}", inner_value)
                )

    def _object(self, key: str, value: object) -> Mapping[str, object] | None:
        """An `alert`/`event`/`org` object, also as the JSON text "Encode as form" makes of it."""
        if isinstance(value, Mapping):
            return value
        if value is None or (isinstance(value, str) and _is_blank(value)):
            return None
        if isinstance(value, str) and value.lstrip().startswith("{"):
            try:
                decoded = json.loads(value)
            except (ValueError, RecursionError):
                decoded = None
            if isinstance(decoded, dict):
                return decoded
        self.warnings.append(f"field {key!r}: expected an object, got {_show(value)}{_IGNORED}")
        return None

    def present(self, name: str) -> Iterator[tuple[str, object]]:
        """(key, value) of each alias of `name` that holds something, preferred first."""
        for path in _PATHS[name]:
            found = self._values.get(path)
            if found is not None and _holds(found[1]):
                yield found

    def texts(
        self, name: str, check: Callable[[str], str | None] | None = None
    ) -> Iterator[tuple[str, str]]:
        """(key, stripped text) of each alias of `name` that is usable; the others are noted."""
        for key, value in self.present(name):
            text = self._usable(name, key, value, check)
            if text is not None:
                yield key, text

    def text(self, name: str, check: Callable[[str], str | None] | None = None) -> str | None:
        """The first usable value of `name`; None when there is none."""
        # `texts`, without its generators: a dozen of these run on every webhook's path.
        for path in _PATHS[name]:
            found = self._values.get(path)
            if found is not None and _holds(found[1]):
                text = self._usable(name, found[0], found[1], check)
                if text is not None:
                    return text
        return None

    def _usable(
        self, name: str, key: str, value: object, check: Callable[[str], str | None] | None
    ) -> str | None:
        """`value` as stripped text, or None when it is malformed (noted in `warnings`)."""
        text = self._string(name, key, value)
        if text is None:
            return None
        problem = check(text) if check else None
        if problem:
            self.warnings.append(f"field {key!r}: {problem}{_IGNORED}")
            return None
        return text

    def _string(self, name: str, key: str, value: object) -> str | None:
        if name in _INT_ALLOWED and isinstance(value, int) and not isinstance(value, bool):
            # Ids exceed 2^53: kept as exact decimal text, never through float.
            return str(value)
        if name in _FLOAT_ALLOWED and isinstance(value, float) and math.isfinite(value):
            return repr(value)
        if isinstance(value, str):
            return value.strip()
        expected = "a string or an integer" if name in _INT_ALLOWED else "a string"
        self.warnings.append(f"field {key!r}: expected {expected}, got {_show(value)}{_IGNORED}")
        return None

    def tags(self) -> tuple[str, ...]:
        """`$TAGS` text, or a list of tags (its strings; anything else in it is noted)."""
        for key, value in self.present("tags"):
            if not isinstance(value, list):
                text = self._string("tags", key, value)
                if text is None:
                    continue
                return split_tags(text)
            tags = tuple(tag.strip() for tag in value if isinstance(tag, str) and tag.strip())
            others = [item for item in value if not isinstance(item, str)]
            if others:
                self.warnings.append(
                    f"field {key!r}: expected comma-separated tags ($TAGS) or a list of strings, "
                    f"got {', '.join(_show(item) for item in others)} among them{_IGNORED}"
                )
            return tags
        return ()

    def absent(self, name: str) -> str:
        """How a sender would recognise what it sent for `name`, when nothing was usable."""
        found = [self._values[path] for path in _PATHS[name] if path in self._values]
        if not found:
            return "no " + " / ".join(repr(path) for path in _PATHS[name]) + " field"
        key, value = found[0]
        return f"{_show(value)} in {key!r}"


# Senders use a handful of spellings: each is worked out once (bounded, keys are theirs).
@lru_cache(maxsize=1024)
def _path(key: str) -> str:
    """A key as a path: snake case, `org[id]` as `org.id`."""
    bracketed = _BRACKETED.match(key)
    if bracketed:
        return f"{_path(bracketed.group(1))}.{_path(bracketed.group(2))}"
    return ".".join(_CAMEL_HUMP.sub("_", part).lower() for part in key.split("."))


def _named_event_id(fields: _Fields, link: str | None, monitor_id: str | None) -> str | None:
    """`$ID`, else the id in the `$LINK` link; a malformed one is noted and skipped."""
    for key, event_id in fields.texts("id", check=_event_id_problem):
        if event_id == monitor_id:
            # Several published templates put `$ALERT_ID` under `id`: as a dedup key it would
            # make every later alert of the monitor a duplicate of the first.
            fields.warnings.append(
                f"field {key!r}: {_show(event_id)} is the monitor id ($ALERT_ID), not the event "
                "id ($ID); not used as the event id"
            )
            continue
        return event_id
    if link is None:
        return None
    found = list(event_link_ids(link))
    if not found:
        return None
    if not is_event_id(found[-1]):
        fields.warnings.append(
            f"field 'link': {_EVENT_ID_EXPECTED} in the event link, got {_show(found[-1])} in "
            f"{_show(link)}{_IGNORED}"
        )
        return None
    return found[-1]


def _event_id_problem(text: str) -> str | None:
    return None if is_event_id(text) else f"{_EVENT_ID_EXPECTED}, got {_show(text)}"


def _monitor_id_problem(text: str) -> str | None:
    if _MONITOR_ID.fullmatch(text):
        return None
    return f"expected the monitor id ($ALERT_ID, at most 20 digits), got {_show(text)}"


def _truncated(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, saying so at the end when it was cut."""
    if len(text) <= limit:
        return text
    return text[: limit - len(TRUNCATED)] + TRUNCATED


def _transition(
    fields: _Fields, title: str, titled: TitleTransition | None
) -> tuple[Transition, str, bool]:
    """`$ALERT_TRANSITION` when Datadog filled it with a known name, else the title prefix."""
    named = fields.text("alert_transition")
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
        field = next(fields.present("alert_transition"))[0]
    else:
        received = f"no transition field and title {_show(title)}"
        field = next(fields.present("title"), ("title",))[0]
    raise PayloadError(f"field {field!r}: expected {expected}, got {received}")


def _holds(value: object) -> bool:
    """Whether a payload value says anything: not null, blank or an unfilled `$VARIABLE`."""
    return value is not None and not (isinstance(value, str) and _is_blank(value))


def _is_blank(value: str) -> bool:
    text = value.strip()
    return not text or (text[0] == "$" and bool(_UNFILLED.match(text)))


def _epoch_problem(text: str, received_at_ms: int) -> str | None:
    if len(text) > _EPOCH_CHARS or not _EPOCH.fullmatch(text):
        return f"expected epoch milliseconds as a string, got {_show(text)}"
    if _epoch_ms(text) > received_at_ms + _FUTURE_SLACK_MS:
        # The date itself may be past what a calendar can show (year 10000 and later).
        received = datetime.fromtimestamp(received_at_ms / 1000, tz=UTC)
        return (
            f"{_show(text)} is in the future (more than a day after the router received it at "
            f"{received.isoformat(timespec='seconds')})"
        )
    return None


def _epoch_ms(text: str) -> int:
    """Epoch seconds or milliseconds (already checked by `_epoch_problem`) as milliseconds."""
    number = Decimal(text)
    return int(number * 1000 if number < _SECONDS_BELOW else number)


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
