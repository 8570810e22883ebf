"""`POST /webhooks/alertmanager`: auth, one delivery per alert and URL, duplicates, 4xx."""

from __future__ import annotations

import base64
import json

import pytest

from router.app import create_app
from router.errors import ConfigError
from router.model import Notification
from tests.alertmanager_payloads import (
    ALERTMANAGER_SAMPLE,
    am_webhook,
    bank_alert,
    grafana_sample,
)
from tests.support import INBOUND_TOKEN, router_env

CALLBACK = "http://127.0.0.1:9/breaker/callback"
OTHER = "http://127.0.0.1:9/breaker/other"
PATH = "/webhooks/alertmanager"
# Alertmanager's `http_config: {authorization: {credentials: ...}}` sends exactly this.
AUTH = {"Authorization": f"Bearer {INBOUND_TOKEN}"}


def post(client, payload, headers=AUTH, method="post"):
    return getattr(client, method)(PATH, json=payload, headers=headers)


def stored(redis, key_prefix, delivery_id) -> Notification:
    raw = redis.hget(f"{key_prefix}:delivery:{delivery_id}", "notification")
    return Notification.from_dict(json.loads(raw))


def test_each_alert_is_queued_and_named_in_the_202(client, redis, key_prefix):
    payload = am_webhook(bank_alert("0001", CALLBACK), bank_alert("0002", CALLBACK))
    response = post(client, payload)
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["status"] == "queued" and body["sender"] == "alertmanager"
    assert [a["fingerprint"] for a in body["alerts"]] == ["b4e10001c0ffee00", "b4e10002c0ffee00"]
    assert [a["transition"] for a in body["alerts"]] == ["alert", "alert"]
    deliveries = body["deliveries"]
    assert [d["url"] for d in deliveries] == [CALLBACK, CALLBACK]
    assert [d["duplicate"] for d in deliveries] == [False, False]
    assert deliveries[0]["alert"] == "b4e10001c0ffee00"
    # Durable before the answer, and the group travels with each delivery.
    assert redis.xlen(f"{key_prefix}:deliveries") == 2
    notification = stored(redis, key_prefix, deliveries[0]["id"])
    assert notification.source == "alertmanager"
    assert notification.carried is not None and len(notification.carried.groups) == 2


def test_a_resend_while_firing_creates_no_second_delivery(client, redis, key_prefix):
    first = post(client, am_webhook(bank_alert("0001", CALLBACK))).get_json()
    # repeat_interval: the same alert again, with endsAt moved and a new alert beside it.
    again = am_webhook(
        bank_alert("0001", CALLBACK, ends_at="2026-11-18T21:50:00Z"), bank_alert("0002", CALLBACK)
    )
    second = post(client, again).get_json()
    assert second["deliveries"][0]["id"] == first["deliveries"][0]["id"]
    assert [d["duplicate"] for d in second["deliveries"]] == [True, False]
    assert redis.xlen(f"{key_prefix}:deliveries") == 2


def test_an_alert_with_two_urls_gets_two_deliveries(client):
    alert = bank_alert("0001", f"{CALLBACK} {OTHER}")
    deliveries = post(client, am_webhook(alert)).get_json()["deliveries"]
    assert [d["url"] for d in deliveries] == [CALLBACK, OTHER]


def test_grafana_may_send_with_put(client):
    response = post(client, grafana_sample(CALLBACK), method="put")
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["sender"] == "grafana" and len(body["deliveries"]) == 2


def test_alerts_without_a_callback_are_named_and_nothing_queued(client, redis, key_prefix):
    response = post(client, ALERTMANAGER_SAMPLE)
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "no_callback" and body["deliveries"] == []
    assert "circuit_breaker_callback" in body["detail"]
    assert body["alerts"][0]["status"] == "no_callback"
    assert redis.exists(f"{key_prefix}:deliveries") == 0


def test_warnings_reach_the_202(client):
    alert = bank_alert("0001", CALLBACK)
    alert["startsAt"] = "soon"
    body = post(client, am_webhook(alert)).get_json()
    assert body["status"] == "queued"
    assert any("field 'startsAt'" in w for w in body["warnings"])


def test_a_bad_callback_line_is_a_problem_in_the_202(client):
    alert = bank_alert("0001", "ftp://bank-charge.internal/cb")
    body = post(client, am_webhook(alert)).get_json()
    assert body["status"] == "no_callback"
    assert "is not an http(s) URL" in body["alerts"][0]["problems"][0]


def test_the_configured_annotation_is_read(redis_url, key_prefix):
    env = router_env(redis_url, key_prefix, ROUTER_ALERTMANAGER_ANNOTATION="breaker_url")
    client = create_app(env).test_client()
    alert = bank_alert("0001", CALLBACK, annotation="breaker_url")
    assert len(post(client, am_webhook(alert)).get_json()["deliveries"]) == 1


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(AUTH, id="bearer"),
        pytest.param(
            {"Authorization": "Basic " + base64.b64encode(f"am:{INBOUND_TOKEN}".encode()).decode()},
            id="basic-auth",
        ),
    ],
)
def test_alertmanager_http_config_credentials_are_accepted(client, headers):
    assert (
        post(client, am_webhook(bank_alert("0001", CALLBACK)), headers=headers).status_code == 202
    )


@pytest.mark.parametrize(
    "headers",
    [pytest.param({}, id="none"), pytest.param({"Authorization": "Bearer x"}, id="wrong")],
)
def test_bad_credentials_are_401(client, headers, redis, key_prefix):
    response = post(client, am_webhook(bank_alert("0001", CALLBACK)), headers=headers)
    assert response.status_code == 401
    assert "error" in response.get_json()
    assert redis.exists(f"{key_prefix}:deliveries") == 0


@pytest.mark.parametrize(
    "data, content_type, status, expected",
    [
        pytest.param(b"{", "application/json", 400, "not valid JSON", id="bad-json"),
        pytest.param(b"", "application/json", 400, "empty", id="empty"),
        pytest.param(b"{}", "text/plain", 415, "Content-Type", id="content-type"),
        pytest.param(b"[]", "application/json", 422, "JSON object", id="array"),
        pytest.param(b'{"version": "4"}', "application/json", 422, "'alerts'", id="no-alerts"),
        pytest.param(
            b'{"alerts": [{"labels": {}}]}',
            "application/json",
            422,
            "no usable alert",
            id="unusable",
        ),
    ],
)
def test_unusable_payloads_are_4xx_with_a_json_error(client, data, content_type, status, expected):
    headers = {**AUTH, "Content-Type": content_type}
    response = client.post(PATH, data=data, headers=headers)
    assert response.status_code == status
    assert expected in response.get_json()["error"]


def test_credentials_in_every_callback_url_are_422(client, redis, key_prefix):
    alert = bank_alert("0001", "https://user:pw@bank-charge.internal/cb")
    response = post(client, am_webhook(alert))
    assert response.status_code == 422
    assert "credentials" in response.get_json()["error"]
    assert "pw" not in response.get_json()["error"]
    assert redis.exists(f"{key_prefix}:deliveries") == 0


def test_one_refused_alert_does_not_lose_the_others(client, redis, key_prefix):
    payload = am_webhook(
        bank_alert("0001", "https://user:pw@bank-charge.internal/cb"), bank_alert("0002", CALLBACK)
    )
    body = post(client, payload).get_json()
    assert body["status"] == "queued"
    assert body["alerts"][0]["status"] == "refused"
    assert "credentials" in body["alerts"][0]["error"]
    assert [d["alert"] for d in body["deliveries"]] == ["b4e10002c0ffee00"]


def test_a_malformed_annotation_setting_stops_start_up_naming_it(redis_url, key_prefix):
    env = router_env(redis_url, key_prefix, ROUTER_ALERTMANAGER_ANNOTATION="breaker url")
    with pytest.raises(ConfigError, match="ROUTER_ALERTMANAGER_ANNOTATION"):
        create_app(env)
