"""Standard Webhooks signatures on callback requests: verify (and sign, for tests and tools).

Implemented with `hmac` rather than the `standardwebhooks` package so that `breaker_client`
needs only `redis`, the tolerance and the clock are configurable, and every rejection says
exactly what was wrong. The scheme is the package's (and the router's): HMAC-SHA256 over
`<webhook-id>.<webhook-timestamp>.<body>`, header `webhook-signature: v1,<base64> ...`,
secret `whsec_<base64>`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping, Sequence

from breaker_client.errors import InvalidSignature

# The Standard Webhooks default: a request more than 5 minutes old (or ahead) is refused,
# which stops replays while tolerating ordinary clock skew.
DEFAULT_TOLERANCE_S = 300.0

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"
_SECRET_PREFIX = "whsec_"

Secret = str | bytes


def decode_secret(secret: Secret) -> bytes:
    """`whsec_<base64>` (or bare base64) as key bytes; `bytes` are used as the key itself."""
    if isinstance(secret, bytes):
        key = secret
    else:
        # Secrets are sometimes written without their base64 padding: restore it.
        text = secret.removeprefix(_SECRET_PREFIX).strip().rstrip("=")
        text += "=" * (-len(text) % 4)
        try:
            key = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(
                "signing secret must be 'whsec_' followed by base64 (as the router's "
                f"ROUTER_SIGNING_SECRET); it could not be decoded: {exc}"
            ) from exc
    if not key:
        raise ValueError("signing secret is empty")
    return key


def _sign(key: bytes, webhook_id: str, timestamp: str, body: bytes) -> bytes:
    return hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


class SignatureVerifier:
    """Checks callback requests against one or more secrets (several during a rotation)."""

    def __init__(
        self,
        secret: Secret | Sequence[Secret],
        *,
        tolerance_s: float = DEFAULT_TOLERANCE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        secrets = [secret] if isinstance(secret, str | bytes) else list(secret)
        if not secrets:
            raise ValueError("at least one signing secret is needed")
        self._keys = [decode_secret(s) for s in secrets]
        self.tolerance_s = tolerance_s
        self._clock = clock

    def verify(self, body: bytes, headers: Mapping[str, str]) -> str:
        """Return the request's `webhook-id` if its signature and timestamp are good."""
        lowered = {name.lower(): value for name, value in headers.items()}
        missing = [h for h in (HEADER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE) if not lowered.get(h)]
        if missing:
            raise InvalidSignature(
                f"missing header {', '.join(missing)}: a signed callback carries "
                f"{HEADER_ID}, {HEADER_TIMESTAMP} and {HEADER_SIGNATURE}"
            )
        webhook_id = lowered[HEADER_ID]
        timestamp = lowered[HEADER_TIMESTAMP].strip()
        # isascii(): str.isdigit() also accepts digits like "²" that int() then refuses; the
        # length bound keeps int() and the float arithmetic below from overflowing.
        if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
            raise InvalidSignature(
                f"{HEADER_TIMESTAMP} must be integer Unix seconds, got {timestamp[:40]!r}"
            )
        skew = self._clock() - int(timestamp)
        if abs(skew) > self.tolerance_s:
            direction = "old" if skew > 0 else "in the future"
            raise InvalidSignature(
                f"{HEADER_TIMESTAMP} {timestamp} is {abs(skew):.0f}s {direction}; at most "
                f"{self.tolerance_s:.0f}s is accepted (a replayed request, or clocks apart)"
            )
        expected = [_sign(key, webhook_id, timestamp, body) for key in self._keys]
        candidates = 0
        for item in lowered[HEADER_SIGNATURE].split():
            version, sep, encoded = item.partition(",")
            if not sep or not version or not encoded:
                continue  # as the reference libraries do: an unreadable entry is skipped
            if version != "v1":
                continue  # other schemes (e.g. v1a, ed25519) may sit beside ours
            try:
                signature = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidSignature(
                    f"malformed {HEADER_SIGNATURE} entry {item[:40]!r}: not valid base64"
                ) from None
            candidates += 1
            if any(hmac.compare_digest(signature, digest) for digest in expected):
                return webhook_id
        if not candidates:
            raise InvalidSignature(f"{HEADER_SIGNATURE} has no 'v1,' signature")
        raise InvalidSignature(
            "signature does not match: the signing secret differs, or the body or "
            f"{HEADER_ID}/{HEADER_TIMESTAMP} changed in transit"
        )


def verify_signature(
    body: bytes,
    headers: Mapping[str, str],
    secret: Secret | Sequence[Secret],
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> str:
    """Verify one request; returns its `webhook-id`, raises `InvalidSignature`."""
    clock = time.time if now is None else (lambda: now)
    return SignatureVerifier(secret, tolerance_s=tolerance_s, clock=clock).verify(body, headers)


def sign_headers(
    body: bytes, secret: Secret, *, webhook_id: str, timestamp: int | None = None
) -> dict[str, str]:
    """Headers the router would send with `body` (for a service's tests and local tools)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = base64.b64encode(_sign(decode_secret(secret), webhook_id, ts, body)).decode()
    return {
        HEADER_ID: webhook_id,
        HEADER_TIMESTAMP: ts,
        HEADER_SIGNATURE: f"v1,{signature}",
        "content-type": "application/json",
    }
