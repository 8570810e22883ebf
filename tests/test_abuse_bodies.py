"""Hostile bodies and signatures: oversized, deeply nested, malformed, forged, replayed.

Each is refused with a 4xx JSON `{"error": ...}` that names the problem, never a 5xx, and
nothing is queued or applied.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis as redis_lib
from breaker_client import Breakers
from breaker_client.receiver import process_callback
from breaker_client.signature import SignatureVerifier, sign_headers

from router.app import create_app
from router.keys import RouterKeys
from router.parsing.jsonbody import MAX_JSON_DEPTH
from tests.sns_signing import (
    CERT_URL,
    body,
    make_signing_identity,
    notification_fields,
    sign_sns,
)
from tests.support import INBOUND_TOKEN, SIGNING_SECRET, router_env
from tests.test_client_callback import body_bytes, enrichment, notification

ADMIN_TOKEN = "abuse-admin-token-0123456789abcdef"
INBOUND = {"Authorization": f"Bearer {INBOUND_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
JSON_BODY_ENDPOINTS = [
    ("/webhooks/datadog", INBOUND),
    ("/webhooks/sns", INBOUND),
    ("/webhooks/alertmanager", INBOUND),
    ("/api/breakers/bank-charge/force-open", ADMIN),
    ("/api/breakers/bank-charge/clear", ADMIN),
    ("/api/dead-letters/dlv_x/replay", ADMIN),
    ("/api/dead-letters/dlv_x/purge", ADMIN),
]
MAX_BODY = 4096


@pytest.fixture(scope="module")
def hostile_client(redis_url):
    """One app and prefix for the module: none of its requests may queue anything."""
    prefix = f"test-abuse-{uuid.uuid4().hex[:8]}"
    redis = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    app = create_app(router_env(redis_url, prefix, ROUTER_ADMIN_TOKEN=ADMIN_TOKEN))
    yield app.test_client(), redis, prefix
    keys = list(redis.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        redis.delete(*keys)
    redis.close()


def nested(depth: int, *, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def assert_refused(response, status: int, words: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    answer = response.get_json()
    assert isinstance(answer, dict) and words in answer["error"], answer


def nothing_queued(redis, key_prefix: str) -> bool:
    return redis.xlen(RouterKeys(key_prefix).stream) == 0


@pytest.mark.parametrize(("path", "headers"), JSON_BODY_ENDPOINTS)
@pytest.mark.parametrize("kind", ["array", "object"])
@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 10_000])
def test_deeply_nested_json_is_400_everywhere(hostile_client, path, headers, kind, depth):
    client, redis, key_prefix = hostile_client
    # 10,000 levels overflow the decoder; 33 decode, but nothing a sender means nests so deep.
    raw = nested(depth, kind=kind)
    response = client.post(path, data=raw, headers={**headers, "Content-Type": "application/json"})
    assert_refused(response, 400, "nested deeper than")
    assert nothing_queued(redis, key_prefix)


@pytest.mark.parametrize(("path", "headers"), JSON_BODY_ENDPOINTS)
def test_nesting_at_the_limit_is_read(hostile_client, path, headers):
    client, _redis, _prefix = hostile_client
    raw = json.dumps(
        {"by": "a", "reason": "r", "x": json.loads(nested(MAX_JSON_DEPTH - 2, kind="array"))}
    )
    response = client.post(path, data=raw, headers={**headers, "Content-Type": "application/json"})
    assert response.status_code < 500
    assert "nested deeper than" not in (response.get_json() or {}).get("error", "")


@pytest.mark.parametrize(("path", "headers"), JSON_BODY_ENDPOINTS)
def test_a_body_over_the_limit_is_413_naming_the_limit(redis_url, redis, key_prefix, path, headers):
    env = router_env(
        redis_url, key_prefix, ROUTER_ADMIN_TOKEN=ADMIN_TOKEN, ROUTER_MAX_BODY_BYTES=str(MAX_BODY)
    )
    client = create_app(env).test_client()
    raw = b'{"body": "' + b"x" * MAX_BODY + b'"}'
    response = client.post(path, data=raw, headers={**headers, "Content-Type": "application/json"})
    assert_refused(response, 413, f"exceeds {MAX_BODY} bytes (ROUTER_MAX_BODY_BYTES)")
    assert nothing_queued(redis, key_prefix)


@pytest.mark.parametrize(("path", "headers"), JSON_BODY_ENDPOINTS)
@pytest.mark.parametrize(
    ("raw", "status", "words"),
    [
        (b"\xff\xfe{", 400, "not valid JSON"),
        (b'{"a": "\\ud800"}', 400, "not valid Unicode"),
        # json.loads reads UTF-16 too, where the escape's bytes are not b"\\u" in a row.
        ('{"a": "\\ud800"}'.encode("utf-16"), 400, "not valid Unicode"),
        (b'{"a": 1' + b"1" * 5000 + b"}", 400, "not valid JSON"),  # past Python's digit limit
        (b'{"a": 1}{"b": 2}', 400, "not valid JSON"),
    ],
)
def test_malformed_json_is_400_everywhere(hostile_client, path, headers, raw, status, words):
    client, redis, key_prefix = hostile_client
    response = client.post(path, data=raw, headers={**headers, "Content-Type": "application/json"})
    assert_refused(response, status, words)
    assert nothing_queued(redis, key_prefix)


# -- SNS: forged and replayed -------------------------------------------------------------------


@pytest.fixture
def sns_app(redis_url, key_prefix):
    identity = make_signing_identity()
    app = create_app(
        router_env(
            redis_url,
            key_prefix,
            ROUTER_SNS_TOPICS="arn:aws:sns:us-east-1:123456789012:system-health",
        ),
        sns_fetch_certificate=lambda url: identity.pem,
    )
    return app, identity


def _signed(identity, **changes) -> dict:
    now = datetime.now(UTC)
    fields = notification_fields(
        "[Triggered] x\ncircuit-breaker-callback: https://svc.internal/cb",
        timestamp=changes.pop("timestamp", now.isoformat(timespec="milliseconds")),
        **changes,
    )
    return sign_sns(fields, identity.key)


def test_a_forged_sns_message_is_401_and_queues_nothing(sns_app, redis, key_prefix):
    app, identity = sns_app
    forger = make_signing_identity()  # a key of its own, a certificate URL that looks right
    forged = _signed(forger)
    response = app.test_client().post("/webhooks/sns", data=body(forged), headers=INBOUND)
    assert_refused(response, 401, "SNS signature does not verify")
    genuine = _signed(identity)
    for field, value in (
        ("Message", "circuit-breaker-callback: https://evil/cb"),
        ("TopicArn", "x"),
    ):
        tampered = {**genuine, field: value}
        response = app.test_client().post("/webhooks/sns", data=body(tampered), headers=INBOUND)
        assert_refused(response, 401, "does not verify")
    assert nothing_queued(redis, key_prefix)


def test_a_replayed_sns_message_is_refused_once_it_is_old(sns_app, redis, key_prefix):
    app, identity = sns_app
    captured = _signed(identity, timestamp=(datetime.now(UTC) - timedelta(hours=2)).isoformat())
    response = app.test_client().post("/webhooks/sns", data=body(captured), headers=INBOUND)
    assert_refused(response, 403, "ROUTER_SNS_MAX_AGE")
    assert nothing_queued(redis, key_prefix)


def test_a_replayed_fresh_sns_message_queues_nothing_new(sns_app, redis, key_prefix):
    app, identity = sns_app
    message = body(_signed(identity))
    first = app.test_client().post("/webhooks/sns", data=message, headers=INBOUND)
    again = app.test_client().post("/webhooks/sns", data=message, headers=INBOUND)
    assert first.status_code == again.status_code == 202
    assert [d["duplicate"] for d in again.get_json()["deliveries"]] == [True]
    assert redis.xlen(RouterKeys(key_prefix).stream) == 1


def test_an_sns_certificate_url_off_amazon_is_401_before_any_fetch(redis_url, key_prefix):
    fetched: list[str] = []
    app = create_app(
        router_env(redis_url, key_prefix, ROUTER_SNS_TOPICS="x"),
        sns_fetch_certificate=lambda url: fetched.append(url) or b"",
    )
    identity = make_signing_identity()
    for url in (
        "https://sns.us-east-1.amazonaws.com.evil.example/c.pem",
        "https://169.254.169.254/c.pem",
        "http://sns.us-east-1.amazonaws.com/c.pem",
        CERT_URL.replace("https://", "https://user@"),
    ):
        forged = sign_sns({**_signed(identity), "SigningCertURL": url}, identity.key)
        response = app.test_client().post("/webhooks/sns", data=body(forged), headers=INBOUND)
        assert response.status_code == 401, url
    assert fetched == []


# -- callbacks: forged and replayed -------------------------------------------------------------

NOW = 1_700_000_000


@pytest.fixture
def breakers(redis_url, key_prefix):
    client = Breakers.from_url(redis_url, prefix=key_prefix, sync=False)
    yield client
    client.stop()


def _handle(breakers, raw: bytes, headers: dict[str, str], *, now: float = NOW):
    applied: list[str] = []

    def handler(event):
        applied.append(event.delivery_id)

    verifier = SignatureVerifier(SIGNING_SECRET, clock=lambda: now)
    return process_callback(raw, headers, verifier, handler, breakers=breakers), applied


def test_a_forged_callback_is_401_and_not_applied(breakers):
    raw = body_bytes(notification(), enrichment(("0001", "Alert")))
    forged = sign_headers(raw, "whsec_" + "QUJD" * 8, webhook_id="d-1", timestamp=NOW)
    response, applied = _handle(breakers, raw, forged)
    assert response.status == 401 and "signature does not match" in response.body["error"]
    genuine = sign_headers(raw, SIGNING_SECRET, webhook_id="d-1", timestamp=NOW)
    changed = raw.replace(b'"alert"', b'"recovery"', 1)
    response, applied_changed = _handle(breakers, changed, genuine)
    assert response.status == 401
    assert applied == applied_changed == []


def test_a_replayed_callback_is_applied_once_and_refused_once_stale(breakers):
    raw = body_bytes(notification(), enrichment(("0001", "Alert")))
    headers = sign_headers(raw, SIGNING_SECRET, webhook_id="d-1", timestamp=NOW)
    first, applied_first = _handle(breakers, raw, headers)
    again, applied_again = _handle(breakers, raw, headers, now=NOW + 60)
    stale, applied_stale = _handle(breakers, raw, headers, now=NOW + 301)
    assert first.status in (200, 204) and applied_first == ["d-1"]
    assert again.status == 200 and again.body["duplicate"] is True and applied_again == []
    assert stale.status == 401 and "replayed" in stale.body["error"] and applied_stale == []


@pytest.mark.parametrize("raw", [nested(10_000, kind="array"), nested(10_000, kind="object")])
def test_a_signed_but_absurdly_nested_callback_body_is_422_not_an_exception(breakers, raw):
    headers = sign_headers(raw, SIGNING_SECRET, webhook_id="d-1", timestamp=NOW)
    response, applied = _handle(breakers, raw, headers)
    assert response.status == 422 and "not JSON" in response.body["error"]
    assert applied == []
