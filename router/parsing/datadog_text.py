"""Facts Datadog only puts in text: the transition in a title, ids inside links.

Shared by the webhook parser (default payload) and the SNS parser (plain-text message).
"""

from __future__ import annotations

import re
from typing import NamedTuple

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
_ON_SCOPE = re.compile(r"^(?P<name>.+?)\s+on\s+\{(?P<scope>.*)\}\s*$", re.DOTALL)

# `https://app.datadoghq.com/monitors#309811?group=...`, `.../monitors/309811/edit`,
# `.../monitors/309811?...`; not `/monitors/manage` or `/monitors#/triggered`.
_MONITOR_LINK = re.compile(r"/monitors?(?:#|/)(\d+)(?![\d])")
# `.../event/event?id=3089904566766935419`, `.../event/jump_to?event_id=123`.
_EVENT_LINK = re.compile(r"/event/[a-z_]+\?(?:[^\s)\]>]*&)?(?:event_)?id=(\d+)")


class TitleTransition(NamedTuple):
    transition: Transition
    datadog_transition: str
    renotification: bool
    scope: str | None


def transition_from_name(name: str) -> tuple[Transition, bool] | None:
    """`Triggered` -> (alert, False); `Re-Warn` -> (warning, True); unknown -> None."""
    return _DATADOG_TRANSITIONS.get(" ".join(name.split()).lower())


def transition_from_title(title: str) -> TitleTransition | None:
    """Find the transition (and scope, if any) in an event title's bracketed prefixes."""
    rest = title
    while True:
        match = _TITLE_PREFIX.match(rest)
        if not match:
            return None
        inside = match.group(1).strip()
        rest = rest[match.end() :]
        name, scope = inside, None
        on_scope = _ON_SCOPE.match(inside)
        if on_scope:
            name, scope = on_scope.group("name"), on_scope.group("scope").strip() or None
        found = transition_from_name(name)
        if found:
            return TitleTransition(found[0], name.strip(), found[1], scope)


def _last(pattern: re.Pattern[str], text: str) -> str | None:
    # Datadog appends its own links (Monitor Status, Event URL) at the end of the message; a
    # link the user wrote into the message body comes earlier and must not win.
    found = pattern.findall(text)
    return str(found[-1]) if found else None


def monitor_id_from_text(text: str) -> str | None:
    """The monitor id in the last Datadog monitor link within `text`."""
    return _last(_MONITOR_LINK, text)


def event_id_from_text(text: str) -> str | None:
    """The event id in the last Datadog event link within `text`."""
    return _last(_EVENT_LINK, text)
