"""What a service imports: breaker flags read locally, written via Redis, and a callback helper.

    from breaker_client import Breakers, BreakerOpen
    breakers = Breakers.from_url(os.environ["REDIS_URL"])
    if breakers.is_open("bank-charge", bank_code):   # no network I/O
        ...
    with breakers.guard("bank-charge", bank_code):    # raises BreakerOpen
        charge(...)

Needs only `redis` at import time; `callback_blueprint` imports Flask when called. The
callback endpoint for any other framework: `CallbackEndpoint(...)(headers, body)`, or its
`callback_wsgi_app` / `callback_asgi_app` (and `await endpoint.handle_async(...)` on a loop).
"""

from __future__ import annotations

from breaker_client.asgi import callback_asgi_app
from breaker_client.breakers import Breakers, FailMode
from breaker_client.callback import (
    CallbackEvent,
    EnrichmentInfo,
    Event,
    Group,
    Monitor,
    Scope,
    parse_callback_body,
    tag_value,
    verify_callback,
)
from breaker_client.endpoint import CallbackEndpoint
from breaker_client.errors import (
    BreakerError,
    BreakerOpen,
    BreakerStoreUnavailable,
    InvalidCallbackBody,
    InvalidSignature,
)
from breaker_client.flask import callback_blueprint
from breaker_client.model import BreakerState, HistoryEntry, MonitorState, State, WriteResult
from breaker_client.receiver import CallbackResponse, apply_callback, process_callback
from breaker_client.signature import SignatureVerifier, sign_headers, verify_signature
from breaker_client.writes import GroupStatus
from breaker_client.wsgi import callback_wsgi_app

__all__ = [
    "BreakerError",
    "BreakerOpen",
    "BreakerState",
    "BreakerStoreUnavailable",
    "Breakers",
    "CallbackEndpoint",
    "CallbackEvent",
    "CallbackResponse",
    "EnrichmentInfo",
    "Event",
    "FailMode",
    "Group",
    "GroupStatus",
    "HistoryEntry",
    "InvalidCallbackBody",
    "InvalidSignature",
    "Monitor",
    "MonitorState",
    "Scope",
    "SignatureVerifier",
    "State",
    "WriteResult",
    "apply_callback",
    "callback_asgi_app",
    "callback_blueprint",
    "callback_wsgi_app",
    "parse_callback_body",
    "process_callback",
    "sign_headers",
    "tag_value",
    "verify_callback",
    "verify_signature",
]
