"""The router's web app: `create_app()` for gunicorn, `create_app(mapping)` for tests."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, cast

import httpx
import redis
from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from router import __version__
from router.allowlist import CallbackAllowList
from router.config import settings_for
from router.errors import AuthError, ForbiddenError, PayloadError, QueueUnavailable
from router.inbound import bp as inbound_bp
from router.inbound_alertmanager import bp as alertmanager_bp
from router.keys import BreakerKeys, RouterKeys
from router.metrics import MetricsWriter
from router.metrics import render as render_metrics
from router.openapi import openapi_document
from router.parsing.sns import CertificateUnavailable, SnsVerifier, fetch_certificate_https
from router.queue import DeliveryQueue
from router.reconcile import RECONCILE_STATUS_FIELDS, reconciler_health
from router.redis_conn import connect, missing_replicas
from router.ui import init_dashboard

log = logging.getLogger(__name__)

# SNS waits about 15 s for an answer; confirming must leave room for the reply.
SNS_CONFIRM_TIMEOUT_S = 5.0
# Tells a sender (Datadog, SNS) when to try again after a 503.
RETRY_AFTER_S = "5"


def confirm_sns_subscription(url: str) -> None:
    """GET the SubscribeURL (already checked to be an SNS host) to confirm a subscription."""
    response = httpx.get(url, timeout=SNS_CONFIRM_TIMEOUT_S, follow_redirects=False)
    response.raise_for_status()


def _error(message: str, status: int, **headers: str) -> Response:
    response = jsonify({"error": message, "status": status})
    response.status_code = status
    response.headers.update(headers)
    return response


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(PayloadError)
    def payload_error(exc: PayloadError) -> Response:
        return _error(str(exc), exc.status)

    @app.errorhandler(AuthError)
    def auth_error(exc: AuthError) -> Response:
        # The Basic challenge lets SNS (and curl) send the credentials in the URL.
        return _error(str(exc), 401, **{"WWW-Authenticate": 'Basic realm="breaker-router"'})

    @app.errorhandler(ForbiddenError)
    def forbidden(exc: ForbiddenError) -> Response:
        return _error(str(exc), 403)

    @app.errorhandler(QueueUnavailable)
    @app.errorhandler(CertificateUnavailable)
    def unavailable(exc: Exception) -> Response:
        log.warning("answering 503: %s", exc)
        return _error(f"{exc}; try again later", 503, **{"Retry-After": RETRY_AFTER_S})

    @app.errorhandler(redis.RedisError)
    def redis_down(exc: redis.RedisError) -> Response:
        log.warning("answering 503, Redis failed: %s", exc)
        return _error(
            f"Redis is unavailable ({exc}); try again later", 503, **{"Retry-After": RETRY_AFTER_S}
        )

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 413:
            limit = app.config["MAX_CONTENT_LENGTH"]
            message = f"the body exceeds {limit} bytes (ROUTER_MAX_BODY_BYTES)"
        return _error(message, status)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unexpected error")
        return _error("internal error; it has been logged", 500)


def _datadog_check(published: dict[str, str]) -> dict[str, Any]:
    """Every live worker's view of the Datadog API, merged: degraded if any has a problem."""
    if not published:
        return {"status": "unknown", "detail": "no worker has reported Datadog API health"}
    reports = [json.loads(report) for report in published.values()]
    problems = sorted({p for report in reports for p in report.get("problems", [])})
    healthy = all(report.get("ok") for report in reports) and not problems
    return {
        "status": "ok" if healthy else "degraded",
        "enabled": any(report.get("enabled") for report in reports),
        "problems": problems,
        "reported_by": sorted(published),
    }


def create_app(
    config: Mapping[str, str] | None = None,
    *,
    redis_client: redis.Redis | None = None,
    sns_fetch_certificate: Callable[[str], bytes] | None = None,
    sns_confirm: Callable[[str], None] | None = None,
) -> Flask:
    """Build the app from `config` (a mapping of environment variables) or the environment."""
    settings = settings_for(os.environ if config is None else config, "web")
    client = redis_client or connect(settings.require_redis())
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["router.settings"] = settings
    app.extensions["router.queue"] = DeliveryQueue(
        client,
        RouterKeys(settings.key_prefix),
        retention_s=settings.delivery_retention_s,
        wait_replicas=settings.redis_wait_replicas,
        wait_timeout_s=settings.redis_wait_timeout_s,
    )
    app.extensions["router.metrics"] = MetricsWriter(client, RouterKeys(settings.key_prefix))
    app.extensions["router.sns_verifier"] = SnsVerifier(
        sns_fetch_certificate or fetch_certificate_https
    )
    app.extensions["router.sns_confirm"] = sns_confirm or confirm_sns_subscription
    # Optional on the web: when set, the 202 warns about URLs the workers will refuse.
    app.extensions["router.allow"] = (
        CallbackAllowList(settings.callback_allow) if settings.callback_allow else None
    )
    app.register_blueprint(inbound_bp)
    app.register_blueprint(alertmanager_bp)
    init_dashboard(app)
    _register_error_handlers(app)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @app.get("/readyz")
    def readyz() -> tuple[dict[str, Any], int]:
        queue: DeliveryQueue = app.extensions["router.queue"]
        try:
            client.ping()
            datadog = cast(dict[str, str], client.hgetall(queue.keys.enrichment_health))
            reconcile = cast(
                list[str | None],
                client.hmget(queue.keys.reconcile_status, list(RECONCILE_STATUS_FIELDS)),
            )
            short = missing_replicas(client, queue.keys.stream, settings.redis_wait_replicas)
        except redis.RedisError as exc:
            return {"status": "unavailable", "checks": {"redis": f"unreachable: {exc}"}}, 503
        if short:
            return {"status": "unavailable", "checks": {"redis": short}}, 503
        # Ready means notifications are accepted; Datadog trouble only makes them partial and
        # a stale reconciler only delays repairs, so both are reported without failing it.
        status = {k: v for k, v in zip(RECONCILE_STATUS_FIELDS, reconcile, strict=True) if v}
        return {
            "status": "ready",
            "checks": {
                "redis": "ok",
                "datadog": _datadog_check(datadog),
                "reconciler": reconciler_health(status),
            },
        }, 200

    @app.get("/metrics")
    def metrics() -> Response:
        queue: DeliveryQueue = app.extensions["router.queue"]
        # Breakers are counted where the services keep them: BREAKERS_PREFIX in this Redis.
        text = render_metrics(queue, BreakerKeys(settings.breakers_prefix))
        return Response(text, mimetype="text/plain; version=0.0.4")

    @app.get("/openapi.json")
    def openapi() -> dict[str, Any]:
        return openapi_document()

    return app
