"""Amazon SNS HTTP(S) subscriptions: the envelope, its signature, and the Datadog text inside.

Pure apart from the certificate fetcher, which `SnsVerifier` takes as an argument;
`fetch_certificate_https` is the production one. The web layer's order is: parse, verify the
signature, and only then look at what the message says: its age (`check_sns_age`), its topic,
then act (confirm via `validate_subscribe_url`, or `notification_from_sns`). Nothing a sender
without AWS's key can forge gets past the signature, not even the list of accepted topics.
"""

from __future__ import annotations

import base64
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Literal, cast, get_args
from urllib.parse import SplitResult, parse_qs, urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from router.config import format_duration
from router.errors import AuthError, ForbiddenError, PayloadError, RouterError
from router.model import Notification
from router.parsing.callbacks import extract_callback_urls
from router.parsing.datadog_text import (
    TitleTransition,
    event_id_from_text,
    monitor_id_from_text,
    transition_from_title,
)
from router.parsing.jsonbody import parse_json_object

SnsType = Literal["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"]
SNS_TYPES: tuple[str, ...] = get_args(SnsType)

# A signing certificate is ~2 KiB; anything far larger is not one.
MAX_CERTIFICATE_BYTES = 64 * 1024
# How far ahead of our clock an SNS Timestamp may be: NTP keeps hosts within seconds, and more
# than this means a wrong clock somewhere, which would also stretch the replay window.
SNS_CLOCK_SKEW_S = 300.0

# Used with fullmatch, never `match`: `$` would accept a trailing newline.
_SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?", re.IGNORECASE)
# Printable ASCII except space and backslash. URL parsers disagree about the rest (urlsplit
# silently drops tabs and newlines, some clients read `\` as `/`), and the URL we check must
# be the URL that gets fetched.
_URL_CHARS = re.compile(r"[!-\[\]-~]+")

# AWS's fixed key order for the string to sign; absent optional keys are skipped.
_NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION_KEYS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "1": hashes.SHA1,  # SHA1withRSA, the topic default
    "2": hashes.SHA256,
}


class CertificateUnavailable(RouterError):
    """The SNS signing certificate could not be fetched or read; the sender should retry (503)."""


@dataclass(frozen=True)
class SnsMessage:
    """One SNS HTTP(S) delivery, its fields typed as AWS documents them."""

    type: SnsType
    message_id: str
    topic_arn: str
    message: str
    timestamp: str
    signature_version: str
    signature: str
    signing_cert_url: str
    subject: str | None = None
    # Present (and required) on the two confirmation types only.
    subscribe_url: str | None = None
    token: str | None = None
    unsubscribe_url: str | None = None
    # The whole decoded envelope, read-only (e.g. for `MessageAttributes`). `string_to_sign`
    # deliberately reads the typed fields instead, so the text that was verified is the text
    # that gets used, even after `dataclasses.replace`.
    raw: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )


def _required(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        raise PayloadError(f"SNS field {key!r} is missing", status=422)
    if not isinstance(value, str):
        raise PayloadError(f"SNS field {key!r} must be a string", status=422)
    if not value:
        raise PayloadError(f"SNS field {key!r} is empty", status=422)
    return value


def _optional(data: Mapping[str, Any], key: str) -> str | None:
    # null counts as absent, as in AWS's own validators (isset / != null).
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise PayloadError(f"SNS field {key!r} must be a string", status=422)
    return value


def _timestamp_ms(value: str) -> int:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise PayloadError(
            f"SNS field 'Timestamp' is not an ISO-8601 time: {value!r}", status=422
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # SNS documents its timestamps as GMT
    # Exact integer arithmetic rather than the float `timestamp() * 1000`.
    return _epoch_ms(moment)


def check_sns_age(message: SnsMessage, *, now: datetime, max_age_s: float) -> None:
    """Refuse (403) a message published more than `max_age_s` ago or too far in the future.

    Call after `SnsVerifier.verify`: only a verified Timestamp means anything. A 4xx rather than
    a 5xx, because SNS retries only 5xx and no answer, so a replay is refused once.
    """
    age_ms = _epoch_ms(now) - _timestamp_ms(message.timestamp)
    if age_ms > max_age_s * 1000:
        raise ForbiddenError(
            f"SNS message {message.message_id} was published at {message.timestamp}, "
            f"{age_ms / 1000:.1f}s ago: older than ROUTER_SNS_MAX_AGE "
            f"({format_duration(max_age_s)}), so it is refused as a possible replay"
        )
    if -age_ms > SNS_CLOCK_SKEW_S * 1000:
        raise ForbiddenError(
            f"SNS message {message.message_id} was published at {message.timestamp}, "
            f"{-age_ms / 1000:.1f}s in the future (more than the "
            f"{format_duration(SNS_CLOCK_SKEW_S)} of clock skew allowed); check this host's clock"
        )


def _epoch_ms(moment: datetime) -> int:
    """An aware datetime in milliseconds since the epoch, exactly."""
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def parse_sns_envelope(body: bytes, *, message_type_header: str | None = None) -> SnsMessage:
    """Parse an SNS delivery body (JSON whatever its Content-Type); does not verify it."""
    data = parse_json_object(body, what="SNS body", not_object_status=400)
    kind = _required(data, "Type")
    if kind not in SNS_TYPES:
        raise PayloadError(f"SNS message Type {kind!r} is not supported", status=422)
    if message_type_header is not None and message_type_header.strip() != kind:
        raise PayloadError(
            f"header x-amz-sns-message-type {message_type_header!r} disagrees with Type {kind!r}",
            status=400,
        )
    confirmation = kind != "Notification"
    timestamp = _required(data, "Timestamp")
    _timestamp_ms(timestamp)  # reject a malformed time here, with the other field errors
    return SnsMessage(
        type=cast(SnsType, kind),  # checked against SNS_TYPES above
        message_id=_required(data, "MessageId"),
        topic_arn=_required(data, "TopicArn"),
        message=_required(data, "Message"),
        timestamp=timestamp,
        signature_version=_required(data, "SignatureVersion"),
        signature=_required(data, "Signature"),
        signing_cert_url=_required(data, "SigningCertURL"),
        subject=None if confirmation else _optional(data, "Subject"),
        subscribe_url=_required(data, "SubscribeURL") if confirmation else None,
        token=_required(data, "Token") if confirmation else None,
        unsubscribe_url=None if confirmation else _optional(data, "UnsubscribeURL"),
        raw=MappingProxyType(data),
    )


def _check_sns_url(url: str, what: str) -> SplitResult:
    """Common checks: https to sns.<region>.amazonaws.com[.cn] on 443, no userinfo."""
    if not _URL_CHARS.fullmatch(url):
        raise AuthError(f"{what} contains characters not allowed in a URL")
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        raise AuthError(f"{what} is not a valid URL") from None
    if parts.scheme.lower() != "https":
        raise AuthError(f"{what} must use https, not {parts.scheme or 'no scheme'!r}")
    if "@" in parts.netloc:
        raise AuthError(f"{what} must not carry userinfo")
    try:
        port = parts.port
    except ValueError:
        raise AuthError(f"{what} has an invalid port") from None
    if port not in (None, 443):
        raise AuthError(f"{what} must use port 443, not {port}")
    host = parts.hostname or ""
    if not _SNS_HOST.fullmatch(host):
        raise AuthError(
            f"{what} host {host!r} is not an Amazon SNS host (sns.<region>.amazonaws.com)"
        )
    return parts


def validate_signing_cert_url(url: str) -> None:
    """Refuse a SigningCertURL that is not an SNS-hosted .pem; call before fetching anything."""
    parts = _check_sns_url(url, "SigningCertURL")
    if not parts.path.endswith(".pem"):
        raise AuthError("SigningCertURL must point to a .pem file")
    if parts.query or parts.fragment:
        raise AuthError("SigningCertURL must not carry a query or fragment")


def validate_subscribe_url(url: str) -> None:
    """Refuse a SubscribeURL that is not SNS's ConfirmSubscription action (the web GETs it)."""
    parts = _check_sns_url(url, "SubscribeURL")
    if parse_qs(parts.query).get("Action") != ["ConfirmSubscription"]:
        raise AuthError("SubscribeURL is not an SNS ConfirmSubscription link")


def string_to_sign(message: SnsMessage) -> bytes:
    """The bytes AWS signed: `Key\\nvalue\\n` for each signed key present, in AWS's order."""
    values = {
        "Message": message.message,
        "MessageId": message.message_id,
        "Subject": message.subject,
        "SubscribeURL": message.subscribe_url,
        "Timestamp": message.timestamp,
        "Token": message.token,
        "TopicArn": message.topic_arn,
        "Type": message.type,
    }
    keys = _NOTIFICATION_KEYS if message.type == "Notification" else _CONFIRMATION_KEYS
    return "".join(f"{key}\n{values[key]}\n" for key in keys if values[key] is not None).encode()


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SnsVerifier:
    """Checks SNS signatures; certificates are fetched once per URL and kept in a bounded LRU."""

    def __init__(
        self,
        fetch_certificate: Callable[[str], bytes],
        *,
        cache_size: int = 32,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        """`clock` returns an aware datetime; it decides whether a certificate is in date."""
        if cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        self._fetch = fetch_certificate
        self._cache_size = cache_size
        self._clock = clock
        self._cache: OrderedDict[str, x509.Certificate] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, message: SnsMessage) -> None:
        """Raise AuthError unless AWS signed `message`; CertificateUnavailable if we cannot tell."""
        validate_signing_cert_url(message.signing_cert_url)
        algorithm = _HASHES.get(message.signature_version)
        if algorithm is None:
            raise AuthError(
                f"SNS SignatureVersion {message.signature_version!r} is not supported "
                "(expected '1' or '2')"
            )
        # Cheap rejections before any fetch: garbage must not cause outbound requests.
        try:
            signature = base64.b64decode(message.signature, validate=True)
        except ValueError:
            raise AuthError("SNS signature does not verify") from None
        now = self._clock()
        certificate = self._certificate(message.signing_cert_url, now)
        if not (certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc):
            raise AuthError(
                f"SNS signing certificate is not valid at {now.isoformat()} (valid "
                f"{certificate.not_valid_before_utc.isoformat()} to "
                f"{certificate.not_valid_after_utc.isoformat()})"
            )
        public_key = certificate.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise AuthError("SNS signing certificate does not hold an RSA key")
        try:
            public_key.verify(signature, string_to_sign(message), padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise AuthError("SNS signature does not verify") from None

    def _certificate(self, url: str, now: datetime) -> x509.Certificate:
        with self._lock:
            cached = self._cache.get(url)
            # An expired entry is refetched, in case the file at that URL was renewed.
            if cached is not None and now <= cached.not_valid_after_utc:
                self._cache.move_to_end(url)
                return cached
        # Fetch outside the lock so a slow fetch never stalls messages whose certificate is
        # cached. Two threads missing at once may both fetch; the result is the same.
        try:
            pem = self._fetch(url)
        except CertificateUnavailable:
            raise
        except Exception as exc:  # an injected fetcher's failure must not become a 500
            raise CertificateUnavailable(f"could not fetch {url}: {exc}") from exc
        try:
            certificate = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise CertificateUnavailable(f"{url} did not serve a PEM certificate") from None
        with self._lock:
            self._cache[url] = certificate
            self._cache.move_to_end(url)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return certificate


def fetch_certificate_https(url: str, *, timeout_s: float = 5.0) -> bytes:
    """GET a certificate: TLS verified, redirects refused, at most MAX_CERTIFICATE_BYTES."""
    try:
        with (
            httpx.Client(timeout=timeout_s, follow_redirects=False) as client,
            client.stream("GET", url, headers={"Accept-Encoding": "identity"}) as response,
        ):
            if response.status_code != 200:
                raise CertificateUnavailable(f"{url} answered HTTP {response.status_code}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_CERTIFICATE_BYTES:
                    raise CertificateUnavailable(
                        f"{url} is larger than {MAX_CERTIFICATE_BYTES} bytes"
                    )
            return bytes(body)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise CertificateUnavailable(f"could not fetch {url}: {exc}") from exc


def _title_transition(message: SnsMessage) -> tuple[str, TitleTransition]:
    """Datadog's event title is the Subject; without one, the message's first line."""
    first_line = next((line.strip() for line in message.message.splitlines() if line.strip()), "")
    for candidate in (message.subject, first_line):
        if candidate:
            found = transition_from_title(candidate)
            if found is not None:
                return candidate.strip(), found
    raise PayloadError(
        "SNS message does not look like a Datadog monitor notification: neither its Subject "
        "nor its first line starts with a transition such as [Triggered] or [Recovered]",
        status=422,
    )


def notification_from_sns(
    message: SnsMessage, *, keyword: str, received_at_ms: int
) -> Notification:
    """The Notification in a (verified) SNS Notification whose Message is Datadog's plain text."""
    if message.type != "Notification":
        raise PayloadError(f"SNS {message.type} carries no notification", status=422)
    title, found = _title_transition(message)
    return Notification(
        source="sns",
        # SNS keeps the MessageId across its retries.
        dedup_key=f"sns:{message.message_id}",
        transition=found.transition,
        datadog_transition=found.datadog_transition,
        renotification=found.renotification,
        title=title,
        message=message.message,
        callback_urls=extract_callback_urls(message.message, keyword),
        received_at_ms=received_at_ms,
        event_id=event_id_from_text(message.message),
        monitor_id=monitor_id_from_text(message.message),
        event_time_ms=_timestamp_ms(message.timestamp),
        scope=found.scope,
    )
