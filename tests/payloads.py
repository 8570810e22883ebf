"""Datadog payloads shaped as Datadog sends them (see shared/reference/datadog-protocol.md)."""

from __future__ import annotations

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
