"""What the router keeps of a monitor or event read: pure parsing, no network, no Redis.

Ids stay strings from the first byte on: event ids exceed 2^53, so an event's `id_str` wins,
then the id the router asked for, and only then the JSON number `id`; a number is turned into
text only when it arrived as an exact integer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from breaker_client.model import STATUS_AFTER

from router.model import MonitorGroup, Notification
from router.parsing.datadog_text import monitor_id_from_text

# A Datadog id as JSON text: ASCII digits only (str.isdigit() also accepts "²" and "٣").
_DIGITS = re.compile(r"[0-9]+")
# Timestamps at or above this are already milliseconds (2001-09-09 in ms; year 33658 in s).
_MS_THRESHOLD = 10**12


def is_id(value: str) -> bool:
    """Whether `value` is a Datadog monitor or event id: ASCII digits and nothing else."""
    return _DIGITS.fullmatch(value) is not None


def _id_text(value: Any) -> str | None:
    """An id as text, only from an exact integer or a string of digits (never from a float)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value) if value >= 0 else None
    if isinstance(value, str) and is_id(value.strip()):
        return value.strip()
    return None


def _ms(value: Any) -> int | None:
    """Datadog's epoch seconds (or ms) as ms; 0 and missing mean never."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return int(value) if value >= _MS_THRESHOLD else int(value * 1000)


def _tags(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(str(tag) for tag in value if isinstance(tag, str) and tag)


def group_tags(name: str) -> tuple[str, ...]:
    """`bank_code:0001,env:prod` -> ("bank_code:0001", "env:prod"); `*` (no grouping) -> ()."""
    return tuple(tag.strip() for tag in name.split(",") if tag.strip() and tag.strip() != "*")


@dataclass(frozen=True)
class MonitorSnapshot:
    """A monitor as one GetMonitor(group_states=all) read saw it."""

    monitor_id: str
    name: str | None
    overall_state: str | None
    tags: tuple[str, ...]
    groups: tuple[MonitorGroup, ...]
    # Wall-clock ms when the read was *started*: it reflects every change before that moment.
    fetched_at_ms: int
    # The monitor's message template (conditionals unrendered): the reconciler checks that it
    # still names a callback. None when the read did not carry it (an older cache entry).
    message: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "monitor_id": self.monitor_id,
                "name": self.name,
                "overall_state": self.overall_state,
                "tags": list(self.tags),
                "groups": [group.to_body() for group in self.groups],
                "fetched_at_ms": self.fetched_at_ms,
                "message": self.message,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> MonitorSnapshot:
        """Inverse of `to_json`; ValueError when the text is not one (e.g. another version's)."""
        try:
            data = json.loads(text)
            return cls(
                monitor_id=str(data["monitor_id"]),
                name=data["name"],
                overall_state=data["overall_state"],
                tags=tuple(data["tags"]),
                groups=tuple(
                    MonitorGroup(
                        name=group["name"],
                        status=group["status"],
                        tags=tuple(group["tags"]),
                        last_triggered_ms=group["last_triggered_ms"],
                        last_resolved_ms=group["last_resolved_ms"],
                    )
                    for group in data["groups"]
                ),
                fetched_at_ms=int(data["fetched_at_ms"]),
                message=data.get("message"),
            )
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a monitor snapshot: {exc}") from exc


def monitor_from_api(
    body: Mapping[str, Any], *, requested_id: str, fetched_at_ms: int
) -> MonitorSnapshot:
    """Parse a GetMonitor body; group names (`a:b,c:d`) become the groups' tags."""
    state = body.get("state")
    raw_groups = state.get("groups") if isinstance(state, Mapping) else None
    groups = []
    if isinstance(raw_groups, Mapping):
        for name, group in raw_groups.items():
            # The key is the group name; the spec's `name` field is documented vaguely.
            fields = group if isinstance(group, Mapping) else {}
            groups.append(
                MonitorGroup(
                    name=str(name),
                    status=str(fields.get("status") or "Unknown"),
                    tags=group_tags(str(name)),
                    last_triggered_ms=_ms(fields.get("last_triggered_ts")),
                    last_resolved_ms=_ms(fields.get("last_resolved_ts")),
                )
            )
    name = body.get("name")
    overall = body.get("overall_state")
    message = body.get("message")
    return MonitorSnapshot(
        monitor_id=_id_text(body.get("id")) or requested_id,
        name=name if isinstance(name, str) else None,
        overall_state=overall if isinstance(overall, str) else None,
        tags=_tags(body.get("tags")),
        groups=tuple(sorted(groups, key=lambda group: group.name)),
        fetched_at_ms=fetched_at_ms,
        message=message if isinstance(message, str) else None,
    )


@dataclass(frozen=True)
class EventSnapshot:
    """What GetEvent told about one event."""

    event_id: str
    title: str | None
    tags: tuple[str, ...]
    time_ms: int | None
    # The monitor that raised it, when the event says so (fields, payload or links in the text).
    monitor_id: str | None
    alert_type: str | None


def _dig(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _event_monitor_id(event: Mapping[str, Any]) -> str | None:
    payload = event.get("payload")
    if isinstance(payload, str):
        # The spec says string; older monitor events carried JSON text (or an object, below).
        try:
            payload = json.loads(payload)
        except ValueError:
            payload = None
    candidates = (
        event.get("monitor_id"),
        _dig(payload, "monitor", "id"),
        _dig(payload, "result", "metadata", "monitor_id"),
        _dig(payload, "monitor_id"),
    )
    for candidate in candidates:
        found = _id_text(candidate)
        if found:
            return found
    for text in (event.get("text"), event.get("url")):
        if isinstance(text, str):
            found = monitor_id_from_text(text)
            if found:
                return found
    return None


def event_from_api(body: Mapping[str, Any], *, requested_id: str) -> EventSnapshot:
    """Parse a GetEvent body (`{"event": {...}}`)."""
    event = body.get("event")
    if not isinstance(event, Mapping):
        event = {}
    title = event.get("title")
    alert_type = event.get("alert_type")
    return EventSnapshot(
        # Without `id_str`, the id asked for: Datadog has been recorded sending the JSON number
        # `id` rounded to a double (...911562 as ...911000); the request's id is exact.
        event_id=_id_text(event.get("id_str")) or requested_id or _id_text(event.get("id")) or "",
        title=title if isinstance(title, str) else None,
        tags=_tags(event.get("tags")),
        time_ms=_ms(event.get("date_happened")),
        monitor_id=_event_monitor_id(event),
        alert_type=alert_type if isinstance(alert_type, str) else None,
    )


def groups_as_notified(
    snapshot: MonitorSnapshot, notification: Notification
) -> tuple[MonitorGroup, ...]:
    """The snapshot's groups, with the notification's own group as the notification says.

    A cached read may predate the notification (a storm shares reads for a few seconds); the
    group the notification is about is then certainly in the state the transition names.
    A read started after the notification arrived is newer truth and is left alone.
    """
    status = STATUS_AFTER.get(notification.transition)
    scope_tags = notification.scope_tags
    if status is None or not scope_tags or snapshot.fetched_at_ms >= notification.received_at_ms:
        return snapshot.groups
    wanted = frozenset(scope_tags)
    groups = list(snapshot.groups)
    matched = False
    for index, group in enumerate(groups):
        if frozenset(group.tags) == wanted:
            matched = True
            if group.status != status:
                groups[index] = replace(group, status=status)
    if not matched:
        groups.append(MonitorGroup(name=",".join(scope_tags), status=status, tags=scope_tags))
        groups.sort(key=lambda group: group.name)
    return tuple(groups)
