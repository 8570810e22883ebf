"""The baseline of `bench/ingest_load.py`: a bare Flask endpoint, served by gunicorn.

It reads the body and answers 202 with a small JSON object, as the router's route does, and
nothing else: what is left is the cost of gunicorn, Flask and HTTP under the router's gunicorn
settings (`router.gunicorn_conf`).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, request


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/webhooks/datadog")
    def accept() -> tuple[dict[str, Any], int]:
        request.get_data(cache=False)
        return {"status": "queued"}, 202

    @app.get("/readyz")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app
