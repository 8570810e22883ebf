"""`POST /webhooks/alertmanager`: Prometheus Alertmanager's and Grafana's webhooks.

One webhook is one aggregation group; each of its alerts is queued as its own notification
(`router.parsing.alertmanager`), through the same `accept` as the Datadog endpoint, and the 202
names every alert with what was queued for it. Authentication is the same shared token.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from router.errors import PayloadError
from router.inbound import accept, authenticate, read_json_payload, settings
from router.parsing.alertmanager import parse_alertmanager_webhook
from router.queue import now_ms

bp = Blueprint("inbound_alertmanager", __name__)


# Grafana's webhook contact point may be set to PUT.
@bp.route("/webhooks/alertmanager", methods=["POST", "PUT"])
def alertmanager_webhook() -> tuple[dict[str, Any], int]:
    authenticate()
    config = settings()
    webhook = parse_alertmanager_webhook(
        read_json_payload(request),
        keyword=config.callback_keyword,
        annotation=config.alertmanager_annotation,
        received_at_ms=now_ms(),
    )
    alerts: list[dict[str, Any]] = []
    deliveries: list[dict[str, Any]] = []
    refusals: list[str] = []
    for notification in webhook.notifications:
        alert: dict[str, Any] = {
            "fingerprint": notification.event_id,
            "status": "queued",
            "transition": notification.transition,
            "group": notification.scope,
            "dedup_key": notification.dedup_key,
        }
        try:
            answer, _status = accept(notification)
        except PayloadError as exc:
            # Refused before anything of it was queued: the other alerts still count.
            alert.update(status="refused", error=str(exc))
            refusals.append(f"alert {notification.event_id}: {exc}")
            alerts.append(alert)
            continue
        alert.update(status=answer["status"], problems=answer["problems"])
        alerts.append(alert)
        deliveries += [{**item, "alert": notification.event_id} for item in answer["deliveries"]]
    if refusals and len(refusals) == len(alerts):
        raise PayloadError("; ".join(refusals), status=422)
    body: dict[str, Any] = {
        "status": "queued" if deliveries else "no_callback",
        "sender": webhook.sender,
        "group_key": webhook.group_key,
        "warnings": list(webhook.warnings),
        "alerts": alerts,
        "deliveries": deliveries,
    }
    if not deliveries:
        body["detail"] = (
            f"no alert has a '{config.alertmanager_annotation}' annotation or a "
            f"'{config.callback_keyword}: <url>' line with a usable URL; nothing was queued"
        )
    return body, 202
