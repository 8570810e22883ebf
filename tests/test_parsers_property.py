"""Hypothesis against every parser: whatever arrives, only the parser's documented error escapes.

Each property starts from what a real sender sends and breaks it (fields replaced by any JSON
value, deleted, or text built from the fragments parsers look for), so the cases reach deep
into each parser rather than stopping at its first check. `ABUSE_EXAMPLES` raises the count
(bench/abuse.py runs these with thousands); the suite keeps 300 each so it stays fast.
"""

from __future__ import annotations

import contextlib
import json
import os
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from breaker_client.callback import parse_callback_body
from breaker_client.errors import InvalidCallbackBody, InvalidSignature
from breaker_client.signature import SignatureVerifier, sign_headers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.allowlist import CallbackAllowList
from router.config import parse_callback_allow
from router.errors import AuthError, ConfigError, ForbiddenError, PayloadError
from router.parsing import datadog_text
from router.parsing.alertmanager import parse_alertmanager_webhook
from router.parsing.callbacks import extract_callback_urls, mask_credentials, scan_callback_lines
from router.parsing.conditionals import lint_message, render_for
from router.parsing.datadog import parse_datadog_webhook
from router.parsing.jsonbody import parse_json_object
from router.parsing.sns import (
    check_sns_age,
    notification_from_sns,
    parse_sns_envelope,
    validate_signing_cert_url,
    validate_subscribe_url,
)
from tests.alertmanager_payloads import am_webhook, bank_alert, grafana_sample
from tests.payloads import custom_payload, default_payload, event_alert_objects_payload
from tests.sns_signing import confirmation_fields, notification_fields
from tests.support import SIGNING_SECRET
from tests.test_client_callback import body_bytes, enrichment, notification

EXAMPLES = int(os.environ.get("ABUSE_EXAMPLES", "300"))
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,  # two cores shared by a whole team: time says nothing here
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=os.environ.get("ABUSE_RANDOM") is None,  # the suite is reproducible
)
KEYWORD = "circuit-breaker-callback"
NOW_MS = 1_795_350_000_000
CALLBACK = "https://bank-charge.internal/breaker/callback"
TRANSITIONS = ("alert", "warning", "alert_recovery", "warning_recovery", "no_data", "renotify")

# What the parsers look for, so random text is made of the pieces that steer them.
FRAGMENTS = (
    f"{KEYWORD}:",
    "CIRCUIT-BREAKER-CALLBACK :",
    "**",
    "https://",
    "http://",
    "bank-charge.internal",
    "/breaker/callback",
    "user:pw@",
    "{{#is_alert}}",
    "{{/is_alert}}",
    "{{^is_recovery}}",
    "{{#is_alert_recovery}}",
    "{{/is_alert_recovery}}",
    "{{else}}",
    "{{",
    "}}",
    "%%%",
    "&amp;",
    "&#10;",
    "\\n",
    "\n",
    "\r\n",
    " ",
    "[u](",
    ")",
    "<",
    ">",
    "|",
    "`",
    "\u200b",
    "\ud7ff",
    "[Triggered] ",
    "[Recovered on {host:a}] ",
    "Re-Triggered",
    "https://app.datadoghq.com/monitors/155844758",
    "https://app.datadoghq.com/event/event?id=7411112233445566778",
    "#",
    "?",
    "%2e",
    "%2F",
    "..",
    ";",
    "\\",
    "@",
    ":",
    "9" * 25,
    "$ID",
)
texts = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=6), max_size=24).map("".join)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | texts
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value where a mutation can land."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def mutate(data: st.DataObject, base: Any, *, max_changes: int = 4) -> Any:
    """`base` with a few values replaced by any JSON value, deleted, or keys added."""
    value = json.loads(json.dumps(base))
    for _ in range(data.draw(st.integers(0, max_changes), label="changes")):
        paths = _paths(value)
        if not paths:
            break
        path = data.draw(st.sampled_from(paths), label="where")
        parent = value
        for step in path[:-1]:
            parent = parent[step]
        action = data.draw(st.sampled_from(("replace", "delete", "add")), label="how")
        if action == "delete":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent[path[-1]], dict):
            parent[path[-1]][data.draw(texts, label="key")] = data.draw(json_values)
        else:
            parent[path[-1]] = data.draw(json_values, label="value")
    return value


@PROPERTY
@given(st.data(), st.sampled_from((custom_payload, default_payload, event_alert_objects_payload)))
def test_datadog_payloads_raise_only_payload_error(data, make):
    payload = mutate(data, make(CALLBACK))
    try:
        notification = parse_datadog_webhook(payload, keyword=KEYWORD, received_at_ms=NOW_MS)
    except PayloadError as exc:
        assert 400 <= exc.status < 500
        return
    assert all(url.startswith(("http://", "https://")) for url in notification.callback_urls)


@PROPERTY
@given(st.dictionaries(texts, json_values, max_size=8))
def test_any_json_object_as_a_datadog_payload_raises_only_payload_error(payload):
    try:
        parse_datadog_webhook(payload, keyword=KEYWORD, received_at_ms=NOW_MS)
    except PayloadError as exc:
        assert 400 <= exc.status < 500


@PROPERTY
@given(st.dictionaries(st.sampled_from(("body", "title", "id", "alert_id", "date")), texts))
def test_form_encoded_datadog_fields_raise_only_payload_error(fields):
    try:
        parse_datadog_webhook(fields, keyword=KEYWORD, received_at_ms=NOW_MS)
    except PayloadError as exc:
        assert 400 <= exc.status < 500


@PROPERTY
@given(texts)
def test_datadog_text_readers_never_raise(text):
    datadog_text.transition_from_name(text)
    datadog_text.transition_from_title(text)
    datadog_text.is_event_id(text)
    list(datadog_text.event_link_ids(text))
    datadog_text.monitor_id_from_text(text)
    datadog_text.event_id_from_text(text, generated_only=True)


@PROPERTY
@given(texts, st.sampled_from(TRANSITIONS))
def test_conditionals_render_and_lint_any_message(message, transition):
    render_for(message, transition)
    report = lint_message(message, KEYWORD)
    json.dumps(report.to_dict())


@PROPERTY
@given(texts)
def test_callback_lines_yield_only_usable_urls(message):
    for url in extract_callback_urls(message, KEYWORD):
        parts = urlsplit(url)
        assert parts.scheme.lower() in ("http", "https")
        assert parts.hostname
        assert "@" not in parts.netloc  # a URL with credentials is never usable
    for line in scan_callback_lines(message, KEYWORD):
        assert (line.url is None) != (line.problem is None)
    assert "user:pw@" not in mask_credentials(message.replace("user:pw@", "//user:pw@"))


@PROPERTY
@given(
    st.data(),
    st.sampled_from(
        (
            lambda: am_webhook(bank_alert("0001", CALLBACK)),
            lambda: am_webhook(
                bank_alert("0001", CALLBACK), bank_alert("0002", None, status="resolved")
            ),
            lambda: grafana_sample(CALLBACK),
        )
    ),
)
def test_alertmanager_payloads_raise_only_payload_error(data, make):
    payload = mutate(data, make())
    try:
        parse_alertmanager_webhook(payload, keyword=KEYWORD, received_at_ms=NOW_MS)
    except PayloadError as exc:
        assert 400 <= exc.status < 500


@PROPERTY
@given(
    st.binary(max_size=64)
    | texts.map(str.encode)
    | json_values.map(lambda v: json.dumps(v).encode())
)
def test_json_bodies_raise_only_payload_error(raw):
    try:
        data = parse_json_object(raw, what="the body")
    except PayloadError as exc:
        assert exc.status in (400, 422)
        return
    json.dumps(data, ensure_ascii=False).encode("utf-8")  # what is accepted can be re-sent


@PROPERTY
@given(st.data(), st.sampled_from((notification_fields, confirmation_fields)))
def test_sns_envelopes_raise_only_payload_error(data, make):
    fields = make(f"[Triggered] x\n{KEYWORD}: {CALLBACK}")
    fields.update(SignatureVersion="1", Signature="c2ln")
    raw = json.dumps(mutate(data, fields)).encode()
    header = data.draw(st.none() | st.sampled_from(("Notification", "x")), label="header")
    try:
        message = parse_sns_envelope(raw, message_type_header=header)
    except PayloadError as exc:
        assert exc.status in (400, 422)
        return
    try:
        validate_signing_cert_url(message.signing_cert_url)
        if message.subscribe_url is not None:
            validate_subscribe_url(message.subscribe_url)
    except AuthError:
        pass
    with contextlib.suppress(ForbiddenError):
        check_sns_age(message, now=datetime.now(UTC), max_age_s=3600)
    try:
        notification_from_sns(message, keyword=KEYWORD, received_at_ms=NOW_MS)
    except PayloadError as exc:
        assert 400 <= exc.status < 500


@PROPERTY
@given(texts | st.text())
def test_sns_certificate_and_subscribe_urls_raise_only_auth_error(url):
    for validate in (validate_signing_cert_url, validate_subscribe_url):
        with contextlib.suppress(AuthError):
            validate(url)


def _a_callback_body() -> dict[str, Any]:
    """A body as the router renders it, enriched: every field the client reads is there."""
    return json.loads(body_bytes(notification(), enrichment(("0001", "Alert"), ("0002", "OK"))))


@PROPERTY
@given(st.data())
def test_callback_bodies_raise_only_invalid_callback_body(data):
    body = mutate(data, _a_callback_body(), max_changes=6)
    raw = data.draw(st.sampled_from(("json", "bytes", "mapping")), label="as")
    given_body: Any = body if raw == "mapping" else json.dumps(body)
    if raw == "bytes":
        given_body = given_body.encode()
    with contextlib.suppress(InvalidCallbackBody):
        parse_callback_body(given_body, webhook_id="msg_1")


@PROPERTY
@given(st.binary(max_size=64) | texts.map(str.encode))
def test_raw_callback_bodies_raise_only_invalid_callback_body(raw):
    with contextlib.suppress(InvalidCallbackBody):
        parse_callback_body(raw)


@PROPERTY
@given(
    st.dictionaries(
        st.sampled_from(("webhook-id", "webhook-timestamp", "webhook-signature", "x")),
        texts | st.sampled_from(("v1,", "v1,AAAA", "v1a,x", str(NOW_MS // 1000), "1" * 40)),
    ),
    st.binary(max_size=32),
)
def test_callback_signatures_raise_only_invalid_signature(headers, body):
    verifier = SignatureVerifier(SIGNING_SECRET, clock=lambda: NOW_MS / 1000)
    with pytest.raises(InvalidSignature):
        verifier.verify(body, headers)  # nothing forged without the secret verifies


@PROPERTY
@given(st.binary(min_size=1, max_size=64), st.integers(0, 2))
def test_a_signed_callback_changed_in_any_byte_is_refused(body, which):
    headers = sign_headers(b"{}", SIGNING_SECRET, webhook_id="msg_1", timestamp=NOW_MS // 1000)
    verifier = SignatureVerifier(SIGNING_SECRET, clock=lambda: NOW_MS / 1000)
    assert verifier.verify(b"{}", headers) == "msg_1"
    forged = dict(headers)
    if which == 0:
        forged["webhook-id"] = "msg_" + body.hex()
    elif which == 1:
        forged["webhook-timestamp"] = str(NOW_MS // 1000 - 1 - body[0])
    with pytest.raises(InvalidSignature):
        verifier.verify(body if which == 2 else b"{}", forged)


HOSTS = (
    "svc.internal",
    "SVC.internal",
    "svc.internal.",
    "evil.example",
    "svc.internal.evil.example",
    "127.0.0.1",
    "127.1",
    "2130706433",
    "0177.0.0.1",
    "0x7f.0.0.1",
    "0x7f000001",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:169.254.169.254]",
    "169.254.169.254",
    "[",
)
urls = st.builds(
    lambda scheme, userinfo, host, port, path: f"{scheme}://{userinfo}{host}{port}{path}",
    st.sampled_from(("http", "https", "HTTPS", "ftp", "")),
    st.sampled_from(("", "u:p@", "svc.internal@", "@")),
    st.sampled_from(HOSTS) | texts,
    st.sampled_from(("", ":443", ":8080", ":0", ":99999", ":x", ":")),
    st.lists(
        st.sampled_from(("/breaker", "/callback", "/..", "/.", "%2e", "%2f", ";", "\\", "%25"))
        | texts,
        max_size=5,
    ).map("".join),
)
ALLOW = ("https://svc.internal/breaker", "http://127.0.0.1:8080/cb/")


@PROPERTY
@given(urls | texts)
def test_the_allow_list_only_admits_urls_on_a_listed_origin(url):
    allow = CallbackAllowList(ALLOW)
    refusal = allow.refusal(url)
    assert "no request was made" in refusal
    if not allow.allows(url):
        return
    parts = urlsplit(url)
    assert "@" not in parts.netloc
    assert (parts.scheme.lower(), parts.hostname, parts.port or None) in {
        ("https", "svc.internal", 443),
        ("https", "svc.internal", None),
        ("http", "127.0.0.1", 8080),
    }


@PROPERTY
@given(st.lists(urls | texts, max_size=3).map(",".join))
def test_allow_list_settings_raise_only_config_error(text):
    with contextlib.suppress(ConfigError):
        parse_callback_allow(text)
