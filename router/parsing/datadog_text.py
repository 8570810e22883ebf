"""Facts Datadog only puts in text: the transition in a title, ids inside links.

Shared by the webhook parser (default payload) and the SNS parser (plain-text message).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple
from urllib.parse import parse_qs

from router.model import Transition

# Datadog's `$ALERT_TRANSITION` values and title prefixes, to our transitions. `Re-` variants
# are renotifications of a state that has not changed.
_DATADOG_TRANSITIONS: dict[str, tuple[Transition, bool]] = {
    "triggered": ("alert", False),
    "re-triggered": ("alert", True),
    "warn": ("warning", False),
    "re-warn": ("warning", True),
    "recovered": ("recovery", False),
    "no data": ("no_data", False),
    "re-no data": ("no_data", True),
    "renotify": ("renotify", True),
}

# `[P1] [Triggered on {bank_code:0001,env:prod}] Bank API errors`: bracketed prefixes in order.
_TITLE_PREFIX = re.compile(r"^\s*\[([^\]]*)\]")
# A Datadog title is short; only its start is read, so a huge title costs nothing.
TITLE_PARSE_CHARS = 512

# `https://app.datadoghq.com/monitors#309811?group=...`, `.../monitors/309811/edit`,
# `.../monitors/309811?...`; not `/monitors/manage` or `/monitors#/triggered`. ASCII digits only
# (`\d` would take Arabic-Indic ones), at most 20 of them (a monitor id is a 64-bit integer).
# Other footer links (Log Explorer, APM) name the monitor as `link_monitor_id=309811`.
_MONITOR_LINK = re.compile(
    r"/monitors?(?:#|/)([0-9]{1,20})(?![0-9])|[?&;]link_monitor_id=([0-9]{1,20})(?![0-9])"
)
# A link's query, captured whole (one greedy run, nothing to backtrack into), read by `parse_qs`.
_QUERY = r"\?([^\s)\]>\"'<|#]*)"
# Links that may name the event, by the query keys that do: `.../event/event?id=3089904566766935419`
# and `.../event/jump_to?event_id=123` (older notifications, `$LINK`), and the footer links of
# today's notifications, `.../monitors/221164084?from_ts=...&event_id=8306082202796025694
# &link_source=monitor_notif` (Slack's also carry `link_event_id=`).
_EVENT_LINK = re.compile(
    r"/event/[a-z_]+" + _QUERY + r"|/monitors?(?:#|/)[0-9]{1,20}(?![0-9])(?:/[a-z_]+)?" + _QUERY
)
_EVENT_ID_KEYS = ("id", "event_id")
_MONITOR_LINK_EVENT_ID_KEYS = ("event_id", "link_event_id")
# Datadog marks the links it writes into a notification; a link a user wrote has no marker.
_GENERATED_MARK = ("link_source", "monitor_notif")
# What a Datadog event id may look like: `$ID` is digits, but allow a token, never free text.
_EVENT_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
# Prose punctuation that may follow a link written in a sentence: `(see .../event?id=42.)`.
_SENTENCE_END = ".,;:!?"


class TitleTransition(NamedTuple):
    transition: Transition
    datadog_transition: str
    renotification: bool
    scope: str | None


def transition_from_name(name: str) -> tuple[Transition, bool] | None:
    """`Triggered` -> (alert, False); `Re-Warn` -> (warning, True); unknown -> None."""
    return _DATADOG_TRANSITIONS.get(" ".join(name.split()).lower())


def transition_from_title(title: str) -> TitleTransition | None:
    """Find the transition (and scope, if any) in an event title's bracketed prefixes.

    Only the first `TITLE_PARSE_CHARS` characters are read.
    """
    rest = title[:TITLE_PARSE_CHARS]
    while True:
        match = _TITLE_PREFIX.match(rest)
        if not match:
            return None
        inside = match.group(1).strip()
        rest = rest[match.end() :]
        name, scope = _split_on_scope(inside)
        found = transition_from_name(name)
        if found:
            return TitleTransition(found[0], name.strip(), found[1], scope)


def _split_on_scope(inside: str) -> tuple[str, str | None]:
    """`Triggered on {host:a}` -> ("Triggered", "host:a"); anything else -> (inside, None).

    Plain string operations, linear in the length: a transition name never holds `{`, so the
    scope starts at the first `{` and must be preceded by whitespace, `on`, whitespace.
    """
    head, brace, tail = inside.partition("{")
    tail = tail.rstrip()
    if not brace or not tail.endswith("}") or not head[-1:].isspace():
        return inside, None
    before_on = head.rstrip()
    if not before_on.endswith("on"):
        return inside, None
    name = before_on[: -len("on")]
    if not name[-1:].isspace() or not name.strip():
        return inside, None
    return name.strip(), tail[:-1].strip() or None


def is_event_id(value: str) -> bool:
    """Whether `value` looks like a Datadog event id (a token of at most 64 characters)."""
    return bool(_EVENT_ID.fullmatch(value))


def event_link_ids(text: str, *, generated_only: bool = False) -> Iterator[str]:
    """The event id of each Datadog link in `text` that names one, in order, unchecked.

    `generated_only` keeps the links Datadog wrote itself (`link_source=monitor_notif`).
    """
    for match in _EVENT_LINK.finditer(text):
        event_query, monitor_query = match.groups()
        query = event_query if event_query is not None else monitor_query
        # Plain text that went through HTML escaping (`&amp;`) still separates parameters.
        fields = parse_qs(query.replace("&amp;", "&"))
        if generated_only and _GENERATED_MARK[1] not in fields.get(_GENERATED_MARK[0], ()):
            continue
        keys = _EVENT_ID_KEYS if event_query is not None else _MONITOR_LINK_EVENT_ID_KEYS
        for key in keys:
            values = fields.get(key)
            if values:
                yield values[0]
                break


def monitor_id_from_text(text: str) -> str | None:
    """The monitor id in the last Datadog monitor link within `text`."""
    # Datadog appends its own links (Monitor Status, Event URL) at the end of the message; a
    # link the user wrote into the message body comes earlier and must not win.
    found = _MONITOR_LINK.findall(text)
    if not found:
        return None
    in_path, in_query = found[-1]
    return str(in_path or in_query)


def event_id_from_text(text: str, *, generated_only: bool = False) -> str | None:
    """The event id in the last Datadog link within `text` that holds a usable one."""
    found = None
    for value in event_link_ids(text, generated_only=generated_only):
        value = value.rstrip(_SENTENCE_END)
        if is_event_id(value):
            found = value
    return found
