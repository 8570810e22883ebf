"""A Flask blueprint for a service's breaker callback endpoint.

Flask is imported when `callback_blueprint` is called, never when `breaker_client` is
imported, so services on other frameworks need only `redis` (and use
`breaker_client.CallbackEndpoint`, or its WSGI and ASGI apps).

    breakers = Breakers.from_url(os.environ["REDIS_URL"])
    app.register_blueprint(callback_blueprint(
        breakers, os.environ["ROUTER_SIGNING_SECRET"],
        lambda event: apply_callback(breakers, event, "bank-charge", tag="bank_code"),
    ))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from breaker_client.breakers import Breakers
from breaker_client.endpoint import DEFAULT_MAX_BODY_BYTES, CallbackEndpoint, too_large
from breaker_client.receiver import DEFAULT_DEDUPE_TTL_S, Handler
from breaker_client.signature import DEFAULT_TOLERANCE_S, Secret

if TYPE_CHECKING:
    from flask import Blueprint

DEFAULT_CALLBACK_PATH = "/breaker/callback"


def callback_blueprint(
    breakers: Breakers | None,
    secret: Secret | Sequence[Secret],
    handler: Handler,
    *,
    path: str = DEFAULT_CALLBACK_PATH,
    url_prefix: str | None = None,
    name: str = "breaker_callback",
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    dedupe_ttl_s: float | None = DEFAULT_DEDUPE_TTL_S,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> Blueprint:
    """`POST <url_prefix><path>`: verify, parse, call `handler(event)`, answer.

    Answers 204 (handler returned None) or 200 with its dict or write results; 401 bad
    signature; 413 body over `max_body_bytes`; 422 unreadable body; 503 Redis unavailable
    (the router retries). With
    `breakers` and `dedupe_ttl_s`, a `webhook-id` already handled answers 200 at once.
    """
    import flask

    endpoint = CallbackEndpoint(
        breakers,
        secret,
        handler,
        tolerance_s=tolerance_s,
        dedupe_ttl_s=dedupe_ttl_s,
        max_body_bytes=max_body_bytes,
    )
    blueprint = flask.Blueprint(name, __name__, url_prefix=url_prefix)

    @blueprint.post(path)
    def breaker_callback() -> flask.Response:
        request = flask.request
        if (request.content_length or 0) > max_body_bytes:
            answer = too_large(max_body_bytes)
        else:
            answer = endpoint(request.headers.items(), request.get_data(cache=False))
        if answer.body is None:
            return flask.Response(status=answer.status)
        response = flask.jsonify(answer.body)
        response.status_code = answer.status
        return response

    return blueprint
