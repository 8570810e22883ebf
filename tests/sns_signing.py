"""Sign SNS envelopes as AWS does, with a throwaway RSA key and a self-signed certificate.

Shared by the SNS parser tests and the web tests. The string to sign is built here
independently of `router.parsing.sns` (AWS's PHP validator's way: every signed key that is
present, in one fixed order), so the tests cross-check the router's own version.
"""

from __future__ import annotations

import base64
import ipaddress
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem"
TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:system-health"
SUBSCRIBE_URL = (
    "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription"
    f"&TopicArn={TOPIC_ARN}&Token=2336412f37fb687f5d51e6e2425c464de257ebe1"
)
UNSUBSCRIBE_URL = (
    "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe"
    f"&SubscriptionArn={TOPIC_ARN}:c9135db0-26c4-47ec-8998-413945fb5a96"
)

# AWS's order; a key takes part when it is present and not null.
_SIGNED_KEYS = (
    "Message",
    "MessageId",
    "Subject",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}


@dataclass(frozen=True)
class SigningIdentity:
    key: rsa.RSAPrivateKey
    certificate: x509.Certificate
    pem: bytes


def make_signing_identity(
    *,
    not_valid_before: datetime | None = None,
    not_valid_after: datetime | None = None,
    common_name: str = "sns.amazonaws.com",
    ip_addresses: tuple[str, ...] = (),
    key: rsa.RSAPrivateKey | None = None,
) -> SigningIdentity:
    """A self-signed certificate for `key` (a new 2048-bit RSA key by default), valid ±1 day."""
    now = datetime.now(UTC)
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_valid_before or now - timedelta(days=1))
        .not_valid_after(not_valid_after or now + timedelta(days=1))
    )
    if ip_addresses:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
            ),
            critical=False,
        )
    certificate = builder.sign(key, hashes.SHA256())
    return SigningIdentity(key, certificate, certificate.public_bytes(serialization.Encoding.PEM))


def aws_string_to_sign(fields: dict[str, Any]) -> bytes:
    """`Key\\nvalue\\n` for each signed key present, in AWS's fixed order."""
    return "".join(
        f"{key}\n{fields[key]}\n" for key in _SIGNED_KEYS if fields.get(key) is not None
    ).encode()


def sign_sns(fields: dict[str, Any], key: rsa.RSAPrivateKey, version: str = "1") -> dict[str, Any]:
    """A copy of `fields` with SignatureVersion and Signature set as SNS would set them."""
    signed = {**fields, "SignatureVersion": version}
    signature = key.sign(aws_string_to_sign(signed), padding.PKCS1v15(), _HASHES[version]())
    signed["Signature"] = base64.b64encode(signature).decode()
    return signed


def notification_fields(
    message: str,
    *,
    subject: str | None = "[Triggered] CPU Load",
    message_id: str = "da41e39f-ea4d-435a-b922-c6aae3915ebe",
    timestamp: str = "2026-11-22T10:00:00.123Z",
    topic_arn: str = TOPIC_ARN,
    cert_url: str = CERT_URL,
) -> dict[str, Any]:
    """An unsigned Notification envelope as SNS posts it (no Subject key when subject is None)."""
    fields: dict[str, Any] = {
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": topic_arn,
        "Message": message,
        "Timestamp": timestamp,
        "SigningCertURL": cert_url,
        "UnsubscribeURL": UNSUBSCRIBE_URL,
    }
    if subject is not None:
        fields["Subject"] = subject
    return fields


def confirmation_fields(
    kind: str = "SubscriptionConfirmation",
    *,
    message_id: str = "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
    timestamp: str = "2026-11-22T09:59:00.000Z",
    topic_arn: str = TOPIC_ARN,
    subscribe_url: str = SUBSCRIBE_URL,
    cert_url: str = CERT_URL,
) -> dict[str, Any]:
    """An unsigned SubscriptionConfirmation or UnsubscribeConfirmation envelope."""
    return {
        "Type": kind,
        "MessageId": message_id,
        "Token": "2336412f37fb687f5d51e6e2425c464de257ebe1",
        "TopicArn": topic_arn,
        "Message": f"You have chosen to subscribe to the topic {topic_arn}.\n"
        "To confirm the subscription, visit the SubscribeURL included in this message.",
        "SubscribeURL": subscribe_url,
        "Timestamp": timestamp,
        "SigningCertURL": cert_url,
    }


def body(fields: dict[str, Any]) -> bytes:
    """The request body SNS would post for `fields`."""
    return json.dumps(fields).encode()
