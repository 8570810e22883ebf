"""The callback endpoint as a pure ASGI application: no framework, nothing beyond the stdlib.

    from breaker_client.asgi import callback_asgi_app
    app = callback_asgi_app(CallbackEndpoint(breakers, secret, handler))

Serve it with any ASGI server, or mount it in Starlette, FastAPI, Quart, Django's ASGI
router. The request is verified and handled in a worker thread (`handle_async`), so the
handler's Redis writes never block the event loop. It answers `POST` on `path` (None: on any
path, for when the framework has routed the request already) and the lifespan protocol.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import Any

from breaker_client.endpoint import CallbackEndpoint, encode_response, too_large
from breaker_client.receiver import CallbackResponse

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def callback_asgi_app(endpoint: CallbackEndpoint, *, path: str | None = None) -> ASGIApp:
    """An ASGI 3 app running `endpoint` for each `POST` (404 other paths, 405 other methods)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise ValueError(f"the breaker callback serves HTTP only, not {scope['type']!r}")
        answer = await _answer(endpoint, path, scope, receive)
        content, headers = encode_response(answer)
        if answer.status == 405:
            headers.append(("allow", "POST"))
        await send(
            {
                "type": "http.response.start",
                "status": HTTPStatus(answer.status).value,
                "headers": [(name.encode(), value.encode()) for name, value in headers],
            }
        )
        await send({"type": "http.response.body", "body": content})

    return app


async def _answer(
    endpoint: CallbackEndpoint, path: str | None, scope: Scope, receive: Receive
) -> CallbackResponse:
    if path is not None and scope.get("path") != path:
        return CallbackResponse(404, {"error": f"no such path; the callback is POST {path}"})
    if scope.get("method") != "POST":
        return CallbackResponse(405, {"error": "the breaker callback takes POST only"})
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            # The router gave up on this attempt and will retry it: nothing to apply.
            return CallbackResponse(400, {"error": "the request ended before its body"})
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > endpoint.max_body_bytes:
            return too_large(endpoint.max_body_bytes)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    headers = [
        (name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]
    ]
    return await endpoint.handle_async(headers, b"".join(chunks))


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
