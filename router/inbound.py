"""The webhook endpoints: authenticate, parse, and answer 202 only once Redis holds the work."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import redis
from flask import Blueprint, Request, Response, current_app, g, request
from flask.blueprints import BlueprintSetupState
from tenacity import (
    retry,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from router.allowlist import CallbackAllowList
from router.auth import check_token
from router.batching import Batcher, BatchWaitTimeout
from router.config import Settings
from router.errors import ForbiddenError, PayloadError, QueueUnavailable
from router.logs import delivery_fields
from router.metrics import MetricsWriter, notification_field
from router.model import Notification
from router.parsing.callbacks import describe_problems, mask_credentials, scan_callback_lines
from router.parsing.datadog import parse_datadog_webhook
from router.parsing.jsonbody import parse_json_object, refuse_json_of_another_type
from router.parsing.sns import (
    SnsVerifier,
    check_sns_age,
    notification_from_sns,
    parse_sns_envelope,
    validate_subscribe_url,
)
from router.queue import Counted, DeliveryQueue, Enqueued, now_ms

log = logging.getLogger(__name__)

bp = Blueprint("inbound", __name__)

JSON_TYPES = ("application/json", "text/json")
FORM_TYPE = "application/x-www-form-urlencoded"
# Riding out a Redis failover blip inside one request is cheaper than making Datadog retry.
ENQUEUE_RETRY_WINDOW_S = 2.0
# How long a request waits for the batch holding it (see router.batching): the retry window
# and a stalled Redis's socket timeout (router.redis_conn), with room to spare.
ENQUEUE_WAIT_S = 15.0
# Each URL is a stored delivery: a message naming more is a mistake or an attack on Redis.
MAX_CALLBACK_URLS = 20
# Every route under this is a notification source, named by the next path segment.
WEBHOOKS_PATH = "/webhooks/"
# The `reason` label of a refused notification: a class per status, not per message.
REJECTION_REASONS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    413: "too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
}


def settings() -> Settings:
    return current_app.extensions["router.settings"]  # type: ignore[no-any-return]


def queue() -> DeliveryQueue:
    return current_app.extensions["router.queue"]  # type: ignore[no-any-return]


# A notification and the source it is counted under in the inbound metrics.
Incoming = tuple[Notification, str]


def batcher() -> Batcher[Incoming, list[Enqueued]]:
    return current_app.extensions["router.enqueue_batcher"]  # type: ignore[no-any-return]


@bp.record_once
def _start_batching(state: BlueprintSetupState) -> None:
    """Concurrent requests of this process store their notifications in one call to Redis."""
    target: DeliveryQueue = state.app.extensions["router.queue"]
    state.app.extensions["router.enqueue_batcher"] = Batcher(
        lambda batch: _store_with_retry(target, batch), wait_s=ENQUEUE_WAIT_S
    )


def request_source() -> str:
    """The notification source a webhook route is for: the path segment after /webhooks/."""
    rule = request.url_rule.rule if request.url_rule is not None else ""
    if not rule.startswith(WEBHOOKS_PATH):
        return ""
    return rule[len(WEBHOOKS_PATH) :].split("/", 1)[0]


@bp.after_app_request
def count_notification(response: Response) -> Response:
    """Count each notification by source and outcome, whichever endpoint or error answered."""
    source = request_source()
    if not source or g.get("notification_counted"):
        return response  # not a notification, or counted with its enqueue (one round trip)
    status = response.status_code
    reason = ""
    if status < 300:
        answer = response.get_json(silent=True) if response.is_json else None
        said = answer.get("status") if isinstance(answer, dict) else None
        outcome = g.get("notification_outcome") or str(said or "accepted")
    elif status == 503:
        outcome = "unavailable"
    elif 400 <= status < 500:
        outcome, reason = "rejected", REJECTION_REASONS.get(status, f"http_{status}")
    else:
        outcome = "error"
    metrics: MetricsWriter = current_app.extensions["router.metrics"]
    metrics.notification(source, outcome, reason)
    return response


def authenticate() -> None:
    config = settings()
    if config.inbound_auth_disabled:
        return
    assert config.inbound_token is not None  # Settings.require_web() guarantees it
    check_token(request, config.inbound_token)


def read_datadog_payload(req: Request) -> dict[str, Any]:
    """The posted payload as a dict: JSON (Datadog's default) or form ("Encode as form")."""
    if req.mimetype == FORM_TYPE:
        refuse_json_of_another_type(req.get_data(cache=True), req.content_type)
        return dict(req.form.to_dict())
    return read_json_payload(req, also=f" (or {FORM_TYPE})")


def read_json_payload(req: Request, *, also: str = "") -> dict[str, Any]:
    """The posted JSON object; `also` names other Content-Types the endpoint accepts."""
    mimetype = req.mimetype
    if mimetype not in JSON_TYPES and not mimetype.endswith("+json"):
        refuse_json_of_another_type(req.get_data(cache=True), req.content_type)
        raise PayloadError(
            f"expected Content-Type application/json{also}, got {req.content_type or 'none'}",
            status=415,
        )
    raw = req.get_data(cache=False)
    if not raw.strip():
        raise PayloadError("the request body is empty; expected a JSON object", status=400)
    return parse_json_object(raw, what="the body")


@retry(
    retry=retry_if_exception_type((redis.ConnectionError, redis.TimeoutError)),
    stop=stop_after_delay(ENQUEUE_RETRY_WINDOW_S),
    wait=wait_exponential(multiplier=0.05, max=0.5),
    reraise=True,
)
def _retry_store(target: DeliveryQueue, batch: Sequence[Incoming]) -> list[list[Enqueued]]:
    return _store(target, batch)


def _store_with_retry(target: DeliveryQueue, batch: Sequence[Incoming]) -> list[list[Enqueued]]:
    try:
        return _store(target, batch)
    except (redis.ConnectionError, redis.TimeoutError):
        # Only now the retry machinery: it costs more than the call itself on every request.
        return _retry_store(target, batch)


def _store(target: DeliveryQueue, batch: Sequence[Incoming]) -> list[list[Enqueued]]:
    counted = [
        Counted(notification_field(source, "queued"), notification_field(source, "duplicate"))
        for _, source in batch
    ]
    return target.enqueue_many([notification for notification, _ in batch], counted=counted)


@lru_cache(maxsize=1024)
def _allow_warning(allow: CallbackAllowList, url: str) -> str | None:
    """What the 202 says about a URL the workers will refuse; the same URLs come again and
    again, and checking one costs more than the rest of its delivery's answer."""
    if allow.allows(url):
        return None
    return allow.refusal(url).replace("no request was made", "")


def accept(notification: Notification) -> tuple[dict[str, Any], int]:
    """Queue one delivery per callback URL and describe what was queued."""
    config = settings()
    summary: dict[str, Any] = {
        "transition": notification.transition,
        "monitor_id": notification.monitor_id,
        "event_id": notification.event_id,
        "dedup_key": notification.dedup_key,
    }
    warnings = list(notification.warnings)
    if warnings:
        # Accepted anyway (a 4xx would lose the alert), but the template needs fixing.
        log.warning(
            "notification %s (monitor %s, event %s) accepted with fields ignored: %s",
            notification.dedup_key,
            notification.monitor_id,
            notification.event_id,
            "; ".join(warnings),
        )
    if len(notification.callback_urls) > MAX_CALLBACK_URLS:
        raise PayloadError(
            f"the message names {len(notification.callback_urls)} callback URLs; at most "
            f"{MAX_CALLBACK_URLS} are accepted per notification",
            status=422,
        )
    lines = scan_callback_lines(notification.message, config.callback_keyword)
    problems = describe_problems(lines)
    if not notification.callback_urls and any(line.carries_credentials for line in lines):
        # Refused loudly rather than dropped: Datadog shows a 4xx on the monitor's event.
        log.warning(
            "notification %s (monitor %s) refused: %s",
            notification.dedup_key,
            notification.monitor_id,
            "; ".join(problems),
        )
        raise PayloadError("no usable callback line: " + "; ".join(problems), status=422)
    if problems:
        # A mistyped callback line silently loses every alert: say so where people look.
        log.warning(
            "notification %s (monitor %s) has unusable callback lines%s: %s",
            notification.dedup_key,
            notification.monitor_id,
            "" if notification.callback_urls else "; nothing queued",
            "; ".join(problems),
        )
    # What is stored is shown on the dashboard and sent to every callback in the message.
    message, title = mask_credentials(notification.message), mask_credentials(notification.title)
    if message != notification.message or title != notification.title:
        notification = dataclasses.replace(notification, message=message, title=title)
    if not notification.callback_urls:
        if not problems:
            log.info("notification %s has no callback line; nothing queued", notification.dedup_key)
        return {
            "status": "no_callback",
            "detail": f"the message has no '{config.callback_keyword}: <url>' line for this "
            "transition; nothing was queued",
            "problems": problems,
            "warnings": warnings,
            "notification": summary,
            "deliveries": [],
        }, 202
    try:
        results = batcher().submit((notification, request_source()))
    except (redis.RedisError, BatchWaitTimeout) as exc:
        raise QueueUnavailable(f"the queue (Redis) is unavailable: {exc}") from exc
    # Counted as queued, or as a sender's retry of one already queued, by the enqueue itself.
    g.notification_counted = True
    allow: CallbackAllowList | None = current_app.extensions["router.allow"]
    deliveries = []
    for result in results:
        item: dict[str, Any] = {
            "id": result.delivery_id,
            "url": result.url,
            "duplicate": not result.created,
        }
        warning = None if allow is None else _allow_warning(allow, result.url)
        if warning is not None:
            item["warning"] = warning
        deliveries.append(item)
        log.info(
            "queued" if result.created else "duplicate ignored",
            extra=delivery_fields(result.delivery_id, notification, url=result.url),
        )
    return {
        "status": "queued",
        # The usable lines are queued; the others are named, never dropped without a word.
        "problems": problems,
        "warnings": warnings,
        "notification": summary,
        "deliveries": deliveries,
    }, 202


@bp.post("/webhooks/datadog")
def datadog_webhook() -> tuple[dict[str, Any], int]:
    authenticate()
    payload = read_datadog_payload(request)
    notification = parse_datadog_webhook(
        payload, keyword=settings().callback_keyword, received_at_ms=now_ms()
    )
    return accept(notification)


@bp.post("/webhooks/sns")
def sns_webhook() -> tuple[dict[str, Any], int]:
    authenticate()
    config = settings()
    message = parse_sns_envelope(
        request.get_data(cache=False),
        message_type_header=request.headers.get("x-amz-sns-message-type"),
    )
    # The signature first: nothing in the message is believed, or answered about, before it.
    verifier: SnsVerifier = current_app.extensions["router.sns_verifier"]
    verifier.verify(message)
    check_sns_age(message, now=datetime.now(UTC), max_age_s=config.sns_max_age_s)
    if message.topic_arn not in config.sns_topics:
        # The accepted topics are configuration, not something to tell a sender.
        log.warning("refused an SNS message from topic %s", message.topic_arn)
        raise ForbiddenError(f"SNS topic {message.topic_arn} is not in ROUTER_SNS_TOPICS")
    if message.type == "SubscriptionConfirmation":
        assert message.subscribe_url is not None
        validate_subscribe_url(message.subscribe_url)
        confirm: Callable[[str], None] = current_app.extensions["router.sns_confirm"]
        try:
            confirm(message.subscribe_url)
        except Exception as exc:
            raise QueueUnavailable(f"could not confirm the SNS subscription: {exc}") from exc
        log.info("confirmed SNS subscription to %s", message.topic_arn)
        return {"status": "subscribed", "topic_arn": message.topic_arn}, 200
    if message.type == "UnsubscribeConfirmation":
        log.warning("SNS says the subscription to %s was removed", message.topic_arn)
        return {"status": "unsubscribed", "topic_arn": message.topic_arn}, 200
    notification = notification_from_sns(
        message, keyword=config.callback_keyword, received_at_ms=now_ms()
    )
    return accept(notification)
