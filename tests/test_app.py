"""The web app: authentication, payload checks, durable 202, health, metrics."""

from __future__ import annotations

import base64
import json

import pytest
import redis as redis_lib

from router.app import create_app
from router.errors import ConfigError
from tests.payloads import custom_payload, default_payload
from tests.support import INBOUND_TOKEN, router_env

CALLBACK = "http://127.0.0.1:9/breaker/callback"
AUTH = {"Authorization": f"Bearer {INBOUND_TOKEN}"}


def post(client, payload, headers=AUTH, **kwargs):
    return client.post("/webhooks/datadog", json=payload, headers=headers, **kwargs)


def test_custom_payload_is_queued_and_described(client, redis, key_prefix):
    response = post(client, custom_payload(CALLBACK))
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "queued"
    assert body["notification"]["transition"] == "alert"
    assert body["notification"]["monitor_id"] == "155844758"
    [delivery] = body["deliveries"]
    assert delivery["url"] == CALLBACK and delivery["duplicate"] is False
    # Durable before the answer: the record and the stream entry are in Redis now.
    assert redis.hget(f"{key_prefix}:delivery:{delivery['id']}", "url") == CALLBACK
    assert redis.xlen(f"{key_prefix}:deliveries") == 1


def test_a_sender_retry_does_not_create_a_second_delivery(client, redis, key_prefix):
    first = post(client, custom_payload(CALLBACK)).get_json()
    second = post(client, custom_payload(CALLBACK)).get_json()
    assert second["deliveries"][0]["id"] == first["deliveries"][0]["id"]
    assert second["deliveries"][0]["duplicate"] is True
    assert redis.xlen(f"{key_prefix}:deliveries") == 1


def test_the_default_payload_is_accepted(client):
    response = post(client, default_payload(CALLBACK))
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["notification"]["monitor_id"] == "309811"
    assert body["notification"]["event_id"] == "3089904566766935419"


def test_form_encoded_payload_is_accepted(client):
    response = client.post("/webhooks/datadog", data=custom_payload(CALLBACK), headers=AUTH)
    assert response.status_code == 202, response.get_json()


@pytest.mark.parametrize("endpoint", ["/webhooks/datadog", "/webhooks/alertmanager"])
@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", None])
def test_a_json_body_without_a_json_content_type_is_415_with_the_header_to_add(
    client, redis, key_prefix, endpoint, content_type
):
    # What `curl -d @docs/examples/alert.json` sends without -H: form-encoded, so the JSON text
    # would read as one form key and the answer would blame a missing message (422).
    headers = dict(AUTH)
    if content_type:
        headers["Content-Type"] = content_type
    data = "\n  " + json.dumps(custom_payload(CALLBACK))
    response = client.post(endpoint, data=data, headers=headers)
    assert response.status_code == 415, response.get_json()
    error = response.get_json()["error"]
    assert error.startswith("the body is JSON but its Content-Type is ")
    assert "-H 'Content-Type: application/json'" in error
    assert redis.exists(f"{key_prefix}:deliveries") == 0


def test_no_callback_line_is_accepted_and_says_so(client, redis, key_prefix):
    payload = custom_payload(CALLBACK)
    payload["body"] = "%%%\nNothing for the router here\n%%%"
    response = post(client, payload)
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "no_callback" and body["deliveries"] == []
    assert "circuit-breaker-callback" in body["detail"]
    assert redis.exists(f"{key_prefix}:deliveries") == 0


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Authorization": f"Bearer {INBOUND_TOKEN}"}, id="bearer"),
        pytest.param({"X-Router-Token": INBOUND_TOKEN}, id="header"),
        pytest.param(
            {"Authorization": "Basic " + base64.b64encode(f"dd:{INBOUND_TOKEN}".encode()).decode()},
            id="basic-password",
        ),
    ],
)
def test_the_token_is_accepted_where_datadog_can_put_it(client, headers):
    assert post(client, custom_payload(CALLBACK), headers=headers).status_code == 202


@pytest.mark.parametrize(
    "headers, expected",
    [
        pytest.param({}, "no credentials", id="missing"),
        pytest.param({"Authorization": "Bearer nope"}, "not ROUTER_INBOUND_TOKEN", id="wrong"),
        pytest.param(
            {"X-Router-Token": INBOUND_TOKEN[:-1]}, "not ROUTER_INBOUND_TOKEN", id="prefix"
        ),
    ],
)
def test_bad_credentials_are_401_with_a_reason(client, headers, expected, redis, key_prefix):
    response = post(client, custom_payload(CALLBACK), headers=headers)
    assert response.status_code == 401
    assert expected in response.get_json()["error"]
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert redis.exists(f"{key_prefix}:deliveries") == 0


def test_unauthenticated_mode_must_be_chosen_on_purpose(redis_url, key_prefix):
    env = router_env(redis_url, key_prefix)
    del env["ROUTER_INBOUND_TOKEN"]
    with pytest.raises(ConfigError, match="ROUTER_INBOUND_TOKEN"):
        create_app(env)
    app = create_app({**env, "ROUTER_INBOUND_AUTH": "none"})
    assert post(app.test_client(), custom_payload(CALLBACK), headers={}).status_code == 202


@pytest.mark.parametrize(
    "data, content_type, status, expected",
    [
        pytest.param(b"{not json", "application/json", 400, "not valid JSON", id="not-json"),
        pytest.param(b"", "application/json", 400, "empty", id="empty"),
        pytest.param(b"[1, 2]", "application/json", 422, "must be a JSON object", id="array"),
        pytest.param(b"{}", "text/plain", 415, "Content-Type", id="content-type"),
        pytest.param(b"{}", None, 415, "Content-Type", id="no-content-type"),
        pytest.param(b"{}", "application/json", 422, "body", id="missing-fields"),
        # A malformed optional field is a 202 that names it (tests/test_app_datadog_payloads.py);
        # a message that is not text leaves nothing to route.
        pytest.param(
            json.dumps({**custom_payload(CALLBACK), "body": {"x": 1}}).encode(),
            "application/json",
            422,
            "body",
            id="message-not-text",
        ),
    ],
)
def test_bad_payloads_get_a_4xx_naming_the_problem(client, data, content_type, status, expected):
    headers = dict(AUTH)
    if content_type:
        headers["Content-Type"] = content_type
    response = client.post("/webhooks/datadog", data=data, headers=headers)
    assert response.status_code == status, response.get_json()
    assert expected in response.get_json()["error"]


def test_a_body_over_the_limit_is_413(redis_url, key_prefix):
    app = create_app(router_env(redis_url, key_prefix, ROUTER_MAX_BODY_BYTES="2048"))
    payload = custom_payload(CALLBACK)
    payload["body"] += "x" * 4096
    response = post(app.test_client(), payload)
    assert response.status_code == 413
    assert "2048" in response.get_json()["error"]


def test_unknown_paths_and_methods_answer_json(client):
    assert client.get("/nope").get_json()["status"] == 404
    response = client.get("/webhooks/datadog")
    assert response.status_code == 405 and "error" in response.get_json()


def test_redis_down_is_503_not_500(key_prefix):
    dead = redis_lib.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.2, decode_responses=True
    )
    app = create_app(router_env("redis://127.0.0.1:1/0", key_prefix), redis_client=dead)
    client = app.test_client()
    response = post(client, custom_payload(CALLBACK))
    assert response.status_code == 503
    assert "Redis" in response.get_json()["error"] and response.headers["Retry-After"]
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200


def test_readyz_and_metrics(client):
    assert client.get("/readyz").get_json()["checks"]["redis"] == "ok"
    post(client, custom_payload(CALLBACK))
    post(client, custom_payload(CALLBACK))
    text = client.get("/metrics").get_data(as_text=True)
    assert "breaker_router_redis_up 1.0" in text
    assert 'breaker_router_queue_depth{state="ready"} 1.0' in text
    assert "breaker_router_deliveries_accepted_total 1.0" in text
    assert "breaker_router_deliveries_duplicate_total 1.0" in text


def test_missing_redis_url_names_the_variable(key_prefix):
    env = router_env("", key_prefix)
    with pytest.raises(ConfigError, match="REDIS_URL"):
        create_app(env)


@pytest.mark.parametrize(
    "raw, status, expected",
    [
        pytest.param(
            b'{"body": "x", "title": "[Triggered] a", "foo": "\\ud800"}',
            400,
            "not valid Unicode",
            id="lone-surrogate",
        ),
        pytest.param(
            b'{"a": ' + b"[" * 3000 + b"]" * 3000 + b"}", 400, "nested deeper than", id="deep"
        ),
        pytest.param(b'{"id": ' + b"9" * 5000 + b"}", 400, "not valid JSON", id="huge-int"),
    ],
)
def test_hostile_json_is_a_4xx_not_a_500(client, raw, status, expected):
    response = client.post(
        "/webhooks/datadog", data=raw, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == status, response.get_json()
    assert expected in response.get_json()["error"]


def test_a_surrogate_in_a_callback_url_is_refused_before_anything_is_stored(
    client, redis, key_prefix
):
    payload = json.dumps(custom_payload(CALLBACK)).replace(CALLBACK, CALLBACK + "\\udc00")
    response = client.post(
        "/webhooks/datadog", data=payload, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert redis.exists(f"{key_prefix}:deliveries") == 0


def test_too_many_callback_urls_are_refused(client, redis, key_prefix):
    payload = custom_payload(CALLBACK)
    lines = "\n".join(f"circuit-breaker-callback: {CALLBACK}/{n}" for n in range(21))
    payload["body"] = f"%%%\n{lines}\n%%%"
    response = post(client, payload)
    assert response.status_code == 422
    assert "at most 20" in response.get_json()["error"]
    assert redis.exists(f"{key_prefix}:deliveries") == 0


def test_an_unusable_callback_line_is_logged_as_a_warning(client, caplog):
    payload = custom_payload(CALLBACK)
    payload["body"] = "circuit-breaker-callback: bank-charge.internal/breaker/callback"
    with caplog.at_level("WARNING", logger="router.inbound"):
        response = post(client, payload)
    assert response.status_code == 202
    assert response.get_json()["problems"]
    assert "unusable callback lines" in caplog.text


def test_a_token_with_stray_whitespace_in_the_environment_still_matches(redis_url, key_prefix):
    env = router_env(redis_url, key_prefix, ROUTER_INBOUND_TOKEN=f"  {INBOUND_TOKEN}\n")
    client = create_app(env).test_client()
    assert post(client, custom_payload(CALLBACK)).status_code == 202


SECRET = "s3cr3t-pass"
CREDENTIALED = f"http://svc:{SECRET}@127.0.0.1:9/breaker/callback"


def _stored(redis, key_prefix) -> str:
    """Everything the router keeps under its prefix, as one text to search."""
    parts = []
    for key in redis.scan_iter(match=f"{key_prefix}:*", count=1000):
        kind = redis.type(key)
        if kind == "hash":
            parts.append(json.dumps(redis.hgetall(key)))
        elif kind == "stream":
            parts.append(json.dumps(redis.xrange(key)))
    return "\n".join(parts)


def test_a_callback_url_with_credentials_is_422_and_never_echoed(client, redis, key_prefix, caplog):
    payload = custom_payload(CREDENTIALED)
    with caplog.at_level("DEBUG"):
        response = post(client, payload)
    assert response.status_code == 422, response.get_json()
    error = response.get_json()["error"]
    assert "credentials" in error
    assert "http://***@127.0.0.1:9/breaker/callback" in error
    assert SECRET not in response.get_data(as_text=True)
    assert SECRET not in caplog.text
    assert redis.exists(f"{key_prefix}:deliveries") == 0


def test_one_line_with_credentials_does_not_lose_the_good_line(client, redis, key_prefix, caplog):
    payload = custom_payload(CALLBACK)
    payload["body"] = (
        f"%%%\ncircuit-breaker-callback: {CREDENTIALED}\ncircuit-breaker-callback: {CALLBACK}\n%%%"
    )
    with caplog.at_level("DEBUG"):
        response = post(client, payload)
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["status"] == "queued"
    assert [d["url"] for d in body["deliveries"]] == [CALLBACK]
    [problem] = body["problems"]
    assert "line 2" in problem and "http://***@127.0.0.1:9/breaker/callback" in problem
    assert "unusable callback lines" in caplog.text
    # Neither the answer, the log, nor what is stored (and sent to the other service) has it.
    assert SECRET not in response.get_data(as_text=True)
    assert SECRET not in caplog.text
    assert SECRET not in _stored(redis, key_prefix)
    assert "http://***@127.0.0.1:9/breaker/callback" in _stored(redis, key_prefix)


def test_a_bad_line_beside_a_good_one_is_named_in_the_202(client):
    payload = custom_payload(CALLBACK)
    payload["body"] = (
        f"circuit-breaker-callback: {CALLBACK}\ncircuit-breaker-callback: {CALLBACK}/{{{{x}}}}"
    )
    response = post(client, payload)
    assert response.status_code == 202
    body = response.get_json()
    assert [d["url"] for d in body["deliveries"]] == [CALLBACK]
    [problem] = body["problems"]
    assert problem.startswith("line 2:") and "template variable" in problem
