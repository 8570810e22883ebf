"""Datadog payloads shaped as Datadog sends them (see shared/reference/datadog-protocol.md)."""

from __future__ import annotations

import json
from typing import Any

from router.demo import datadog_payload


def custom_payload(
    callback_url: str,
    *,
    event_id: str = "7411112233445566778",
    transition: str = "Triggered",
    monitor_id: str = "155844758",
    scope: str = "bank_code:0001,env:prod",
    date_ms: str = "1795350000000",
) -> dict[str, Any]:
    """The README's recommended custom payload, as Datadog renders it (every value a string)."""
    return datadog_payload(
        callback_url,
        event_id=event_id,
        transition=transition,
        monitor_id=monitor_id,
        scope=scope,
        date_ms=int(date_ms),
    )


def default_payload(callback_url: str, *, event_id: str = "3089904566766935419") -> dict[str, Any]:
    """Datadog's default webhook payload: no monitor id or transition fields."""
    return {
        "body": (
            "%%%\nDock is almost out of memory @webhook-breaker-router\n"
            f"circuit-breaker-callback: {callback_url}\n"
            "[[Monitor Status](https://app.datadoghq.com/monitors#309811?group=host%3Ai-3b93aafb)]"
            " · [[Edit Monitor](https://app.datadoghq.com/monitors#309811/edit)]\n%%%"
        ),
        "last_updated": "1448435530000",
        "event_type": "metric_alert_monitor",
        "title": "[Triggered on {host:i-3b93aafb}] Dock is almost out of memory...",
        "date": "1448435530000",
        "org": {"id": "11023", "name": "Example Org"},
        "id": event_id,
    }


def body_2025(callback_url: str) -> str:
    """`$EVENT_MSG` as Datadog delivered it in October 2025 (a public capture), with a callback
    line where a user would put it: today's footer links carry the event id as a parameter."""
    link = (
        "https://app.datadoghq.com/monitors/221164084?from_ts=1759342924000&to_ts=1759344124000"
        "&event_id=8306082202796025694&link_source=monitor_notif"
    )
    return (
        "%%%\nWe get high datadog.event.tracking.intakev2.audit.bytes\nNotify: "
        f"@webhook-breaker-router\ncircuit-breaker-callback: {callback_url}\n\n"
        "[![Metric Graph](https://p.datadoghq.com/snapshot/view/dd-snapshots-prod/org_352347/"
        f"2025-10-01/3be6d9318e32a0b89b518edce4c91e4012229fb5.png)]({link})\n\n"
        "**datadog.event.tracking.intakev2.audit.bytes** over ***** was **> 100.0** on average "
        "during the **last 5m**.\n\nThe monitor was last triggered at Wed Oct 01 2025 18:37:04 "
        f"UTC.\n\n- - -\n\n[[Monitor Status]({link})] \u00b7 [[Edit Monitor](https://app."
        "datadoghq.com/monitors/221164084/edit?link_source=monitor_notif)]\n%%%"
    )


def default_payload_2025(callback_url: str) -> dict[str, Any]:
    """The default payload plus three fields, as one team received it in 2025."""
    return {
        "id": "8306082202796025694",
        "last_updated": "1759343824000",
        "event_type": "query_alert_monitor",
        "title": "[Triggered] High tracking",
        "date": "1759343824000",
        "org": {"id": "352347", "name": "vng"},
        "body": body_2025(callback_url),
        "transition": "Triggered",
        "aggregate": "06ade3da0286048d242ea8e46f521c93",
        "alert_priority": "P1",
    }


def komodor_payload(callback_url: str) -> dict[str, Any]:
    """Komodor's published template, rendered: an `alert` object beside the flat default fields."""
    return {
        "body": (
            f"%%%\nBank 0001 errors @webhook-breaker-router\ncircuit-breaker-callback: "
            f"{callback_url}\n%%%"
        ),
        "last_updated": "1700000000000",
        "event_type": "query_alert_monitor",
        "title": "[Recovered on {bank_code:0001,env:prod}] Bank API errors",
        "date": "1700000000000",
        "org": {"id": "11023", "name": "Example Org"},
        "id": "7345023619263187422",
        "tags": "monitor, bank_code:0001, env:prod",
        "alert": {
            "id": "155844758",
            "type": "success",
            "transition": "Recovered",
            "cycleId": "7345011207331812113",
            "priority": "P1",
            "status": "trace.http.request.errors over bank_code:0001,env:prod was <= 5.0",
            "scope": "bank_code:0001,env:prod",
            "query": "sum(last_5m):sum:trace.http.request.errors{*} by {bank_code,env} > 5",
            "metric": "trace.http.request.errors",
            "metric_namespace": "trace",
        },
        "aggregation_key": "9bd4ac313a4d1e8fae2482df7b77628",
        "link": "https://app.datadoghq.com/event/jump_to?event_id=7345023619263187422",
        "snapshot": "",
        "user": "",
        "username": "",
        "email": "",
    }


def event_alert_objects_payload(callback_url: str) -> dict[str, Any]:
    """A template a team published (2024): camelCase flat fields, `event` and `alert` objects;
    the transition is only in `event.title`, the message only in `event.msg`."""
    return {
        "id": "8306082202796025694",
        "user": "",
        "username": "",
        "email": "",
        "date": "1759343824000",
        "hostname": "",
        "textOnlyMsg": "We get high datadog.event.tracking.intakev2.audit.bytes",
        "tags": "env:prod,monitor,service:tracking",
        "lastUpdated": "1759343824000",
        "event": {
            "type": "query_alert_monitor",
            "title": "[P1] [Warn on {service:tracking}] High tracking",
            "msg": body_2025(callback_url),
        },
        "alert": {
            "id": "221164084",
            "type": "warning",
            "priority": "P1",
            "title": "[Warn on {service:tracking}] High tracking",
            "metric": "datadog.event.tracking.intakev2.audit.bytes",
            "query": "avg(last_5m):avg:datadog.event.tracking.intakev2.audit.bytes{*} > 100",
            "status": "datadog.event.tracking.intakev2.audit.bytes over * was > 50.0",
            "scope": "service:tracking",
        },
        "org": {"id": "352347", "name": "vng"},
    }


def nested_only_payload(callback_url: str) -> dict[str, Any]:
    """Everything inside `event` and `alert` objects, nothing flat."""
    return {
        "event": {
            "id": "7345023619263187422",
            "title": "[Triggered on {bank_code:0001,env:prod}] Bank API errors",
            "text": (
                f"%%%\nBank 0001 errors @webhook-breaker-router\ncircuit-breaker-callback: "
                f"{callback_url}\n%%%"
            ),
            "date": "1700000000000",
            "tags": "monitor,bank_code:0001,env:prod",
            "link": "https://app.datadoghq.com/event/jump_to?event_id=7345023619263187422",
            "type": "query_alert_monitor",
        },
        "alert": {
            "id": "155844758",
            "transition": "Re-Triggered",
            "scope": "bank_code:0001,env:prod",
            "cycle_key": "7345011207331812113",
        },
        "org": {"id": "11023", "name": "Example Org"},
    }


def camel_case_payload(callback_url: str) -> dict[str, Any]:
    """Easyalert's published template, rendered: flat camelCase keys."""
    return {
        "id": "7345023619263187422",
        "title": "[No Data on {host:db-2}] Replica heartbeat",
        "hostname": "db-2",
        "alertId": "155844758",
        "alertMetric": "replica.heartbeat",
        "alertQuery": "avg(last_5m):avg:replica.heartbeat{*} by {host} < 1",
        "alertStatus": "",
        "alertTransition": "No Data",
        "alertType": "error",
        "eventType": "query_alert_monitor",
        "eventMsg": f"%%%\nNo heartbeat\ncircuit-breaker-callback: {callback_url}\n%%%",
        "tags": "monitor,host:db-2",
        "link": "https://app.datadoghq.com/event/jump_to?event_id=7345023619263187422",
        "date": "1700000000000",
        "orgName": "Example Org",
        "customer": "YOUR_CUSTOMER_NAME",
        "team": "YOUR_TEAM_NAME",
        "environment": "production",
    }


def form_encoded_fields(payload: dict[str, Any]) -> dict[str, str]:
    """What "Encode as form" posts: one field per top-level key, objects as JSON text."""
    return {
        key: value if isinstance(value, str) else json.dumps(value)
        for key, value in payload.items()
    }
