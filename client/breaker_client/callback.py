"""The callback a service receives from the router, verified and parsed into typed objects.

The body is the JSON `router.callback_body.build_callback_body` renders; every id is a
string. Parsing is strict about types (a wrong one names the field) and lenient about
additions (unknown fields are ignored, so a newer router does not break an older service).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from breaker_client.errors import InvalidCallbackBody
from breaker_client.signature import DEFAULT_TOLERANCE_S, Secret, SignatureVerifier


def tag_value(tags: Iterable[str], name: str) -> str | None:
    """The value of the first `name:value` tag (`tag_value(g.tags, "bank_code")` -> `"0001"`)."""
    prefix = f"{name}:"
    for tag in tags:
        if tag.startswith(prefix) and len(tag) > len(prefix):
            return tag[len(prefix) :]
    return None


@dataclass(frozen=True)
class Group:
    """One group of a multi-alert monitor, e.g. `bank_code:0001,env:prod` in `Alert`."""

    name: str
    # Datadog's words: Alert, Warn, No Data, OK (Unknown when the router could not tell).
    status: str
    tags: tuple[str, ...] = ()
    last_triggered_ms: int | None = None
    last_resolved_ms: int | None = None

    def tag_value(self, name: str) -> str | None:
        return tag_value(self.tags, name)


@dataclass(frozen=True)
class Monitor:
    id: str | None
    name: str | None
    overall_state: str | None
    tags: tuple[str, ...] = ()
    # Every group with its status now; empty unless enrichment read them.
    groups: tuple[Group, ...] = ()


@dataclass(frozen=True)
class Event:
    id: str | None
    title: str | None
    tags: tuple[str, ...] = ()
    time_ms: int | None = None
    link: str | None = None


@dataclass(frozen=True)
class Scope:
    text: str | None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class EnrichmentInfo:
    # none, partial or complete: how much of the monitor the router could read from Datadog.
    status: str
    complete: bool
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class CallbackEvent:
    """One callback delivery. `version` is what breaker writes should carry."""

    schema: int
    delivery_id: str
    # alert, warning, recovery, no_data, renotify, or reconcile (a snapshot of the truth).
    transition: str
    datadog_transition: str | None
    renotification: bool
    source: str | None
    monitor: Monitor
    # The group this notification is about, when the notification names one.
    group: Group | None
    event: Event
    scope: Scope
    enrichment: EnrichmentInfo
    alert_cycle_key: str | None = None
    org_id: str | None = None
    message: str | None = None
    # The `webhook-id` header: stable across the router's retries of this delivery.
    webhook_id: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def version(self) -> int | None:
        """The event time in ms: an older event never overwrites a newer breaker state."""
        return self.event.time_ms

    @property
    def is_snapshot(self) -> bool:
        return self.transition == "reconcile"

    def groups_with_tag(self, name: str) -> tuple[Group, ...]:
        """The monitor's groups that carry a `name:` tag (e.g. every bank code it watches)."""
        return tuple(g for g in self.monitor.groups if g.tag_value(name) is not None)

    def tag_value(self, name: str) -> str | None:
        """`name:` from the notified group, else the scope, else the event's tags."""
        for tags in (self.group.tags if self.group else (), self.scope.tags, self.event.tags):
            value = tag_value(tags, name)
            if value is not None:
                return value
        return None


class _Reader:
    """Typed field access that names the offending path on a wrong type."""

    def __init__(self, data: Mapping[str, Any], path: str) -> None:
        self.data = data
        self.path = path

    def _where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _fail(self, key: str, expected: str) -> InvalidCallbackBody:
        got = self.data.get(key)
        return InvalidCallbackBody(
            f"callback body field {self._where(key)!r} must be {expected}, "
            f"got {type(got).__name__} {str(got)[:60]!r}"
        )

    def text(self, key: str, *, required: bool = False) -> str | None:
        value = self.data.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or (required and not value):
            raise self._fail(key, "a non-empty string" if required else "a string or null")
        return value

    def integer(self, key: str) -> int | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(key, "an integer or null")
        return value

    def flag(self, key: str) -> bool:
        value = self.data.get(key, False)
        if not isinstance(value, bool):
            raise self._fail(key, "true or false")
        return value

    def tags(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
            raise self._fail(key, "a list of strings")
        return tuple(value)

    def obj(self, key: str, *, required: bool = False) -> _Reader | None:
        value = self.data.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, Mapping):
            raise self._fail(key, "an object")
        return _Reader(value, self._where(key))

    def objs(self, key: str) -> list[_Reader]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            raise self._fail(key, "a list of objects")
        return [_Reader(v, f"{self._where(key)}[{i}]") for i, v in enumerate(value)]


def _group(r: _Reader) -> Group:
    return Group(
        name=r.text("name") or "",
        status=r.text("status") or "Unknown",
        tags=r.tags("tags"),
        last_triggered_ms=r.integer("last_triggered_ms"),
        last_resolved_ms=r.integer("last_resolved_ms"),
    )


_EMPTY = _Reader({}, "")


def parse_callback_body(
    body: bytes | str | Mapping[str, Any], *, webhook_id: str | None = None
) -> CallbackEvent:
    """Parse a callback body (raw JSON or already decoded); raises `InvalidCallbackBody`."""
    if isinstance(body, bytes | str):
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            # RecursionError: nested deeper than the decoder's stack (a body no router sends).
            raise InvalidCallbackBody(f"callback body is not JSON: {exc}") from exc
    else:
        data = body
    if not isinstance(data, Mapping):
        raise InvalidCallbackBody(f"callback body must be a JSON object, got {type(data).__name__}")
    top = _Reader(data, "")
    monitor = top.obj("monitor") or _EMPTY
    event = top.obj("event") or _EMPTY
    scope = top.obj("scope") or _EMPTY
    enrichment = top.obj("enrichment") or _EMPTY
    group = top.obj("group")
    enrichment_status = enrichment.text("status") or "none"
    return CallbackEvent(
        schema=top.integer("schema") or 1,
        delivery_id=top.text("delivery_id", required=True) or "",
        transition=top.text("transition", required=True) or "",
        datadog_transition=top.text("datadog_transition"),
        renotification=top.flag("renotification"),
        source=top.text("source"),
        monitor=Monitor(
            id=monitor.text("id"),
            name=monitor.text("name"),
            overall_state=monitor.text("overall_state"),
            tags=monitor.tags("tags"),
            groups=tuple(_group(g) for g in monitor.objs("groups")),
        ),
        group=_group(group) if group is not None else None,
        event=Event(
            id=event.text("id"),
            title=event.text("title"),
            tags=event.tags("tags"),
            time_ms=event.integer("time_ms"),
            link=event.text("link"),
        ),
        scope=Scope(text=scope.text("text"), tags=scope.tags("tags")),
        enrichment=EnrichmentInfo(
            status=enrichment_status,
            complete=enrichment.flag("complete") if "complete" in enrichment.data else False,
            problems=enrichment.tags("problems"),
        ),
        alert_cycle_key=top.text("alert_cycle_key"),
        org_id=top.text("org_id"),
        message=top.text("message"),
        webhook_id=webhook_id,
        raw=data,
    )


def verify_callback(
    body: bytes,
    headers: Mapping[str, str],
    secret: Secret | Sequence[Secret],
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> CallbackEvent:
    """Verify a callback request's signature and timestamp, then parse its body.

    Raises `InvalidSignature` (answer 401) or `InvalidCallbackBody` (answer 422)."""
    clock = time.time if now is None else (lambda: now)
    verifier = SignatureVerifier(secret, tolerance_s=tolerance_s, clock=clock)
    webhook_id = verifier.verify(body, headers)
    return parse_callback_body(body, webhook_id=webhook_id)
