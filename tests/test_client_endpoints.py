"""The framework-free callback endpoint: plain call, WSGI, ASGI and asyncio, on a real Redis."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from collections.abc import Iterator
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from breaker_client import (
    Breakers,
    CallbackEndpoint,
    CallbackEvent,
    WriteResult,
    apply_callback,
    callback_asgi_app,
    callback_wsgi_app,
)

from tests.client_support import SECRET, signed
from tests.conftest import free_port


@pytest.fixture
def breakers(redis_url: str, key_prefix: str) -> Iterator[Breakers]:
    b = Breakers.from_url(redis_url, prefix=key_prefix, sync=False)
    b.refresh()
    yield b
    b.stop()


def bank_endpoint(breakers: Breakers, **options: Any) -> CallbackEndpoint:
    return CallbackEndpoint(
        breakers,
        SECRET,
        lambda event: apply_callback(breakers, event, "bank-charge", tag="bank_code"),
        **options,
    )


# -- the plain function: headers and raw body in, status and JSON out --------------------------


def test_plain_call_applies_a_signed_callback(breakers: Breakers) -> None:
    endpoint = bank_endpoint(breakers)
    body, headers = signed()
    answer = endpoint(headers, body)
    assert answer.status == 200
    assert answer.body is not None and answer.body["results"][0]["new_state"] == "open"
    assert breakers.is_open("bank-charge", "0001")
    # Headers as a list of pairs, in any case, as frameworks hand them over.
    again = endpoint([(name.upper(), value) for name, value in headers.items()], body)
    assert (again.status, again.body) == (200, {"duplicate": True, "webhook_id": "d-1"})


def test_plain_call_refuses_what_it_must(breakers: Breakers) -> None:
    endpoint = bank_endpoint(breakers, max_body_bytes=10_000)
    body, headers = signed()
    assert endpoint(headers, body + b" ").status == 401
    big = b" " * 10_001
    too_big = endpoint(headers, big)
    assert too_big.status == 413
    assert too_big.body == {"error": "callback body larger than 10000 bytes"}
    assert not breakers.is_open("bank-charge", "0001")


# -- WSGI ---------------------------------------------------------------------------------------


def wsgi_call(
    app: Any, method: str = "POST", path: str = "/breaker/callback", body: bytes = b"", **env: str
) -> tuple[str, dict[str, str], bytes]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/json",
        "wsgi.input": io.BytesIO(body),
    }
    environ.update(env)
    setup_testing_defaults(environ)
    started: list[tuple[str, list[tuple[str, str]]]] = []
    chunks = app(environ, lambda status, headers, exc_info=None: started.append((status, headers)))
    content = b"".join(chunks)
    status, headers = started[0]
    return status, dict(headers), content


def as_environ(headers: dict[str, str]) -> dict[str, str]:
    return {"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()}


def test_wsgi_app_applies_a_signed_callback(breakers: Breakers) -> None:
    app = callback_wsgi_app(bank_endpoint(breakers), path="/breaker/callback")
    body, headers = signed()
    status, answer_headers, content = wsgi_call(app, body=body, **as_environ(headers))
    assert status == "200 OK"
    assert answer_headers["content-type"] == "application/json"
    assert int(answer_headers["content-length"]) == len(content)
    assert json.loads(content)["results"][0]["new_state"] == "open"
    assert breakers.is_open("bank-charge", "0001")


def test_wsgi_app_answers_mistakes_with_json(breakers: Breakers) -> None:
    app = callback_wsgi_app(bank_endpoint(breakers, max_body_bytes=100), path="/breaker/callback")
    body, headers = signed()
    status, answer_headers, content = wsgi_call(app, "GET")
    assert (status, answer_headers["allow"]) == ("405 Method Not Allowed", "POST")
    assert "POST only" in json.loads(content)["error"]
    status, _, content = wsgi_call(app, path="/other")
    assert status == "404 Not Found" and "/breaker/callback" in json.loads(content)["error"]
    status, _, content = wsgi_call(app, body=body, CONTENT_LENGTH="ten")
    assert status == "400 Bad Request" and "Content-Length" in json.loads(content)["error"]
    # Refused by its declared length, before a byte of the body is read.
    status, _, _ = wsgi_call(app, body=body, **as_environ(headers))
    assert status == "413 Request Entity Too Large"
    status, _, content = wsgi_call(app, body=b"{}")
    assert status == "401 Unauthorized" and "missing header" in json.loads(content)["error"]


def test_wsgi_app_answers_503_when_redis_is_down(key_prefix: str) -> None:
    down = Breakers.from_url(f"redis://127.0.0.1:{free_port()}/0", prefix=key_prefix, sync=False)
    try:
        app = callback_wsgi_app(bank_endpoint(down))  # any path
        body, headers = signed()
        status, _, content = wsgi_call(app, path="/anywhere", body=body, **as_environ(headers))
        assert status == "503 Service Unavailable" and json.loads(content)["retry"] is True
    finally:
        down.stop()


# -- ASGI and asyncio ---------------------------------------------------------------------------


async def asgi_call(
    app: Any, method: str = "POST", path: str = "/breaker/callback", chunks: tuple[bytes, ...] = ()
) -> tuple[int, dict[str, str], bytes]:
    """Drive an ASGI app as a server would: one scope, the body in chunks, collect what it sends."""
    scope = {"type": "http", "method": method, "path": path, "headers": []}
    return await asgi_request(app, scope, chunks)


async def asgi_request(
    app: Any, scope: dict[str, Any], chunks: tuple[bytes, ...]
) -> tuple[int, dict[str, str], bytes]:
    incoming = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks or (b"",))
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, body = sent
    assert start["type"] == "http.response.start" and body["type"] == "http.response.body"
    headers = {name.decode(): value.decode() for name, value in start["headers"]}
    return start["status"], headers, body["body"]


def signed_scope(headers: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/breaker/callback",
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
    }


def test_asgi_app_applies_a_signed_callback_sent_in_chunks(breakers: Breakers) -> None:
    app = callback_asgi_app(bank_endpoint(breakers), path="/breaker/callback")
    body, headers = signed()
    half = len(body) // 2
    status, answer_headers, content = asyncio.run(
        asgi_request(app, signed_scope(headers), (body[:half], body[half:]))
    )
    assert status == 200 and answer_headers["content-type"] == "application/json"
    assert json.loads(content)["results"][0]["new_state"] == "open"
    assert breakers.is_open("bank-charge", "0001")


def test_asgi_app_answers_mistakes_with_json(breakers: Breakers) -> None:
    app = callback_asgi_app(bank_endpoint(breakers, max_body_bytes=100), path="/breaker/callback")
    status, headers, content = asyncio.run(asgi_call(app, "GET"))
    assert (status, headers["allow"]) == (405, "POST")
    status, _, content = asyncio.run(asgi_call(app, path="/other"))
    assert status == 404 and "/breaker/callback" in json.loads(content)["error"]
    status, _, content = asyncio.run(asgi_call(app, chunks=(b"x" * 60, b"x" * 60)))
    assert status == 413 and "100 bytes" in json.loads(content)["error"]
    status, _, content = asyncio.run(asgi_call(app, chunks=(b"{}",)))
    assert status == 401 and "missing header" in json.loads(content)["error"]


def test_asgi_app_answers_the_lifespan_protocol(breakers: Breakers) -> None:
    app = callback_asgi_app(bank_endpoint(breakers))
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app({"type": "lifespan"}, receive, send))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_handling_on_a_loop_does_not_block_it(breakers: Breakers) -> None:
    """The handler's (here deliberately slow) Redis writes run in a thread: the loop goes on."""
    handler_threads: list[threading.Thread] = []

    def slow_handler(event: CallbackEvent) -> list[WriteResult]:
        handler_threads.append(threading.current_thread())
        time.sleep(0.3)  # a Redis that answers slowly
        return apply_callback(breakers, event, "bank-charge", tag="bank_code")

    endpoint = CallbackEndpoint(breakers, SECRET, slow_handler)
    body, headers = signed()

    async def main() -> tuple[int, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        answer = await endpoint.handle_async(headers, body)
        task.cancel()
        return answer.status, ticks

    status, ticks = asyncio.run(main())
    assert status == 200 and breakers.is_open("bank-charge", "0001")
    assert handler_threads[0] is not threading.main_thread()
    assert ticks >= 10, f"the loop ran only {ticks} ticks while the handler wrote"
