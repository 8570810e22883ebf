"""Alertmanager (webhook v4) and Grafana (webhook contact point) payloads, shaped as they send them.

The first two are the public examples: Alertmanager's v4 sample (ProbeFailure, with
`truncatedAlerts`) and Grafana's documented webhook JSON. `bank_alert`/`am_webhook` build the
payload Alertmanager sends for the README's `BankChargeErrors` rule.
"""

from __future__ import annotations

import copy
from typing import Any

ALERTMANAGER_SAMPLE: dict[str, Any] = {
    "receiver": "sms",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "alertname": "ProbeFailure",
                "instance": "https://server.example.org",
                "job": "http_checks",
                "monitor": "master",
                "severity": "critical",
            },
            "annotations": {
                "description": "Instance https://server.example.org has been down for over 5m. "
                "Job: http_checks",
                "summary": "BlackBox Probe Failure: https://server.example.org",
            },
            "startsAt": "2023-02-06T13:08:45.828Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example.org:9090/graph?g0.expr=probe_success+%3D%3D+0"
            "&g0.tab=1",
            "fingerprint": "1a30ba71cca2921f",
        }
    ],
    "groupLabels": {"alertname": "ProbeFailure"},
    "commonLabels": {
        "alertname": "ProbeFailure",
        "instance": "https://server.example.org",
        "job": "http_checks",
        "monitor": "master",
        "severity": "critical",
    },
    "commonAnnotations": {
        "description": "Instance https://server.example.org has been down for over 5m. "
        "Job: http_checks",
        "summary": "BlackBox Probe Failure: https://server.example.org",
    },
    "externalURL": "http://prometheus.example.org:9093",
    "version": "4",
    "groupKey": '{}/{severity="critical"}:{alertname="ProbeFailure"}',
    "truncatedAlerts": 0,
}

GRAFANA_SAMPLE: dict[str, Any] = {
    "receiver": "My Super Webhook",
    "status": "firing",
    "orgId": 1,
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "High memory usage", "team": "blue", "zone": "us-1"},
            "annotations": {
                "description": "The system has high memory usage",
                "runbook_url": "https://myrunbook.com/runbook/1234",
                "summary": "This alert was triggered for zone us-1",
            },
            "startsAt": "2021-10-12T09:51:03.157076+02:00",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "https://play.grafana.org/alerting/1afz29v7z/edit",
            "fingerprint": "c6eadffa33fcdf37",
            "silenceURL": "https://play.grafana.org/alerting/silence/new?alertmanager=grafana"
            "&matchers=alertname%3DT2%2Cteam%3Dblue%2Czone%3Dus-1",
            "dashboardURL": "",
            "panelURL": "",
            "values": {"B": 44.23943737541908, "C": 1},
        },
        {
            "status": "firing",
            "labels": {"alertname": "High CPU usage", "team": "blue", "zone": "eu-1"},
            "annotations": {
                "description": "The system has high CPU usage",
                "runbook_url": "https://myrunbook.com/runbook/1234",
                "summary": "This alert was triggered for zone eu-1",
            },
            "startsAt": "2021-10-12T09:56:03.157076+02:00",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "https://play.grafana.org/alerting/d1rdpdv7k/edit",
            "fingerprint": "bc97ff14869b13e3",
            "silenceURL": "https://play.grafana.org/alerting/silence/new?alertmanager=grafana"
            "&matchers=alertname%3DT1%2Cteam%3Dblue%2Czone%3Deu-1",
            "dashboardURL": "",
            "panelURL": "",
            "values": {"B": 44.23943737541908, "C": 1},
        },
    ],
    "groupLabels": {},
    "commonLabels": {"team": "blue"},
    "commonAnnotations": {},
    "externalURL": "https://play.grafana.org/",
    "version": "1",
    "groupKey": "{}:{}",
    "truncatedAlerts": 0,
    "title": "[FIRING:2]  (blue)",
    "state": "alerting",
    "message": "**Firing**\n\nLabels:\n - alertname = T2\n - team = blue\n - zone = us-1\n"
    "Annotations:\n - description = This is the alert rule checking the second system\n"
    " - runbook_url = https://myrunbook.com\n - summary = This is my summary\n"
    "Source: https://play.grafana.org/alerting/1afz29v7z/edit\n",
}

# What Alertmanager writes for an alert that has not ended.
ZERO_TIME = "0001-01-01T00:00:00Z"
BANK_GROUP_KEY = '{}/{service="bank-charge"}:{alertname="BankChargeErrors"}'


def grafana_sample(callback_url: str) -> dict[str, Any]:
    """Grafana's documented payload, each alert rule annotated with `callback_url`."""
    payload = copy.deepcopy(GRAFANA_SAMPLE)
    for alert in payload["alerts"]:
        alert["annotations"]["circuit_breaker_callback"] = callback_url
    return payload


def bank_alert(
    bank_code: str,
    callback_url: str | None,
    *,
    status: str = "firing",
    starts_at: str = "2026-11-18T21:40:00.123456789Z",
    ends_at: str = ZERO_TIME,
    annotation: str = "circuit_breaker_callback",
) -> dict[str, Any]:
    """One alert of the README's `BankChargeErrors` rule, as Alertmanager renders it."""
    annotations = {
        "summary": f"Bank {bank_code} charge errors above 5%",
        "description": "The bank-charge API fails for this bank; its breaker opens.",
    }
    if callback_url is not None:
        annotations[annotation] = callback_url
    return {
        "status": status,
        "labels": {
            "alertname": "BankChargeErrors",
            "bank_code": bank_code,
            "env": "prod",
            "service": "bank-charge",
            "severity": "page",
        },
        "annotations": annotations,
        "startsAt": starts_at,
        "endsAt": ends_at,
        "generatorURL": "http://prometheus.example.org:9090/graph?g0.expr=bank_charge_error_ratio"
        "+%3E+0.05&g0.tab=1",
        "fingerprint": f"b4e1{bank_code}c0ffee00",
    }


def am_webhook(*alerts: dict[str, Any], group_key: str = BANK_GROUP_KEY) -> dict[str, Any]:
    """Alertmanager's v4 webhook body for one aggregation group holding `alerts`."""
    firing = any(alert["status"] == "firing" for alert in alerts)
    common = {
        k: v for k, v in alerts[0]["labels"].items() if all(a["labels"].get(k) == v for a in alerts)
    }
    return {
        "receiver": "breaker-router",
        "status": "firing" if firing else "resolved",
        "alerts": list(alerts),
        "groupLabels": {"alertname": "BankChargeErrors"},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example.org:9093",
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
    }
