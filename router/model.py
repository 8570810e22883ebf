"""The router's own vocabulary: a parsed notification and what enrichment adds to it.

Parsers (`router.parsing.*`) turn what a sender posts into a `Notification`; the queue stores
it as JSON; the worker adds an `Enrichment` and renders the callback body
(`router.callback_body`). Nothing here touches Flask, Redis or the network.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

Transition = Literal["alert", "warning", "recovery", "no_data", "renotify", "reconcile"]
TRANSITIONS: tuple[str, ...] = get_args(Transition)

Source = Literal["datadog", "sns", "replay", "reconciler", "alertmanager"]

EnrichmentStatus = Literal["none", "partial", "complete"]


def split_tags(text: str | None) -> tuple[str, ...]:
    """Datadog's comma-separated tag text (`a:b, c` or `a:b,c`) as a tuple of tags."""
    if not text:
        return ()
    return tuple(tag.strip() for tag in text.split(",") if tag.strip())


@dataclass(frozen=True)
class Notification:
    """One monitor notification as a sender delivered it, before enrichment."""

    source: Source
    # Identifies this notification across a sender's retries: the same key never yields a
    # second delivery (e.g. `datadog:<event id>:<transition>` or `sns:<MessageId>`).
    dedup_key: str
    transition: Transition
    # What Datadog called it (`Triggered`, `Re-Triggered`, `Recovered`, ...), for humans.
    datadog_transition: str
    renotification: bool
    title: str
    # The rendered monitor message; callback lines were found here.
    message: str
    callback_urls: tuple[str, ...]
    received_at_ms: int
    event_id: str | None = None
    monitor_id: str | None = None
    # Event time in milliseconds: the `version` a breaker write carries.
    event_time_ms: int | None = None
    tags: tuple[str, ...] = ()
    scope: str | None = None
    alert_cycle_key: str | None = None
    link: str | None = None
    org_id: str | None = None
    alert_type: str | None = None
    event_type: str | None = None
    # Optional fields the sender got wrong and that were ignored, one line each (shown in the
    # answer to the sender and logged), e.g. `field 'org': expected an object, got "x"; ignored`.
    warnings: tuple[str, ...] = ()
    # What the payload itself says about the monitor and its groups, used instead of a Datadog
    # read: Alertmanager sends every alert of its group, so nothing is left to look up.
    carried: Enrichment | None = None

    @property
    def scope_tags(self) -> tuple[str, ...]:
        return split_tags(self.scope)

    def to_dict(self) -> dict[str, Any]:
        # Field by field rather than `asdict`, which deep-copies every value: this runs for
        # every webhook the router accepts, before its 202.
        data = {name: getattr(self, name) for name in _NOTIFICATION_FIELDS}
        data["callback_urls"] = list(self.callback_urls)
        data["tags"] = list(self.tags)
        data["warnings"] = list(self.warnings)
        data["carried"] = None if self.carried is None else asdict(self.carried)
        return data

    def to_json(self) -> str:
        """The JSON the queue stores (`from_dict(json.loads(...))` reads it back)."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Notification:
        values = dict(data)
        values["callback_urls"] = tuple(values.get("callback_urls", ()))
        values["tags"] = tuple(values.get("tags", ()))
        values["warnings"] = tuple(values.get("warnings", ()))
        carried = values.get("carried")
        values["carried"] = Enrichment.from_dict(carried) if carried else None
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in values.items() if k in known})


_NOTIFICATION_FIELDS = tuple(f.name for f in fields(Notification))


@dataclass(frozen=True)
class MonitorGroup:
    """One group of a multi-alert monitor, e.g. `bank_code:0001,env:prod` in Alert."""

    name: str
    status: str
    tags: tuple[str, ...]
    last_triggered_ms: int | None = None
    last_resolved_ms: int | None = None

    def to_body(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "tags": list(self.tags),
            "last_triggered_ms": self.last_triggered_ms,
            "last_resolved_ms": self.last_resolved_ms,
        }

    @classmethod
    def from_body(cls, data: dict[str, Any]) -> MonitorGroup:
        return cls(
            name=data["name"],
            status=data["status"],
            tags=tuple(data.get("tags") or ()),
            last_triggered_ms=data.get("last_triggered_ms"),
            last_resolved_ms=data.get("last_resolved_ms"),
        )


@dataclass(frozen=True)
class Enrichment:
    """What the Datadog API added to a notification; `status` says how much of it there is."""

    status: EnrichmentStatus = "none"
    monitor_id: str | None = None
    monitor_name: str | None = None
    overall_state: str | None = None
    monitor_tags: tuple[str, ...] = ()
    # None when the groups were not read; () when the monitor has no groups.
    groups: tuple[MonitorGroup, ...] | None = None
    event_tags: tuple[str, ...] | None = None
    event_title: str | None = None
    event_time_ms: int | None = None
    # Why enrichment is not complete, one short line each (shown to services and operators).
    problems: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def none(cls, reason: str) -> Enrichment:
        return cls(status="none", problems=(reason,))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Enrichment:
        """The inverse of `dataclasses.asdict` (how a Notification stores what it carries)."""
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for name in ("monitor_tags", "problems"):
            values[name] = tuple(values.get(name) or ())
        if values.get("event_tags") is not None:
            values["event_tags"] = tuple(values["event_tags"])
        if values.get("groups") is not None:
            values["groups"] = tuple(MonitorGroup.from_body(g) for g in values["groups"])
        return cls(**values)
