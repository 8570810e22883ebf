"""Inbound authentication: the shared token, however the sender can carry it.

Datadog can put credentials in the webhook URL (basic auth) or in custom headers; SNS only in
the URL. So the token is accepted as `Authorization: Bearer`, an `X-Router-Token` header, or
the basic-auth password, and always compared in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator

from flask import Request

from router.errors import AuthError

TOKEN_HEADER = "X-Router-Token"
AUTH_HINT = (
    "send ROUTER_INBOUND_TOKEN as 'Authorization: Bearer <token>', an X-Router-Token header, "
    "or the password in the webhook URL (https://router:<token>@host/...)"
)


def _presented(request: Request) -> Iterator[str]:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        yield value.strip()
    if request.headers.get(TOKEN_HEADER):
        yield request.headers[TOKEN_HEADER].strip()
    if scheme.lower() != "basic":
        return  # parsing the header costs more than the rest: only a basic one can match
    credentials = request.authorization
    if credentials is not None and credentials.type == "basic" and credentials.password:
        yield credentials.password


def check_token(request: Request, expected: str) -> None:
    """Raise AuthError unless the request carries `expected` in one of the accepted places."""
    expected_bytes = expected.encode()
    matched = False
    presented_any = False
    for candidate in _presented(request):
        presented_any = True
        # No early exit: every candidate is compared, so timing says nothing about which.
        matched |= hmac.compare_digest(candidate.encode(), expected_bytes)
    if matched:
        return
    if presented_any:
        raise AuthError("the token presented is not ROUTER_INBOUND_TOKEN")
    raise AuthError(f"no credentials: {AUTH_HINT}")
