"""The Datadog webhook endpoint on real payload shapes: a 4xx only for what is unusable."""

from __future__ import annotations

import json
import logging

import pytest

from tests import payloads
from tests.support import INBOUND_TOKEN

CALLBACK = "http://127.0.0.1:9/breaker/callback"
AUTH = {"Authorization": f"Bearer {INBOUND_TOKEN}"}


def post(client, payload):
    return client.post("/webhooks/datadog", json=payload, headers=AUTH)


@pytest.mark.parametrize(
    ("payload", "monitor_id", "event_id", "transition"),
    [
        pytest.param(
            payloads.komodor_payload(CALLBACK),
            "155844758",
            "7345023619263187422",
            "recovery",
            id="alert-object",
        ),
        pytest.param(
            payloads.event_alert_objects_payload(CALLBACK),
            "221164084",
            "8306082202796025694",
            "warning",
            id="event-and-alert-objects",
        ),
        pytest.param(
            payloads.nested_only_payload(CALLBACK),
            "155844758",
            "7345023619263187422",
            "alert",
            id="nested-only",
        ),
        pytest.param(
            payloads.camel_case_payload(CALLBACK),
            "155844758",
            "7345023619263187422",
            "no_data",
            id="camel-case",
        ),
    ],
)
def test_published_templates_are_queued(client, payload, monitor_id, event_id, transition):
    response = post(client, payload)
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["status"] == "queued"
    assert (
        body["notification"]["monitor_id"],
        body["notification"]["event_id"],
        body["notification"]["transition"],
    ) == (monitor_id, event_id, transition)
    assert body["warnings"] == []


def test_encode_as_form_with_objects_as_json_text_is_queued(client):
    fields = payloads.form_encoded_fields(payloads.komodor_payload(CALLBACK))
    response = client.post("/webhooks/datadog", data=fields, headers=AUTH)
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["notification"]["monitor_id"] == "155844758"
    assert body["notification"]["transition"] == "recovery"
    assert body["warnings"] == []


def test_a_malformed_optional_field_is_queued_and_named_in_the_answer_and_the_log(
    client, redis, key_prefix, caplog
):
    payload = {
        **payloads.custom_payload(CALLBACK),
        "org": "Example Org",
        "date": "yesterday",
        "alert_scope": 5,
    }
    with caplog.at_level(logging.WARNING, logger="router.inbound"):
        response = post(client, payload)
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["status"] == "queued" and len(body["deliveries"]) == 1
    assert body["warnings"] == [
        "field 'org': expected an object, got \"Example Org\"; ignored",
        "field 'date': expected epoch milliseconds as a string, got \"yesterday\"; ignored",
        "field 'alert_scope': expected a string, got 5; ignored",
    ]
    assert redis.xlen(f"{key_prefix}:deliveries") == 1
    logged = [r.getMessage() for r in caplog.records if r.name == "router.inbound"]
    assert any("field 'org'" in line and "field 'date'" in line for line in logged), logged


def test_warnings_are_named_when_nothing_is_queued(client):
    payload = {
        **payloads.custom_payload(CALLBACK),
        "body": "%%%\nNo callback here\n%%%",
        "tags": {"env": "prod"},
    }
    body = post(client, payload).get_json()
    assert body["status"] == "no_callback"
    assert body["warnings"] == ["field 'tags': expected a string, got an object; ignored"]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({"body": {"text": "x"}}, "field 'body'", id="message-not-text"),
        pytest.param({"body": None}, "field 'body'", id="no-message"),
        pytest.param(
            {"alert_transition": "$ALERT_TRANSITION", "title": "Bank API errors"},
            "expected a Datadog $ALERT_TRANSITION",
            id="no-way-to-tell-alert-from-recovery",
        ),
    ],
)
def test_only_an_unusable_notification_is_refused(client, changes, expected):
    payload = {k: v for k, v in {**payloads.custom_payload(CALLBACK), **changes}.items()}
    payload = {k: v for k, v in payload.items() if v is not None}
    response = client.post(
        "/webhooks/datadog",
        data=json.dumps(payload),
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.get_json()
    assert expected in response.get_json()["error"]
