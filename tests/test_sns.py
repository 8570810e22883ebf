"""SNS envelopes: parsing, URL checks, signature v1/v2, certificate cache, Datadog text inside."""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from router.errors import AuthError, ForbiddenError, PayloadError
from router.parsing.sns import (
    MAX_CERTIFICATE_BYTES,
    SNS_CLOCK_SKEW_S,
    CertificateUnavailable,
    SnsMessage,
    SnsVerifier,
    check_sns_age,
    fetch_certificate_https,
    notification_from_sns,
    parse_sns_envelope,
    string_to_sign,
    validate_signing_cert_url,
    validate_subscribe_url,
)
from tests.conftest import free_port
from tests.sns_signing import (
    CERT_URL,
    SUBSCRIBE_URL,
    TOPIC_ARN,
    SigningIdentity,
    body,
    confirmation_fields,
    make_signing_identity,
    notification_fields,
    sign_sns,
)

KEYWORD = "circuit-breaker-callback"

# The shape Datadog publishes to SNS (reference §2.1): plain text, ids only inside links.
DATADOG_MESSAGE = (
    "nginx CPU is high, open the breaker. @sns-system-health\n"
    "circuit-breaker-callback: https://bank-charge.internal/breaker/callback\n"
    "\n"
    "docker.cpu.usage over docker_image:nginx,host:i-0a1b2c3d,environment:production "
    "was > 0.1 on average during the last 1m.\n"
    "\n"
    "Metric value: 0.21\n"
    "\n"
    "Monitor Status: https://app.datadoghq.com/monitors#5203057?group=docker_image%3Anginx"
    " · Edit Monitor: https://app.datadoghq.com/monitors#5203057/edit"
    " · Event URL: https://app.datadoghq.com/event/event?id=4437030580617369909"
    " · Related Logs: https://app.datadoghq.com/logs/analytics?query=docker_image%3Anginx"
)


class CountingFetcher:
    """Serves one PEM for every URL and counts the calls per URL."""

    def __init__(self, pem: bytes) -> None:
        self.pem = pem
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, url: str) -> bytes:
        with self._lock:
            self.calls[url] += 1
        return self.pem

    @property
    def total(self) -> int:
        return sum(self.calls.values())


@pytest.fixture(scope="session")
def identity() -> SigningIdentity:
    return make_signing_identity()


@pytest.fixture
def fetcher(identity: SigningIdentity) -> CountingFetcher:
    return CountingFetcher(identity.pem)


@pytest.fixture
def verifier(fetcher: CountingFetcher) -> SnsVerifier:
    return SnsVerifier(fetcher)


def signed_notification(identity: SigningIdentity, version: str = "1", **kw: Any) -> bytes:
    return body(sign_sns(notification_fields(DATADOG_MESSAGE, **kw), identity.key, version))


# --- signatures --------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
def test_valid_notification_verifies(
    identity: SigningIdentity, verifier: SnsVerifier, fetcher: CountingFetcher, version: str
) -> None:
    message = parse_sns_envelope(
        signed_notification(identity, version), message_type_header="Notification"
    )
    verifier.verify(message)
    assert message.type == "Notification"
    assert message.signature_version == version
    assert message.subject == "[Triggered] CPU Load"
    assert message.topic_arn == TOPIC_ARN
    assert message.raw["MessageId"] == message.message_id
    assert fetcher.calls == {CERT_URL: 1}


@pytest.mark.parametrize("kind", ["SubscriptionConfirmation", "UnsubscribeConfirmation"])
@pytest.mark.parametrize("version", ["1", "2"])
def test_confirmations_verify(
    identity: SigningIdentity, verifier: SnsVerifier, kind: str, version: str
) -> None:
    message = parse_sns_envelope(body(sign_sns(confirmation_fields(kind), identity.key, version)))
    verifier.verify(message)
    assert message.type == kind
    assert message.subscribe_url == SUBSCRIBE_URL
    assert message.token == "2336412f37fb687f5d51e6e2425c464de257ebe1"


def test_string_to_sign_for_notification_with_and_without_subject() -> None:
    fields = {**notification_fields("hello\nworld"), "SignatureVersion": "1", "Signature": "x"}
    assert string_to_sign(parse_sns_envelope(body(fields))) == (
        b"Message\nhello\nworld\n"
        b"MessageId\nda41e39f-ea4d-435a-b922-c6aae3915ebe\n"
        b"Subject\n[Triggered] CPU Load\n"
        b"Timestamp\n2026-11-22T10:00:00.123Z\n"
        b"TopicArn\narn:aws:sns:us-east-1:123456789012:system-health\n"
        b"Type\nNotification\n"
    )
    for no_subject in (
        {k: v for k, v in fields.items() if k != "Subject"},
        {**fields, "Subject": None},
    ):
        assert b"Subject" not in string_to_sign(parse_sns_envelope(body(no_subject)))


@pytest.mark.parametrize("kind", ["SubscriptionConfirmation", "UnsubscribeConfirmation"])
def test_string_to_sign_for_confirmations(kind: str) -> None:
    fields = {**confirmation_fields(kind), "SignatureVersion": "2", "Signature": "x"}
    fields["Message"] = "Confirm me"
    assert string_to_sign(parse_sns_envelope(body(fields))) == (
        b"Message\nConfirm me\n"
        b"MessageId\n165545c9-2a5c-472c-8df2-7ff2be2b3b1b\n"
        + f"SubscribeURL\n{SUBSCRIBE_URL}\n".encode()
        + b"Timestamp\n2026-11-22T09:59:00.000Z\n"
        b"Token\n2336412f37fb687f5d51e6e2425c464de257ebe1\n"
        b"TopicArn\narn:aws:sns:us-east-1:123456789012:system-health\n" + f"Type\n{kind}\n".encode()
    )


@pytest.mark.parametrize(
    "tamper",
    [
        lambda f: f.update(Message=f["Message"].replace("0.21", "0.01")),
        lambda f: f.update(Subject="[Recovered] CPU Load"),
        lambda f: f.pop("Subject"),
        lambda f: f.update(MessageId="00000000-0000-0000-0000-000000000000"),
        lambda f: f.update(TopicArn="arn:aws:sns:us-east-1:123456789012:other"),
        lambda f: f.update(Timestamp="2026-11-22T10:00:01.123Z"),
        lambda f: f.update(SignatureVersion="2"),  # a v1 signature presented as v2
    ],
    ids=["message", "subject", "no-subject", "message-id", "topic", "timestamp", "version"],
)
def test_tampered_notification_is_rejected(
    identity: SigningIdentity, verifier: SnsVerifier, tamper: Callable[[dict[str, Any]], object]
) -> None:
    fields = sign_sns(notification_fields(DATADOG_MESSAGE), identity.key, "1")
    tamper(fields)
    with pytest.raises(AuthError, match="SNS signature does not verify"):
        verifier.verify(parse_sns_envelope(body(fields)))


def test_signature_from_another_key_is_rejected(verifier: SnsVerifier) -> None:
    stranger = make_signing_identity()
    with pytest.raises(AuthError, match="does not verify"):
        verifier.verify(parse_sns_envelope(signed_notification(stranger, "2")))


@pytest.mark.parametrize("version", ["3", "0", "1.0", "SHA256"])
def test_unsupported_signature_version_is_rejected_without_fetch(
    identity: SigningIdentity, verifier: SnsVerifier, fetcher: CountingFetcher, version: str
) -> None:
    fields = sign_sns(notification_fields(DATADOG_MESSAGE), identity.key, "2")
    fields["SignatureVersion"] = version
    with pytest.raises(AuthError, match=f"SignatureVersion '{version}' is not supported"):
        verifier.verify(parse_sns_envelope(body(fields)))
    assert fetcher.total == 0


@pytest.mark.parametrize("signature", ["not base64!", "QUJD=extra", "zé=="])
def test_malformed_signature_is_rejected_without_fetch(
    identity: SigningIdentity, verifier: SnsVerifier, fetcher: CountingFetcher, signature: str
) -> None:
    fields = sign_sns(notification_fields(DATADOG_MESSAGE), identity.key, "1")
    fields["Signature"] = signature
    with pytest.raises(AuthError, match="SNS signature does not verify"):
        verifier.verify(parse_sns_envelope(body(fields)))
    assert fetcher.total == 0


def test_signature_with_stray_characters_is_rejected(
    identity: SigningIdentity, verifier: SnsVerifier, fetcher: CountingFetcher
) -> None:
    # Lenient base64 would drop the stray `*` and accept a signature that is not the one sent.
    fields = sign_sns(notification_fields(DATADOG_MESSAGE), identity.key, "1")
    verifier.verify(parse_sns_envelope(body(fields)))
    fields["Signature"] = fields["Signature"][:10] + "*" + fields["Signature"][10:]
    with pytest.raises(AuthError, match="SNS signature does not verify"):
        verifier.verify(parse_sns_envelope(body(fields)))


def test_certificate_without_rsa_key_is_rejected(identity: SigningIdentity) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    verifier = SnsVerifier(CountingFetcher(cert.public_bytes(serialization.Encoding.PEM)))
    with pytest.raises(AuthError, match="RSA"):
        verifier.verify(parse_sns_envelope(signed_notification(identity)))


# --- URL checks ----------------------------------------------------------------------------

CERT_URL_ATTACKS = {
    "http": ("http://sns.us-east-1.amazonaws.com/x.pem", "https"),
    "no-scheme": ("//sns.us-east-1.amazonaws.com/x.pem", "https"),
    "host-suffix": ("https://sns.us-east-1.amazonaws.com.evil.com/x.pem", "not an Amazon SNS host"),
    "host-in-path": (
        "https://evil.com/sns.us-east-1.amazonaws.com/x.pem",
        "not an Amazon SNS host",
    ),
    "s3": ("https://s3.amazonaws.com/x.pem", "not an Amazon SNS host"),
    "s3-bucket": ("https://sns.s3.amazonaws.com.s3.amazonaws.com/x.pem", "not an Amazon SNS host"),
    "other-aws": ("https://sqs.us-east-1.amazonaws.com/x.pem", "not an Amazon SNS host"),
    "no-region": ("https://sns.amazonaws.com/x.pem", "not an Amazon SNS host"),
    "userinfo-host": ("https://sns.us-east-1.amazonaws.com@evil.com/x.pem", "userinfo"),
    "userinfo": ("https://u:p@sns.us-east-1.amazonaws.com/x.pem", "userinfo"),
    "fragment-at": (
        "https://evil.com#@sns.us-east-1.amazonaws.com/x.pem",
        "not an Amazon SNS host",
    ),
    "backslash": ("https://evil.com\\@sns.us-east-1.amazonaws.com/x.pem", "characters"),
    "newline": ("https://sns.us-east-1.amazonaws.com/x.pem\n", "characters"),
    "tab-host": ("https://sns.us-east-1.amazonaws.com\t.evil.com/x.pem", "characters"),
    "port": ("https://sns.us-east-1.amazonaws.com:8443/x.pem", "port 443"),
    "bad-port": ("https://sns.us-east-1.amazonaws.com:x/x.pem", "invalid port"),
    "not-pem": ("https://sns.us-east-1.amazonaws.com/x.txt", r"\.pem"),
    "pem-in-query": ("https://sns.us-east-1.amazonaws.com/x?f=.pem", r"\.pem"),
    "query": ("https://sns.us-east-1.amazonaws.com/x.pem?redirect=evil", "query"),
    "ftp": ("ftp://sns.us-east-1.amazonaws.com/x.pem", "https"),
}


@pytest.mark.parametrize(
    ("url", "why"), list(CERT_URL_ATTACKS.values()), ids=list(CERT_URL_ATTACKS)
)
def test_cert_url_attack_is_rejected_before_fetch(
    identity: SigningIdentity,
    verifier: SnsVerifier,
    fetcher: CountingFetcher,
    url: str,
    why: str,
) -> None:
    with pytest.raises(AuthError, match=why):
        validate_signing_cert_url(url)
    message = parse_sns_envelope(signed_notification(identity, cert_url=url))
    with pytest.raises(AuthError, match=why):
        verifier.verify(message)
    assert fetcher.total == 0


@pytest.mark.parametrize(
    "url",
    [
        CERT_URL,
        "https://SNS.EU-WEST-1.AMAZONAWS.COM/SimpleNotificationService-abc.pem",
        "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com:443/SimpleNotificationService-abc.pem",
    ],
)
def test_genuine_cert_urls_pass(url: str) -> None:
    validate_signing_cert_url(url)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (SUBSCRIBE_URL.replace("https:", "http:"), "https"),
        (SUBSCRIBE_URL.replace(".amazonaws.com/", ".amazonaws.com.evil.com/"), "not an Amazon"),
        ("https://169.254.169.254/latest/meta-data/?Action=ConfirmSubscription", "not an Amazon"),
        ("https://u@sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription", "userinfo"),
        ("https://sns.us-east-1.amazonaws.com:8080/?Action=ConfirmSubscription", "port 443"),
        ("https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&Token=t", "ConfirmSubscription"),
        ("https://sns.us-east-1.amazonaws.com/?Token=t", "ConfirmSubscription"),
    ],
)
def test_subscribe_url_checks(url: str, why: str) -> None:
    validate_subscribe_url(SUBSCRIBE_URL)
    with pytest.raises(AuthError, match=why):
        validate_subscribe_url(url)


# --- certificate validity and cache ---------------------------------------------------------


@pytest.mark.parametrize("outside", ["after", "before"])
def test_certificate_outside_its_validity_is_rejected(
    identity: SigningIdentity, outside: str
) -> None:
    certificate = identity.certificate
    moment = (
        certificate.not_valid_after_utc + timedelta(seconds=1)
        if outside == "after"
        else certificate.not_valid_before_utc - timedelta(seconds=1)
    )
    verifier = SnsVerifier(CountingFetcher(identity.pem), clock=lambda: moment)
    with pytest.raises(AuthError, match="certificate is not valid"):
        verifier.verify(parse_sns_envelope(signed_notification(identity)))


def test_expired_certificate_from_real_clock_is_rejected() -> None:
    now = datetime.now(UTC)
    expired = make_signing_identity(
        not_valid_before=now - timedelta(days=30), not_valid_after=now - timedelta(days=1)
    )
    with pytest.raises(AuthError, match="certificate is not valid"):
        SnsVerifier(CountingFetcher(expired.pem)).verify(
            parse_sns_envelope(signed_notification(expired))
        )


def test_cached_certificate_is_refetched_once_it_expires(identity: SigningIdentity) -> None:
    fetcher = CountingFetcher(identity.pem)
    now = [datetime.now(UTC)]
    verifier = SnsVerifier(fetcher, clock=lambda: now[0])
    message = parse_sns_envelope(signed_notification(identity))
    verifier.verify(message)
    verifier.verify(message)
    assert fetcher.total == 1
    now[0] = identity.certificate.not_valid_after_utc + timedelta(minutes=1)
    with pytest.raises(AuthError, match="not valid"):
        verifier.verify(message)
    assert fetcher.total == 2


def test_certificate_is_fetched_once_per_url(
    identity: SigningIdentity, verifier: SnsVerifier, fetcher: CountingFetcher
) -> None:
    other = CERT_URL.replace("us-east-1", "eu-west-1")
    for _ in range(3):
        verifier.verify(parse_sns_envelope(signed_notification(identity, "1")))
        verifier.verify(parse_sns_envelope(signed_notification(identity, "2", cert_url=other)))
    assert fetcher.calls == {CERT_URL: 1, other: 1}


def test_cache_is_bounded_and_evicts_least_recently_used(identity: SigningIdentity) -> None:
    fetcher = CountingFetcher(identity.pem)
    verifier = SnsVerifier(fetcher, cache_size=2)
    urls = {name: f"https://sns.us-east-1.amazonaws.com/{name}.pem" for name in "abc"}
    messages = {
        name: parse_sns_envelope(signed_notification(identity, cert_url=url))
        for name, url in urls.items()
    }
    for name in "abaca":  # `c` evicts `b`, the least recently used, not `a`
        verifier.verify(messages[name])
    assert fetcher.calls == {urls["a"]: 1, urls["b"]: 1, urls["c"]: 1}
    verifier.verify(messages["b"])
    assert fetcher.calls[urls["b"]] == 2


def test_concurrent_verification(identity: SigningIdentity, fetcher: CountingFetcher) -> None:
    verifier = SnsVerifier(fetcher, cache_size=3)
    urls = [f"https://sns.us-east-1.amazonaws.com/{i}.pem" for i in range(6)]
    messages = [parse_sns_envelope(signed_notification(identity, cert_url=u)) for u in urls]
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(offset: int) -> None:
        start.wait()
        try:
            for i in range(30):
                verifier.verify(messages[(offset + i) % len(messages)])
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert set(fetcher.calls) == set(urls)


def test_fetch_failure_is_certificate_unavailable_and_not_cached(
    identity: SigningIdentity,
) -> None:
    results: list[Any] = [OSError("connection reset"), CertificateUnavailable("HTTP 503"), b"junk"]

    def flaky(url: str) -> bytes:
        result = results.pop(0) if results else identity.pem
        if isinstance(result, BaseException):
            raise result
        return bytes(result)

    verifier = SnsVerifier(flaky)
    message = parse_sns_envelope(signed_notification(identity))
    # The fetcher's own CertificateUnavailable passes through unwrapped.
    for why in ("connection reset", "^HTTP 503$", "did not serve a PEM certificate"):
        with pytest.raises(CertificateUnavailable, match=why):
            verifier.verify(message)
    verifier.verify(message)  # failures were not cached


# --- envelope parsing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "not valid JSON"),
        (b"Type=Notification", "not valid JSON"),
        (b'{"Type": "Notification"', "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than"),
        (b'["Notification"]', "must be a JSON object"),
        (b'"Notification"', "must be a JSON object"),
        (b"null", "must be a JSON object"),
    ],
    ids=["empty", "form", "truncated", "not-utf8", "deep", "array", "string", "null"],
)
def test_body_that_is_not_a_json_object_is_400(raw: bytes, why: str) -> None:
    with pytest.raises(PayloadError, match=why) as caught:
        parse_sns_envelope(raw)
    assert caught.value.status == 400


NOTIFICATION_REQUIRED = [
    "Type", "MessageId", "TopicArn", "Message", "Timestamp",
    "SignatureVersion", "Signature", "SigningCertURL",
]  # fmt: skip


@pytest.mark.parametrize("key", NOTIFICATION_REQUIRED)
def test_missing_notification_field_is_named(identity: SigningIdentity, key: str) -> None:
    fields = sign_sns(notification_fields(DATADOG_MESSAGE), identity.key)
    for broken, why in (
        ({k: v for k, v in fields.items() if k != key}, "is missing"),
        ({**fields, key: None}, "is missing"),
        ({**fields, key: 42}, "must be a string"),
        ({**fields, key: ["x"]}, "must be a string"),
        ({**fields, key: ""}, "is empty"),
    ):
        with pytest.raises(PayloadError, match=f"SNS field '{key}' {why}") as caught:
            parse_sns_envelope(body(broken))
        assert caught.value.status == 422


@pytest.mark.parametrize("key", ["SubscribeURL", "Token"])
def test_missing_confirmation_field_is_named(key: str) -> None:
    fields = {**confirmation_fields(), "SignatureVersion": "1", "Signature": "x"}
    del fields[key]
    with pytest.raises(PayloadError, match=f"SNS field '{key}' is missing") as caught:
        parse_sns_envelope(body(fields))
    assert caught.value.status == 422


@pytest.mark.parametrize("key", ["Subject", "UnsubscribeURL"])
def test_optional_notification_field_must_be_a_string(key: str) -> None:
    fields = {**notification_fields("m"), "SignatureVersion": "1", "Signature": "x", key: 7}
    with pytest.raises(PayloadError, match=f"SNS field '{key}' must be a string") as caught:
        parse_sns_envelope(body(fields))
    assert caught.value.status == 422


def test_unknown_type_is_422_and_named() -> None:
    fields = {
        **notification_fields("m"),
        "Type": "Publish",
        "SignatureVersion": "1",
        "Signature": "x",
    }
    with pytest.raises(PayloadError, match="Type 'Publish' is not supported") as caught:
        parse_sns_envelope(body(fields), message_type_header="Publish")
    assert caught.value.status == 422


def test_message_type_header_must_agree(identity: SigningIdentity) -> None:
    raw = signed_notification(identity)
    assert parse_sns_envelope(raw, message_type_header=" Notification ").type == "Notification"
    with pytest.raises(PayloadError, match="disagrees with Type 'Notification'") as caught:
        parse_sns_envelope(raw, message_type_header="SubscriptionConfirmation")
    assert caught.value.status == 400


def test_timestamp_without_zone_is_utc(identity: SigningIdentity) -> None:
    message = parse_sns_envelope(signed_notification(identity, timestamp="2026-11-22T10:00:00.123"))
    notification = notification_from_sns(message, keyword=KEYWORD, received_at_ms=0)
    assert notification.event_time_ms == 1_795_341_600_123


def test_malformed_timestamp_is_422(identity: SigningIdentity) -> None:
    with pytest.raises(PayloadError, match="'Timestamp' is not an ISO-8601 time") as caught:
        parse_sns_envelope(signed_notification(identity, timestamp="yesterday"))
    assert caught.value.status == 422


# --- the time window (replays) ------------------------------------------------------------

PUBLISHED = datetime(2026, 11, 22, 10, 0, 0, 123000, tzinfo=UTC)  # notification_fields' time


def envelope(**kw: Any) -> SnsMessage:
    """A parsed Notification; the window is checked after the signature, so none is needed."""
    fields = {**notification_fields("x", **kw), "SignatureVersion": "1", "Signature": "x"}
    return parse_sns_envelope(body(fields))


@pytest.mark.parametrize(
    "now",
    [
        pytest.param(PUBLISHED, id="at-once"),
        pytest.param(PUBLISHED + timedelta(hours=1), id="exactly-max-age"),
        pytest.param(PUBLISHED - timedelta(seconds=SNS_CLOCK_SKEW_S), id="our-clock-behind"),
    ],
)
def test_a_message_inside_the_window_passes(now: datetime) -> None:
    message = envelope()
    check_sns_age(message, now=now, max_age_s=3600.0)


def test_a_message_older_than_the_max_age_is_forbidden_and_says_why() -> None:
    message = envelope()
    now = PUBLISHED + timedelta(hours=1, milliseconds=1)
    with pytest.raises(ForbiddenError) as caught:
        check_sns_age(message, now=now, max_age_s=3600.0)
    assert str(caught.value) == (
        "SNS message da41e39f-ea4d-435a-b922-c6aae3915ebe was published at "
        "2026-11-22T10:00:00.123Z, 3600.0s ago: older than ROUTER_SNS_MAX_AGE (1h), so it is "
        "refused as a possible replay"
    )


def test_a_message_from_the_future_is_forbidden() -> None:
    message = envelope()
    now = PUBLISHED - timedelta(seconds=SNS_CLOCK_SKEW_S + 1)
    with pytest.raises(ForbiddenError, match=r"in the future \(more than the 5m of clock skew"):
        check_sns_age(message, now=now, max_age_s=3600.0)


def test_a_timestamp_without_zone_is_read_as_utc_for_the_window() -> None:
    message = envelope(timestamp="2026-11-22T10:00:00")
    check_sns_age(message, now=PUBLISHED + timedelta(minutes=59), max_age_s=3600.0)
    with pytest.raises(ForbiddenError):
        check_sns_age(message, now=PUBLISHED + timedelta(minutes=61), max_age_s=3600.0)


# --- the Datadog notification inside -------------------------------------------------------


def test_datadog_notification_end_to_end(identity: SigningIdentity, verifier: SnsVerifier) -> None:
    message = parse_sns_envelope(signed_notification(identity, "2"))
    verifier.verify(message)
    notification = notification_from_sns(message, keyword=KEYWORD, received_at_ms=1234)
    assert notification.source == "sns"
    assert notification.dedup_key == "sns:da41e39f-ea4d-435a-b922-c6aae3915ebe"
    assert notification.transition == "alert"
    assert notification.datadog_transition == "Triggered"
    assert notification.renotification is False
    assert notification.title == "[Triggered] CPU Load"
    assert notification.message == DATADOG_MESSAGE
    assert notification.callback_urls == ("https://bank-charge.internal/breaker/callback",)
    assert notification.event_id == "4437030580617369909"
    assert notification.monitor_id == "5203057"
    assert notification.event_time_ms == 1_795_341_600_123  # 2026-11-22T10:00:00.123Z
    assert notification.received_at_ms == 1234
    assert notification.tags == ()
    assert notification.scope is None


@pytest.mark.parametrize(
    ("subject", "transition", "datadog", "renotify", "scope"),
    [
        (
            "[Recovered on {host:i-0a1b2c3d}] CPU Load",
            "recovery",
            "Recovered",
            False,
            "host:i-0a1b2c3d",
        ),
        ("[P1] [Re-Triggered] CPU Load", "alert", "Re-Triggered", True, None),
        (
            "[Warn on {bank_code:0001,env:prod}] Bank API",
            "warning",
            "Warn",
            False,
            "bank_code:0001,env:prod",
        ),
        ("  [No Data] CPU Load\n", "no_data", "No Data", False, None),
    ],
)
def test_transition_and_scope_come_from_subject(
    identity: SigningIdentity,
    subject: str,
    transition: str,
    datadog: str,
    renotify: bool,
    scope: str | None,
) -> None:
    message = parse_sns_envelope(signed_notification(identity, subject=subject))
    notification = notification_from_sns(message, keyword=KEYWORD, received_at_ms=0)
    assert (notification.transition, notification.datadog_transition) == (transition, datadog)
    assert notification.renotification is renotify
    assert notification.scope == scope
    assert notification.title == subject.strip()


@pytest.mark.parametrize("subject", [None, "CPU Load alert"])
def test_first_line_of_message_is_the_fallback_title(
    identity: SigningIdentity, subject: str | None
) -> None:
    text = "\n  [Recovered] CPU Load  \n" + DATADOG_MESSAGE
    fields = sign_sns(notification_fields(text, subject=subject), identity.key)
    notification = notification_from_sns(
        parse_sns_envelope(body(fields)), keyword=KEYWORD, received_at_ms=0
    )
    assert notification.transition == "recovery"
    assert notification.title == "[Recovered] CPU Load"


def test_message_that_is_not_from_datadog_is_422(identity: SigningIdentity) -> None:
    fields = sign_sns(
        notification_fields(json.dumps({"hello": "world"}), subject="Budget alert"), identity.key
    )
    with pytest.raises(PayloadError, match="does not look like a Datadog monitor") as caught:
        notification_from_sns(parse_sns_envelope(body(fields)), keyword=KEYWORD, received_at_ms=0)
    assert caught.value.status == 422


def test_notification_without_callback_line_has_no_urls(identity: SigningIdentity) -> None:
    text = DATADOG_MESSAGE.replace("circuit-breaker-callback: ", "see ")
    fields = sign_sns(notification_fields(text), identity.key)
    notification = notification_from_sns(
        parse_sns_envelope(body(fields)), keyword=KEYWORD, received_at_ms=0
    )
    assert notification.callback_urls == ()


def test_confirmation_is_not_a_notification() -> None:
    fields = {**confirmation_fields(), "SignatureVersion": "1", "Signature": "x"}
    with pytest.raises(PayloadError, match="carries no notification"):
        notification_from_sns(parse_sns_envelope(body(fields)), keyword=KEYWORD, received_at_ms=0)


# --- the production fetcher, against local servers only --------------------------------------


class _CertHandler(http.server.BaseHTTPRequestHandler):
    pem = b""
    accept_encoding: str | None = None

    def do_GET(self) -> None:
        type(self).accept_encoding = self.headers.get("Accept-Encoding")
        if self.path == "/ok.pem":
            self._answer(200, self.pem)
        elif self.path == "/big.pem":
            self._answer(200, b"A" * (MAX_CERTIFICATE_BYTES + 1))
        elif self.path == "/big-undeclared.pem":
            # No Content-Length: the body ends when the connection closes (HTTP/1.0).
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"A" * (MAX_CERTIFICATE_BYTES * 4))
        elif self.path == "/redirect.pem":
            self.send_response(302)
            self.send_header("Location", "/ok.pem")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._answer(404, b"no")

    def _answer(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _serve(context: ssl.SSLContext | None = None) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CertHandler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    scheme = "https" if context else "http"
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def cert_server(identity: SigningIdentity, no_proxy: None) -> Iterator[str]:
    _CertHandler.pem = identity.pem
    with _serve() as base:
        yield base


def test_fetcher_returns_the_certificate(cert_server: str, identity: SigningIdentity) -> None:
    assert fetch_certificate_https(f"{cert_server}/ok.pem") == identity.pem
    # Compressed bodies would let a small download grow past the size cap once decoded.
    assert _CertHandler.accept_encoding == "identity"


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/missing.pem", "HTTP 404"),
        ("/redirect.pem", "HTTP 302"),
        ("/big.pem", "larger than"),
        ("/big-undeclared.pem", "larger than"),
    ],
)
def test_fetcher_failures_are_certificate_unavailable(
    cert_server: str, path: str, why: str
) -> None:
    with pytest.raises(CertificateUnavailable, match=why):
        fetch_certificate_https(f"{cert_server}{path}")


def test_fetcher_connection_refused_and_timeout(no_proxy: None) -> None:
    with pytest.raises(CertificateUnavailable, match="could not fetch"):
        fetch_certificate_https(f"http://127.0.0.1:{free_port()}/x.pem")
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/x.pem"
        with pytest.raises(CertificateUnavailable, match="could not fetch"):
            fetch_certificate_https(url, timeout_s=0.3)


def test_fetcher_verifies_tls(tmp_path: Path, identity: SigningIdentity, no_proxy: None) -> None:
    # A certificate that is right for 127.0.0.1 but issued by nobody the system trusts.
    tls = make_signing_identity(common_name="127.0.0.1", ip_addresses=("127.0.0.1",))
    (tmp_path / "cert.pem").write_bytes(tls.pem)
    (tmp_path / "key.pem").write_bytes(
        tls.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    _CertHandler.pem = identity.pem
    with (
        _serve(context) as base,
        pytest.raises(CertificateUnavailable, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        fetch_certificate_https(f"{base}/ok.pem")
