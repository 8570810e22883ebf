"""The callback endpoint as a plain WSGI application, for any WSGI framework or server.

    from breaker_client.wsgi import callback_wsgi_app
    app = callback_wsgi_app(CallbackEndpoint(breakers, secret, handler))

Mount it where your framework mounts WSGI apps (Django, Pyramid, Bottle, werkzeug's
`DispatcherMiddleware`), or serve it alone. It answers `POST` on `path` (None: on any path,
for when the framework has routed the request already).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING

from breaker_client.endpoint import CallbackEndpoint, encode_response, too_large
from breaker_client.receiver import CallbackResponse

if TYPE_CHECKING:
    from collections.abc import Iterable
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment


def callback_wsgi_app(endpoint: CallbackEndpoint, *, path: str | None = None) -> WSGIApplication:
    """A WSGI app running `endpoint` for each `POST` (404 other paths, 405 other methods)."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        answer = _answer(endpoint, path, environ)
        content, headers = encode_response(answer)
        if answer.status == 405:
            headers.append(("allow", "POST"))
        status = HTTPStatus(answer.status)
        start_response(f"{status.value} {status.phrase}", headers)
        return [content]

    return app


def _answer(
    endpoint: CallbackEndpoint, path: str | None, environ: WSGIEnvironment
) -> CallbackResponse:
    if path is not None and environ.get("PATH_INFO", "") != path:
        return CallbackResponse(404, {"error": f"no such path; the callback is POST {path}"})
    if environ.get("REQUEST_METHOD") != "POST":
        return CallbackResponse(405, {"error": "the breaker callback takes POST only"})
    raw_length = environ.get("CONTENT_LENGTH") or ""
    stream = environ["wsgi.input"]
    if raw_length.strip():
        try:
            length = int(raw_length)
        except ValueError:
            return CallbackResponse(400, {"error": f"bad Content-Length {raw_length!r}"})
        if length < 0:
            return CallbackResponse(400, {"error": f"bad Content-Length {raw_length!r}"})
        if length > endpoint.max_body_bytes:
            return too_large(endpoint.max_body_bytes)
        body = stream.read(length)
    elif environ.get("wsgi.input_terminated"):
        # A chunked request the server already de-chunked: read up to one byte past the limit.
        body = stream.read(endpoint.max_body_bytes + 1)
    else:
        body = b""
    return endpoint(_headers(environ), body)


def _headers(environ: WSGIEnvironment) -> dict[str, str]:
    headers = {
        name[5:].replace("_", "-").lower(): str(value)
        for name, value in environ.items()
        if name.startswith("HTTP_")
    }
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = str(environ["CONTENT_TYPE"])
    return headers
