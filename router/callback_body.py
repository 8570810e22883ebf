"""The JSON body the router POSTs to a service's callback (the callback contract).

`docs/callback-contract.md` documents every field; `breaker_client` parses it. Every id is a
string: Datadog event ids exceed 2^53 and would lose digits in JavaScript or a float.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from breaker_client.model import STATUS_AFTER

from router.model import Enrichment, MonitorGroup, Notification, split_tags

SCHEMA_VERSION = 1


def _iso_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def _group_in_notification(notification: Notification) -> dict[str, Any] | None:
    """The group this notification is about, as far as the notification itself tells."""
    if not notification.scope:
        return None
    carried = notification.carried
    for group in (carried.groups or ()) if carried else ():
        # The sender named the group's tags itself (Alertmanager labels): no splitting of
        # the scope text, which would cut a label value holding a comma.
        if group.name == notification.scope:
            return group.to_body()
    status = STATUS_AFTER.get(notification.transition)
    return MonitorGroup(
        name=notification.scope.replace(", ", ","),
        status=status or "Unknown",
        tags=notification.scope_tags,
    ).to_body()


def build_callback_body(
    delivery_id: str, notification: Notification, enrichment: Enrichment | None = None
) -> dict[str, Any]:
    """Render the callback body for one delivery of `notification`."""
    enrichment = enrichment or Enrichment.none("not enriched")
    monitor_id = notification.monitor_id or enrichment.monitor_id
    event_time_ms = notification.event_time_ms or enrichment.event_time_ms
    event_tags = notification.tags or enrichment.event_tags or ()
    return {
        "schema": SCHEMA_VERSION,
        "delivery_id": delivery_id,
        "transition": notification.transition,
        "datadog_transition": notification.datadog_transition,
        "renotification": notification.renotification,
        "source": notification.source,
        "monitor": {
            "id": str(monitor_id) if monitor_id is not None else None,
            "name": enrichment.monitor_name,
            "overall_state": enrichment.overall_state,
            "tags": list(enrichment.monitor_tags),
            # Every group of the monitor with its current status; empty unless enriched.
            # Use it for snapshots only when `enrichment.complete` is true.
            "groups": [group.to_body() for group in enrichment.groups or ()],
        },
        "group": _group_in_notification(notification),
        "event": {
            "id": notification.event_id,
            "title": notification.title or enrichment.event_title,
            "tags": list(event_tags),
            "time": _iso_ms(event_time_ms),
            "time_ms": event_time_ms,
            "link": notification.link,
        },
        "scope": {
            "text": notification.scope,
            "tags": list(split_tags(notification.scope)),
        },
        "alert_cycle_key": notification.alert_cycle_key,
        "org_id": notification.org_id,
        "message": notification.message,
        "enrichment": {
            "status": enrichment.status,
            "complete": enrichment.status == "complete",
            "problems": list(enrichment.problems),
        },
    }
