"""The stub Datadog API as a Flask app: the API paths the router reads, plus a control API.

API (what `datadog-api-client` calls): `GET /api/v1/monitor/<id>[?group_states=..]`,
`GET /api/v1/events/<id>`, `GET /api/v1/monitor/groups/search`.

Control (tests, benchmarks, `router dev`), JSON in and out:
`POST /stub/reset` · `POST /stub/monitors` (one monitor or `{"monitors": [...]}`) ·
`POST /stub/monitors/<id>/groups` (`{group name: status}`) · `POST /stub/events` (one or
`{"events": [...]}`) · `POST /stub/faults` (one or `{"faults": [...]}`) · `POST /stub/keys` ·
`POST /stub/rate-limits` · `GET /stub/calls` · `GET /stub/health`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request

from router.datadog_stub.state import StubSpecError, StubState


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # json.dumps keeps 64-bit ids exact; no float ever sits between us and the client.
    return Response(
        json.dumps(body), status=status, headers=headers or {}, mimetype="application/json"
    )


def _body() -> Any:
    body = request.get_json(silent=True)
    if body is None:
        raise StubSpecError("expected a JSON body")
    return body


def _items(body: Any, plural: str) -> list[Any]:
    """`{"monitors": [...]}`, `[...]` or a single object, as a list of objects."""
    if isinstance(body, dict) and isinstance(body.get(plural), list):
        items: list[Any] = body[plural]
    elif isinstance(body, list):
        items = body
    else:
        items = [body]
    for item in items:
        if not isinstance(item, dict):
            raise StubSpecError(f"{plural}: expected JSON objects, got {item!r}")
    return items


def create_app(
    state: StubState | None = None, *, sleep: Callable[[float], None] = time.sleep
) -> Flask:
    """The stub app over `state` (a fresh one by default)."""
    stub = state or StubState()
    app = Flask("router.datadog_stub")
    app.extensions["datadog_stub"] = stub

    @app.errorhandler(StubSpecError)
    def bad_spec(exc: StubSpecError) -> Response:
        return _json({"error": str(exc)}, 400)

    @app.get("/api/<path:_rest>")
    def api(_rest: str) -> Response:
        answer = stub.handle(request.path, request.args, dict(request.headers.items()))
        if answer.delay_s > 0:
            sleep(answer.delay_s)
        return _json(answer.body, answer.status, answer.headers)

    @app.get("/stub/health")
    def health() -> Response:
        return _json({"ok": True})

    @app.post("/stub/reset")
    def reset() -> Response:
        stub.reset()
        return _json({"reset": True})

    @app.post("/stub/monitors")
    def monitors() -> Response:
        ids = [stub.define_monitor(item) for item in _items(_body(), "monitors")]
        return _json({"ids": [str(i) for i in ids]}, 201)

    @app.post("/stub/monitors/<monitor_id>/groups")
    def groups(monitor_id: str) -> Response:
        body = _body()
        if not isinstance(body, dict):
            raise StubSpecError("expected {group name: status}")
        stub.update_groups(monitor_id, body)
        return _json({"updated": len(body)})

    @app.post("/stub/events")
    def events() -> Response:
        ids = [stub.define_event(item) for item in _items(_body(), "events")]
        return _json({"ids": [str(i) for i in ids]}, 201)

    @app.post("/stub/faults")
    def faults() -> Response:
        items = _items(_body(), "faults")
        for item in items:
            stub.add_fault(item)
        return _json({"added": len(items)}, 201)

    @app.post("/stub/keys")
    def keys() -> Response:
        body = _body()
        if not isinstance(body, dict):
            raise StubSpecError('expected {"api_keys": [...], "app_keys": [...], "status": 403}')
        stub.set_keys(body.get("api_keys"), body.get("app_keys"), int(body.get("status", 403)))
        return _json({"ok": True})

    @app.post("/stub/rate-limits")
    def rate_limits() -> Response:
        body = _body()
        if not isinstance(body, dict):
            raise StubSpecError('expected {"get_monitors": {"limit": 100, "period_s": 10}}')
        for name, spec in body.items():
            if not isinstance(spec, dict):
                raise StubSpecError(f"{name}: expected {{'limit': N, 'period_s': S}}")
            stub.set_rate_limit(name, int(spec.get("limit", 0)), int(spec.get("period_s", 0)))
        return _json({"ok": True})

    @app.get("/stub/calls")
    def calls() -> Response:
        return _json(stub.calls())

    return app
