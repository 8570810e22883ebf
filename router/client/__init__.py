"""What a service imports: breaker flags read locally, written via Redis, and a callback helper.

    from router.client import Breakers, BreakerOpen
    breakers = Breakers.from_url(os.environ["REDIS_URL"])
    if breakers.is_open("bank-charge", bank_code):   # no network I/O
        ...
    with breakers.guard("bank-charge", bank_code):    # raises BreakerOpen
        charge(...)

Needs only `redis` at import time; `callback_blueprint` imports Flask when called.
"""

from __future__ import annotations

from router.client.breakers import Breakers, FailMode
from router.client.callback import (
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
from router.client.errors import (
    BreakerError,
    BreakerOpen,
    BreakerStoreUnavailable,
    InvalidCallbackBody,
    InvalidSignature,
)
from router.client.flask import callback_blueprint
from router.client.model import BreakerState, HistoryEntry, MonitorState, State, WriteResult
from router.client.receiver import CallbackResponse, apply_callback, process_callback
from router.client.signature import SignatureVerifier, sign_headers, verify_signature
from router.client.writes import GroupStatus

__all__ = [
    "BreakerError",
    "BreakerOpen",
    "BreakerState",
    "BreakerStoreUnavailable",
    "Breakers",
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
    "callback_blueprint",
    "parse_callback_body",
    "process_callback",
    "sign_headers",
    "tag_value",
    "verify_callback",
    "verify_signature",
]
