"""The Flask callback blueprint end to end, through Flask's test client and a real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from breaker_client import Breakers, CallbackEvent, apply_callback, callback_blueprint, sign_headers
from flask import Flask
from flask.testing import FlaskClient

from tests.client_support import SECRET, signed
from tests.conftest import free_port


@pytest.fixture
def breakers(redis_url: str, key_prefix: str) -> Iterator[Breakers]:
    b = Breakers.from_url(redis_url, prefix=key_prefix, sync=False)
    b.refresh()
    yield b
    b.stop()


def make_client(breakers: Breakers | None, handler: Any, **options: Any) -> FlaskClient:
    app = Flask(__name__)
    app.register_blueprint(callback_blueprint(breakers, SECRET, handler, **options))
    return app.test_client()


def test_signed_callback_opens_the_breaker(breakers: Breakers) -> None:
    seen: list[CallbackEvent] = []

    def handler(event: CallbackEvent) -> Any:
        seen.append(event)
        return apply_callback(breakers, event, "bank-charge", tag="bank_code")

    client = make_client(breakers, handler)
    body, headers = signed()
    answer = client.post("/breaker/callback", data=body, headers=headers)
    assert answer.status_code == 200
    assert answer.get_json()["results"][0]["new_state"] == "open"
    assert breakers.is_open("bank-charge", "0001")
    assert seen[0].webhook_id == "d-1"

    # The router's retry of the same delivery is answered without running the handler.
    again = client.post("/breaker/callback", data=body, headers=headers)
    assert (again.status_code, again.get_json()) == (200, {"duplicate": True, "webhook_id": "d-1"})
    assert len(seen) == 1


def test_without_dedupe_a_retry_is_harmless(breakers: Breakers) -> None:
    def handler(event: CallbackEvent) -> Any:
        return apply_callback(breakers, event, "bank-charge", tag="bank_code")

    client = make_client(breakers, handler, dedupe_ttl_s=None, url_prefix="/hooks", path="/dd")
    body, headers = signed()
    first = client.post("/hooks/dd", data=body, headers=headers)
    second = client.post("/hooks/dd", data=body, headers=headers)
    assert first.status_code == second.status_code == 200
    assert second.get_json()["results"][0]["outcome"] == "unchanged"
    assert len(breakers.history("bank-charge", "0001")) == 1


def test_handler_answers(breakers: Breakers) -> None:
    client = make_client(breakers, lambda event: None)
    body, headers = signed(delivery_id="d-none")
    answer = client.post("/breaker/callback", data=body, headers=headers)
    assert (answer.status_code, answer.data) == (204, b"")
    client = make_client(None, lambda event: {"handled": event.transition})
    body, headers = signed("recovery", delivery_id="d-dict")
    answer = client.post("/breaker/callback", data=body, headers=headers)
    assert (answer.status_code, answer.get_json()) == (200, {"handled": "recovery"})


def test_bad_signature_is_401_and_bad_body_is_422(breakers: Breakers) -> None:
    calls: list[CallbackEvent] = []
    client = make_client(breakers, calls.append)
    body, headers = signed()
    forged = client.post("/breaker/callback", data=body + b" ", headers=headers)
    assert forged.status_code == 401
    assert "signature does not match" in forged.get_json()["error"]
    unsigned = client.post("/breaker/callback", data=body)
    assert unsigned.status_code == 401 and "missing header" in unsigned.get_json()["error"]
    junk = b'{"transition": "alert"}'
    answer = client.post(
        "/breaker/callback", data=junk, headers=sign_headers(junk, SECRET, webhook_id="d-9")
    )
    assert answer.status_code == 422 and "delivery_id" in answer.get_json()["error"]
    assert calls == []


def test_redis_down_is_503_so_the_router_retries(key_prefix: str) -> None:
    down = Breakers.from_url(f"redis://127.0.0.1:{free_port()}/0", prefix=key_prefix, sync=False)
    try:

        def handler(event: CallbackEvent) -> Any:
            return apply_callback(down, event, "bank-charge", tag="bank_code")

        for breakers in (down, None):  # failing at the dedupe check, and in the handler
            client = make_client(breakers, handler)
            body, headers = signed()
            answer = client.post("/breaker/callback", data=body, headers=headers)
            assert answer.status_code == 503
            assert answer.get_json()["retry"] is True
            assert "breaker store unavailable" in answer.get_json()["error"]
    finally:
        down.stop()
