"""The dashboard's JSON API under `/api/`, for scripts: the same data and actions as `/ui`.

Reads need nothing. Actions need `Authorization: Bearer <ROUTER_ADMIN_TOKEN>` (no cookie is
ever read here, so no CSRF is possible) and a JSON body naming who acts (`by`). Every bad
input is a 4xx `{"error": ..., "status": ...}` that names the problem.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from router.config import Settings
from router.errors import PayloadError
from router.parsing.jsonbody import parse_json_object
from router.ui import inputs
from router.ui.data import ActionRefused, Dashboard, ForceAction
from router.ui.security import Refused, add_security_headers, check_bearer, stated_name

bp = Blueprint("api", __name__, url_prefix="/api")

_LIST_ARGS = (*inputs.FILTER_FIELDS, "limit")
_OVERRIDE_FIELDS = ("key", "reason", "by", "expires_in")


def _dashboard() -> Dashboard:
    dashboard: Dashboard = current_app.extensions["router.dashboard"]
    return dashboard


def _args(*allowed: str) -> dict[str, str]:
    inputs.check_known(request.args.keys(), allowed, what="query parameter")
    return {k: v for k, v in request.args.items()}


def _acting(allowed: tuple[str, ...]) -> tuple[dict[str, Any], str]:
    """The checked bearer token, then the JSON body and who acts."""
    settings: Settings = current_app.extensions["router.settings"]
    check_bearer(request, settings.admin_token)
    if not request.is_json:
        raise Refused(
            f"expected Content-Type: application/json, got {request.mimetype or 'none'}", 415
        )
    try:
        # The webhooks' reader: it bounds nesting and refuses text that cannot be stored.
        body = parse_json_object(request.get_data(cache=False), what="body", not_object_status=400)
    except PayloadError as exc:
        raise Refused(f'{exc}; expected a JSON object such as {{"by": "your name"}}', 400) from None
    inputs.check_known(body.keys(), allowed, what="field")
    return body, stated_name(body.get("by"))


@bp.after_request
def _headers(response: Response) -> Response:
    return add_security_headers(response)


@bp.errorhandler(Refused)
@bp.errorhandler(ActionRefused)
def _refused(exc: Refused | ActionRefused) -> tuple[Response, int]:
    return jsonify({"error": str(exc), "status": exc.status}), exc.status


@bp.get("/health")
def health() -> dict[str, Any]:
    _args()
    return _dashboard().health()


@bp.get("/breakers")
def breakers() -> dict[str, Any]:
    args = _args(*_LIST_ARGS)
    rows = _dashboard().breaker_rows(inputs.filters(args))
    return {"breakers": rows[: inputs.limit(args)] if "limit" in args else rows}


@bp.get("/breakers/<name>")
def breaker(name: str) -> dict[str, Any]:
    args = _args("key")
    return _dashboard().breaker(name, inputs.breaker_key(args))


@bp.post("/breakers/<name>/force-open")
def force_open(name: str) -> dict[str, Any]:
    return _force("open", name)


@bp.post("/breakers/<name>/force-close")
def force_close(name: str) -> dict[str, Any]:
    return _force("close", name)


def _force(action: ForceAction, name: str) -> dict[str, Any]:
    body, by = _acting(_OVERRIDE_FIELDS)
    return _dashboard().force(
        action,
        name,
        inputs.breaker_key(body),
        reason=inputs.text(body, "reason", required=True),
        by=by,
        expires_in_s=inputs.expiry(body, "expires_in"),
        channel="api",
    )


@bp.post("/breakers/<name>/clear")
def clear(name: str) -> dict[str, Any]:
    body, by = _acting(("key", "reason", "by"))
    reason = inputs.text(body, "reason") or "override cleared"
    return _dashboard().clear(name, inputs.breaker_key(body), reason=reason, by=by, channel="api")


@bp.get("/deliveries")
def deliveries() -> dict[str, Any]:
    args = _args(*_LIST_ARGS, "status")
    rows = _dashboard().delivery_rows(
        inputs.filters(args), status=inputs.status(args), limit=inputs.limit(args)
    )
    return {"deliveries": rows}


@bp.get("/deliveries/<delivery_id>")
def delivery(delivery_id: str) -> dict[str, Any]:
    _args()
    return _dashboard().delivery(delivery_id)


@bp.get("/dead-letters")
def dead_letters() -> dict[str, Any]:
    args = _args(*_LIST_ARGS)
    rows = _dashboard().dead_letter_rows(inputs.filters(args), limit=inputs.limit(args))
    return {"dead_letters": rows}


@bp.post("/dead-letters/<delivery_id>/replay")
def replay(delivery_id: str) -> dict[str, Any]:
    _body, by = _acting(("by",))
    return _dashboard().replay(delivery_id, by=by, channel="api")


@bp.post("/dead-letters/<delivery_id>/purge")
def purge(delivery_id: str) -> dict[str, Any]:
    body, by = _acting(("by", "confirm"))
    if body.get("confirm") is not True:
        raise Refused('a purge cannot be undone: send "confirm": true to purge for good', 400)
    return _dashboard().purge(delivery_id, by=by, channel="api")


@bp.get("/monitors")
def monitors() -> dict[str, Any]:
    args = _args(*inputs.FILTER_FIELDS)
    return {"monitors": _dashboard().monitor_rows(inputs.filters(args))}


@bp.get("/audit")
def audit() -> dict[str, Any]:
    args = _args("limit")
    return {"audit": _dashboard().audit(limit=inputs.limit(args))}
