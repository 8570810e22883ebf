"""The dashboard's pages under `/ui`: server-rendered, readable by anyone who reaches the router
web, actions for a person signed in with `ROUTER_ADMIN_TOKEN` (see `router.ui.security`)."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response as BaseResponse

from router.config import Settings
from router.ui import inputs
from router.ui.data import ActionRefused, Dashboard, Filters, ForceAction
from router.ui.format import breaker_url, register_filters
from router.ui.security import (
    Refused,
    add_security_headers,
    check_csrf,
    csrf_token,
    require_signed_in,
    sign_in,
    signed_in_name,
    stated_name,
    token_matches,
)

bp = Blueprint(
    "ui",
    __name__,
    url_prefix="/ui",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)
register_filters(bp)

# How much the overview shows of each list; the list pages show more.
OVERVIEW_DEAD_LETTERS = 10
OVERVIEW_DELIVERIES = 15
# Choices offered for how long an override lasts ("" = until cleared).
OVERRIDE_DURATIONS = (("15m", "15 minutes"), ("1h", "1 hour"), ("4h", "4 hours"),
                      ("1d", "1 day"), ("", "until cleared"))  # fmt: skip


def _dashboard() -> Dashboard:
    dashboard: Dashboard = current_app.extensions["router.dashboard"]
    return dashboard


def _settings() -> Settings:
    settings: Settings = current_app.extensions["router.settings"]
    return settings


def _filters(*extra: str) -> Filters:
    inputs.check_known(request.args.keys(), (*inputs.FILTER_FIELDS, *extra), what="filter")
    return inputs.filters(request.args)


def _page(template: str, **context: Any) -> str:
    return render_template(template, **context)


@bp.context_processor
def _common() -> dict[str, Any]:
    settings = _settings()
    enabled = settings.admin_token is not None
    return {
        "actions_enabled": enabled,
        "who": signed_in_name() if enabled else None,
        # Only with a token is there a session to keep a CSRF token in.
        "csrf": csrf_token if enabled else (lambda: ""),
        "now_ms": _dashboard().clock(),
        "dead_count": _dashboard().queue.dead_count(),
        "durations": OVERRIDE_DURATIONS,
    }


@bp.after_request
def _headers(response: Response) -> Response:
    return add_security_headers(response)


@bp.errorhandler(Refused)
@bp.errorhandler(ActionRefused)
def _refused(exc: Refused | ActionRefused) -> tuple[str, int]:
    return _page("error.html", message=str(exc), status=exc.status, next=_page_of()), exc.status


def _page_of() -> str:
    """The page to come back to after signing in: where a refused form was, not its POST URL."""
    if request.method == "GET":
        return request.full_path.rstrip("?")
    args = request.view_args or {}
    if "delivery_id" in args:
        return url_for("ui.delivery", delivery_id=args["delivery_id"])
    if "name" in args:
        return breaker_url(args["name"], request.form.get("key") or None)
    return url_for("ui.overview")


# -- reading -----------------------------------------------------------------------------------


@bp.get("/")
@bp.get("")  # registered first: the overview's address is /ui
def overview() -> str:
    filters = _filters()
    dashboard = _dashboard()
    breakers = dashboard.breaker_rows(filters)
    return _page(
        "overview.html",
        filters=filters,
        health=dashboard.health(),
        not_closed=[b for b in breakers if b["state"] != "closed"],
        breaker_count=len(breakers),
        dead_letters=dashboard.dead_letter_rows(filters, limit=OVERVIEW_DEAD_LETTERS),
        deliveries=dashboard.delivery_rows(filters, limit=OVERVIEW_DELIVERIES),
    )


@bp.get("/breakers")
def breakers() -> str:
    filters = _filters()
    return _page("breakers.html", filters=filters, breakers=_dashboard().breaker_rows(filters))


@bp.get("/breakers/<name>")
def breaker(name: str) -> str:
    inputs.check_known(request.args.keys(), ("key",), what="parameter")
    key = inputs.breaker_key(request.args)
    return _page("breaker.html", key=key, **_dashboard().breaker(name, key))


@bp.get("/deliveries")
def deliveries() -> str:
    filters = _filters("status", "limit")
    status = inputs.status(request.args)
    rows = _dashboard().delivery_rows(filters, status=status, limit=inputs.limit(request.args))
    return _page("deliveries.html", filters=filters, status=status, deliveries=rows)


@bp.get("/deliveries/<delivery_id>")
def delivery(delivery_id: str) -> str:
    return _page("delivery.html", delivery=_dashboard().delivery(delivery_id))


@bp.get("/dead-letters")
def dead_letters() -> str:
    filters = _filters("limit")
    rows = _dashboard().dead_letter_rows(filters, limit=inputs.limit(request.args))
    return _page("dead_letters.html", filters=filters, dead_letters=rows)


@bp.get("/dead-letters/<delivery_id>/purge")
def confirm_purge(delivery_id: str) -> str:
    return _page("confirm_purge.html", delivery=_dashboard().delivery(delivery_id))


@bp.get("/monitors")
def monitors() -> str:
    filters = _filters()
    return _page("monitors.html", filters=filters, monitors=_dashboard().monitor_rows(filters))


@bp.get("/health")
def health() -> str:
    return _page("health.html", health=_dashboard().health())


# -- signing in --------------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    """Back to a dashboard page only: never an open redirect to another site."""
    if target and target.startswith("/ui") and "//" not in target and "\\" not in target:
        return target
    return url_for("ui.overview")


@bp.get("/login")
def login() -> str:
    return _page("login.html", next=_safe_next(request.args.get("next")), status=200)


@bp.post("/login")
def do_login() -> BaseResponse | tuple[str, int]:
    settings = _settings()
    if settings.admin_token is None:
        raise Refused("actions are disabled: ROUTER_ADMIN_TOKEN is not set on the router", 403)
    check_csrf(request.form.get("csrf"))
    target = _safe_next(request.form.get("next"))
    name = stated_name(request.form.get("name"), field="name")
    if not token_matches(request.form.get("token", ""), settings.admin_token):
        message = "That is not the router's ROUTER_ADMIN_TOKEN; nothing was changed."
        return _page("login.html", next=target, error=message, name=name, status=401), 401
    sign_in(name)
    flash(f"Signed in as {name}. Your actions are written into the history under this name.")
    return redirect(target, code=303)


@bp.post("/logout")
def logout() -> BaseResponse:
    check_csrf(request.form.get("csrf"))
    session.clear()
    return redirect(url_for("ui.overview"), code=303)


# -- acting ------------------------------------------------------------------------------------


def _acting() -> str:
    """The signed-in person's name, after the CSRF check; refuses anyone else."""
    settings = _settings()
    if settings.admin_token is not None:
        check_csrf(request.form.get("csrf"))
    return require_signed_in(settings)


@bp.post("/dead-letters/<delivery_id>/replay")
def replay(delivery_id: str) -> BaseResponse:
    by = _acting()
    _dashboard().replay(delivery_id, by=by, channel="ui")
    flash(f"Replayed {delivery_id}: queued again under its own id.")
    return redirect(url_for("ui.delivery", delivery_id=delivery_id), code=303)


@bp.post("/dead-letters/<delivery_id>/purge")
def purge(delivery_id: str) -> BaseResponse:
    by = _acting()
    if request.form.get("confirm") != "yes":
        return redirect(url_for("ui.confirm_purge", delivery_id=delivery_id), code=303)
    _dashboard().purge(delivery_id, by=by, channel="ui")
    flash(f"Purged {delivery_id} for good.")
    return redirect(url_for("ui.dead_letters"), code=303)


@bp.post("/breakers/<name>/force")
def force(name: str) -> BaseResponse:
    by = _acting()
    form = request.form
    action = form.get("action")
    if action not in ("open", "close"):
        raise Refused(f"action: expected open or close, got {action!r}", 422)
    forced: ForceAction = "open" if action == "open" else "close"
    key = inputs.breaker_key(form)
    _dashboard().force(
        forced,
        name,
        key,
        reason=inputs.text(form, "reason", required=True),
        by=by,
        expires_in_s=inputs.expiry(form, "for"),
        channel="ui",
    )
    flash(f"Forced {name}{' ' + key if key else ''} {'open' if forced == 'open' else 'closed'}.")
    return redirect(breaker_url(name, key), code=303)


@bp.post("/breakers/<name>/clear")
def clear(name: str) -> BaseResponse:
    by = _acting()
    key = inputs.breaker_key(request.form)
    reason = inputs.text(request.form, "reason") or "override cleared"
    _dashboard().clear(name, key, reason=reason, by=by, channel="ui")
    flash(f"Cleared the override on {name}{' ' + key if key else ''}: it follows its monitor.")
    return redirect(breaker_url(name, key), code=303)
