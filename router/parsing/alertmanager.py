"""Prometheus Alertmanager (webhook v4) and Grafana alerting (webhook contact point) payloads.

Both POST one body per aggregation group listing every alert of the group: the firing ones and
the resolved ones not yet notified. Each alert becomes one `Notification`, its own group (its
labels are the group's tags): `firing` is an alert at `startsAt`, `resolved` a recovery at
`endsAt`. Alertmanager resends a group while it fires (`repeat_interval`) and when an alert joins
or leaves it, so an alert's dedup key is its fingerprint, status and start (or end) time: a
resend of an edge already seen queues nothing. Each notification carries the whole group as its
enrichment (`Notification.carried`), so no Datadog read is made for it.

The callback URL is the `circuit_breaker_callback` annotation (the name is configurable) or a
`circuit-breaker-callback:` line in any annotation, e.g. the description. Like the Datadog
parser this is liberal in what it accepts: a malformed optional field is ignored and named in
`warnings`, an alert that cannot be read is skipped and named, and only a payload with no usable
alert at all is refused (422).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from router.config import DEFAULT_ALERTMANAGER_ANNOTATION
from router.errors import PayloadError
from router.model import Enrichment, MonitorGroup, Notification, Transition
from router.parsing.callbacks import extract_callback_urls

# Shared with the Datadog parser, so both sources cut and quote what they show alike.
from router.parsing.datadog import MAX_MESSAGE_CHARS, MAX_TITLE_CHARS, _show, _truncated

Sender = Literal["alertmanager", "grafana"]

ALERTMANAGER_VERSION = "4"
# Grafana's contact point sends Alertmanager's shape (plus orgId, title, state, message) as "1".
GRAFANA_VERSION = "1"
_STATUSES: dict[str, Transition] = {"firing": "alert", "resolved": "recovery"}
_GROUP_STATUS = {"firing": "Alert", "resolved": "OK"}
# Each alert's delivery stores the whole group: n alerts cost n^2 stored groups. Past this
# many, an alert carries only its own group (marked partial), so the queue stays small.
MAX_CARRIED_ALERTS = 50
# Longer than this is no RFC 3339 time (30 characters with nanoseconds and an offset).
_TIME_CHARS = 64
# A time later than this after receipt is ignored: as a breaker's version it would block every
# real event after it (the same slack as the Datadog parser's `date`).
_FUTURE_SLACK_MS = 24 * 60 * 60 * 1000
# What ids keep of a SHA-256: 64 bits, as many as Alertmanager's own fingerprints.
_ID_HEX = 16
# Annotations read first into the message (what people write the callback line in).
_TEXT_ANNOTATIONS = ("summary", "description")
_IGNORED = "; ignored"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class AlertmanagerWebhook:
    """One webhook: a notification per usable alert, and every warning about the payload."""

    sender: Sender
    receiver: str | None
    group_key: str
    notifications: tuple[Notification, ...]
    warnings: tuple[str, ...]


def parse_alertmanager_webhook(
    payload: Mapping[str, object],
    *,
    keyword: str,
    annotation: str = DEFAULT_ALERTMANAGER_ANNOTATION,
    received_at_ms: int,
) -> AlertmanagerWebhook:
    """Read an Alertmanager or Grafana webhook; `PayloadError` (422) only when it is unusable."""
    top = _Fields(payload, "", received_at_ms)
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        got = "no 'alerts' field" if "alerts" not in payload else _show(alerts)
        raise PayloadError(f"field 'alerts': expected a list of alerts, got {got}")
    sender = _sender(top)
    group_status = top.text("status")
    receiver = top.text("receiver")
    org_id = top.identifier("orgId")
    group_labels = top.labels("groupLabels")
    common_labels = top.labels("commonLabels")
    common_annotations = top.labels("commonAnnotations")
    group_key = top.text("groupKey")
    if group_key is None:
        top.warnings.append(
            f"field 'groupKey': expected the group key (a string), got {top.absent('groupKey')}; "
            "the group labels stand in"
        )
        group_key = json.dumps(group_labels, sort_keys=True)
    truncated = top.count("truncatedAlerts")

    read: list[_Alert] = []
    alert_warnings: list[str] = []
    for index, raw in enumerate(alerts):
        fields = _Fields(
            raw if isinstance(raw, Mapping) else {}, f"alerts[{index}]: ", received_at_ms
        )
        alert = _read_alert(
            raw, fields, group_status, common_annotations, keyword=keyword, annotation=annotation
        )
        alert_warnings += fields.warnings
        if alert is not None:
            read.append(alert)
    if alerts and not read:
        raise PayloadError("no usable alert in 'alerts': " + "; ".join(alert_warnings))

    if truncated:
        top.warnings.append(
            f"field 'truncatedAlerts': {truncated} alerts were left out of this webhook "
            "(Alertmanager's max_alerts); they were not queued"
        )
    # The alerts of the group sent to the same callbacks are one "monitor": their deliveries
    # carry all of them and only them, so an alert naming other callbacks (or none) never
    # drives a breaker it is not meant for, nor does a snapshot close what other alerts hold.
    targets: dict[tuple[str, ...], list[_Alert]] = {}
    for alert in read:
        targets.setdefault(tuple(sorted(alert.callback_urls)), []).append(alert)
    prefix = "grafana-" if sender == "grafana" else "am-"
    carried = {
        urls: _carried(
            prefix + _hex(f"{org_id or ''}\x1f{receiver or ''}\x1f{group_key}\x1f{' '.join(urls)}"),
            members,
            truncated,
            name=group_labels.get("alertname") or common_labels.get("alertname") or receiver,
            tags=_tags(common_labels),
        )
        for urls, members in targets.items()
    }
    notifications = tuple(
        _notification(
            alert,
            carried[tuple(sorted(alert.callback_urls))],
            org_id=org_id,
            warnings=(*top.warnings, *alert.warnings),
            received_at_ms=received_at_ms,
        )
        for alert in read
    )
    return AlertmanagerWebhook(
        sender=sender,
        receiver=receiver,
        group_key=group_key,
        notifications=notifications,
        warnings=(*top.warnings, *alert_warnings),
    )


def _carried(
    monitor_id: str,
    members: list[_Alert],
    truncated: int,
    *,
    name: str | None,
    tags: tuple[str, ...],
) -> Enrichment:
    """What the deliveries of `members` tell about their group, and whether that is all of it."""
    problems: list[str] = []
    if truncated:
        problems.append(
            f"the sender left {truncated} alerts of the group out (max_alerts): only the "
            "notified alert's own group is known"
        )
    if len(members) > MAX_CARRIED_ALERTS:
        problems.append(
            f"the group has {len(members)} alerts for these callbacks, more than the "
            f"{MAX_CARRIED_ALERTS} a delivery carries: only the notified alert's own group is sent"
        )
    return Enrichment(
        status="partial" if problems else "complete",
        monitor_id=monitor_id,
        monitor_name=name,
        overall_state="Alert" if any(a.status == "firing" for a in members) else "OK",
        monitor_tags=tags,
        # Without all of them, only each alert's own group (set per notification).
        groups=None if problems else tuple(alert.group for alert in members),
        problems=tuple(problems),
    )


@dataclass(frozen=True)
class _Alert:
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    fingerprint: str
    starts_at_ms: int | None
    ends_at_ms: int | None
    generator_url: str | None
    # What identifies this edge when its time is unknown: the alert as sent, less `endsAt`.
    digest: str
    # The annotations as text, and the callback URLs found in it.
    message: str
    callback_urls: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def event_time_ms(self) -> int | None:
        return self.starts_at_ms if self.status == "firing" else self.ends_at_ms

    @property
    def group(self) -> MonitorGroup:
        tags = _tags(self.labels)
        return MonitorGroup(
            name=",".join(tags),
            status=_GROUP_STATUS[self.status],
            tags=tags,
            last_triggered_ms=self.starts_at_ms,
            last_resolved_ms=self.ends_at_ms if self.status == "resolved" else None,
        )


def _read_alert(
    raw: object,
    fields: _Fields,
    group_status: str | None,
    common_annotations: dict[str, str],
    *,
    keyword: str,
    annotation: str,
) -> _Alert | None:
    if not isinstance(raw, Mapping):
        fields.warnings.append(
            f"{fields.where}expected an alert object, got {_show(raw)}; alert ignored"
        )
        return None
    status = fields.text("status") or group_status
    if status not in _STATUSES:
        got = _show(raw["status"]) if "status" in raw else "no 'status' field"
        fields.warnings.append(
            f'{fields.where}field \'status\': expected "firing" or "resolved", got {got}; '
            "alert ignored"
        )
        return None
    if not isinstance(raw.get("labels"), Mapping):
        fields.warnings.append(
            f"{fields.where}field 'labels': expected an object, got {fields.absent('labels')}; "
            "alert ignored"
        )
        return None
    labels = fields.labels("labels")
    annotations = {**common_annotations, **fields.labels("annotations")}
    fingerprint = fields.text("fingerprint") or _hex(json.dumps(labels, sort_keys=True))
    without_end = {k: v for k, v in raw.items() if k != "endsAt"}
    message = _message(annotations, keyword, annotation)
    return _Alert(
        status=status,
        labels=labels,
        annotations=annotations,
        fingerprint=fingerprint,
        starts_at_ms=fields.time("startsAt"),
        ends_at_ms=fields.time("endsAt"),
        generator_url=fields.text("generatorURL"),
        digest=_hex(json.dumps(without_end, sort_keys=True, default=repr)),
        message=message,
        callback_urls=extract_callback_urls(message, keyword),
        warnings=tuple(fields.warnings),
    )


def _notification(
    alert: _Alert,
    carried: Enrichment,
    *,
    org_id: str | None,
    warnings: tuple[str, ...],
    received_at_ms: int,
) -> Notification:
    group = alert.group
    event_time_ms = alert.event_time_ms
    # Resends keep the edge's time: a firing alert's `endsAt` moves with every resend.
    edge = str(event_time_ms) if event_time_ms is not None else f"sha256:{alert.digest}"
    name = alert.labels.get("alertname") or carried.monitor_name or group.name
    summary = alert.annotations.get("summary")
    title = f"[{alert.status.upper()}] {name}" + (f": {summary}" if summary else "")
    return Notification(
        source="alertmanager",
        dedup_key=f"alertmanager:{carried.monitor_id}:{alert.fingerprint}:{alert.status}:{edge}",
        transition=_STATUSES[alert.status],
        datadog_transition=alert.status,
        renotification=False,
        title=_truncated(title, MAX_TITLE_CHARS),
        message=_truncated(alert.message, MAX_MESSAGE_CHARS),
        callback_urls=alert.callback_urls,
        received_at_ms=received_at_ms,
        event_id=alert.fingerprint,
        monitor_id=carried.monitor_id,
        event_time_ms=event_time_ms,
        tags=group.tags,
        scope=group.name,
        link=alert.generator_url,
        org_id=org_id,
        warnings=warnings,
        carried=replace(
            carried,
            groups=(group,) if carried.groups is None else carried.groups,
            event_tags=group.tags,
            event_title=title,
            event_time_ms=event_time_ms,
        ),
    )


def _message(annotations: dict[str, str], keyword: str, annotation: str) -> str:
    """The annotations as `name: value` lines; the callback annotation as callback lines."""
    lines = [f"{keyword}: {url}" for url in annotations.get(annotation, "").split()]
    ordered = [n for n in _TEXT_ANNOTATIONS if n in annotations]
    ordered += sorted(n for n in annotations if n not in _TEXT_ANNOTATIONS and n != annotation)
    lines += [f"{name}: {annotations[name]}" for name in ordered]
    return "\n".join(lines)


def _sender(top: _Fields) -> Sender:
    version = top.text("version")
    if version == GRAFANA_VERSION or (version is None and "orgId" in top.payload):
        return "grafana"
    if version is not None and version != ALERTMANAGER_VERSION:
        top.warnings.append(
            f"field 'version': expected \"{ALERTMANAGER_VERSION}\" (Alertmanager) or "
            f'"{GRAFANA_VERSION}" (Grafana), got {_show(version)}; read as version '
            f"{ALERTMANAGER_VERSION}"
        )
    return "alertmanager"


def _tags(labels: Mapping[str, str]) -> tuple[str, ...]:
    """Labels as Datadog-style `name:value` tags, sorted, so a label set has one spelling."""
    return tuple(sorted(f"{name}:{value}" for name, value in labels.items()))


def _hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_ID_HEX]


class _Fields:
    """Typed reads of one object's fields; a malformed value is noted in `warnings`."""

    def __init__(self, payload: Mapping[str, object], where: str, received_at_ms: int) -> None:
        self.payload = payload
        self.where = where
        self.received_at_ms = received_at_ms
        self.warnings: list[str] = []

    def _note(self, key: str, problem: str) -> None:
        self.warnings.append(f"{self.where}field {key!r}: {problem}{_IGNORED}")

    def absent(self, key: str) -> str:
        return _show(self.payload[key]) if key in self.payload else f"no {key!r} field"

    def text(self, key: str) -> str | None:
        value = self.payload.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str):
            self._note(key, f"expected a string, got {_show(value)}")
            return None
        return value.strip()

    def identifier(self, key: str) -> str | None:
        """A string or an integer id (Grafana's `orgId` is a JSON number), as text."""
        value = self.payload.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return self.text(key)

    def count(self, key: str) -> int:
        value = self.payload.get(key)
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self._note(key, f"expected a count (a whole number), got {_show(value)}")
            return 0
        return value

    def labels(self, key: str) -> dict[str, str]:
        """A map of strings (labels, annotations); other values in it are noted and dropped."""
        value = self.payload.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self._note(key, f"expected an object, got {_show(value)}")
            return {}
        found: dict[str, str] = {}
        for name, item in value.items():
            if isinstance(item, str):
                found[str(name)] = item
            else:
                self._note(f"{key}.{name}", f"expected a string, got {_show(item)}")
        return found

    def time(self, key: str) -> int | None:
        """An RFC 3339 time as epoch ms; Go's zero time (`0001-01-01T00:00:00Z`) is None."""
        text = self.text(key)
        if text is None:
            return None
        expected = f"expected an RFC 3339 time such as 2026-11-18T21:40:00Z, got {_show(text)}"
        if len(text) > _TIME_CHARS:
            self._note(key, expected)
            return None
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            self._note(key, expected)
            return None
        if moment.year <= 1:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        # Exact integer arithmetic: through a float, .828 s can come out as 827 ms.
        epoch_ms = (moment - _EPOCH) // _MS
        if epoch_ms > self.received_at_ms + _FUTURE_SLACK_MS:
            self._note(key, f"{_show(text)} is in the future (more than a day after receipt)")
            return None
        return epoch_ms
