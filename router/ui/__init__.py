"""The dashboard at `/ui` and its JSON API at `/api/`: see every breaker, delivery and dead letter,
and steer them (with `ROUTER_ADMIN_TOKEN`). `init_dashboard(app)` wires both into the router web."""

from __future__ import annotations

from breaker_client.breakers import Breakers
from flask import Flask

from router.config import Settings
from router.queue import DeliveryQueue
from router.ui.data import Dashboard
from router.ui.security import configure_sessions


def init_dashboard(app: Flask) -> None:
    """Register `/ui` and `/api/` on the router app (after its queue and settings are set)."""
    from router.api import bp as api_bp
    from router.ui.views import bp as ui_bp

    settings: Settings = app.extensions["router.settings"]
    queue: DeliveryQueue = app.extensions["router.queue"]
    # No sync thread: each page reads Redis afresh, so what it shows is never a stale snapshot.
    breakers = Breakers(queue.redis, prefix=settings.breakers_prefix, sync=False)
    app.extensions["router.dashboard"] = Dashboard(queue, breakers)
    configure_sessions(app, settings)
    app.register_blueprint(ui_bp)
    app.register_blueprint(api_bp)
