"""Notifications to a Slack incoming webhook: what went wrong, how bad, and what to run.

The first occurrence of a (kind, callback, reason) is sent at once; repeats inside a window
(`ROUTER_NOTIFY_FOLD_WINDOW`) only count, in Redis, so every worker folds into the same window;
when the window ends, one worker takes it atomically and sends one summary with the count and
the first and last time. Sending happens on one thread behind a bounded queue: a slow, throttling
or dead Slack never holds up a delivery, and a full queue drops with a log line instead of
blocking.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, cast
from urllib.parse import quote, urlsplit

import httpx
import redis

from router import __version__
from router.config import Settings, format_duration
from router.errors import ConfigError
from router.keys import RouterKeys
from router.model import Enrichment
from router.parsing.callbacks import mask_credentials
from router.queue import Delivery, DeliveryQueue
from router.retry import RetryPolicy, parse_retry_after

log = logging.getLogger(__name__)

Severity = Literal["critical", "warning", "info"]

DEFAULT_DD_SITE = "datadoghq.com"
# Slack's attachment colours and the word in front of every title, so severity reads in a
# notification preview and without colour too.
COLORS: dict[str, str] = {"critical": "#d0021b", "warning": "#f5a623", "info": "#2eb67d"}
WORDING: dict[str, str] = {"critical": "CRITICAL", "warning": "WARNING", "info": "INFO"}
# Room for a burst of distinct problems while Slack throttles; beyond it new ones are dropped
# (and logged) rather than ever blocking a delivery thread.
DEFAULT_QUEUE_SIZE = 1000
# Slack answers a webhook in well under a second; past this the attempt counts as failed.
DEFAULT_HTTP_TIMEOUT_S = 10.0
# Waits between attempts at one message: about two minutes of Slack outage in all.
RETRY_SCHEDULE_S = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0)
# Slack asks for seconds; a longer Retry-After would stall every message behind this one.
MAX_RETRY_AFTER_S = 300.0
# How often each worker looks for fold windows that ended (any worker may; one takes each).
FLUSH_INTERVAL_S = 5.0
FLUSH_BATCH = 100
# A fold outlives its window by this much, so a summary survives workers being down a while,
# yet nothing stays in Redis for ever when none comes back.
FOLD_TTL_MARGIN_S = 86400.0
# Enough for a reason and a response excerpt; Slack truncates far longer text anyway.
TEXT_LIMIT = 3000
# How long close() lets queued messages go out before giving up on them (logged).
DEFAULT_CLOSE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Alert:
    """One thing a person should know about; repeats of one (kind, callback, reason) fold."""

    kind: str
    severity: Severity
    title: str
    text: str
    reason: str
    callback_url: str | None = None
    monitor_id: str | None = None
    event_id: str | None = None
    command: str | None = None
    # What to run about all of them, shown on a fold summary (e.g. `router dlq list`).
    summary_command: str | None = None

    @property
    def fingerprint(self) -> str:
        text = "\n".join((self.kind, self.callback_url or "", self.reason))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def masked(self) -> Alert:
        """The same alert with the credentials of every URL in it masked: safe to send and store."""

        def mask(value: str | None) -> str | None:
            return None if value is None else mask_credentials(value)

        return replace(
            self,
            title=mask_credentials(self.title),
            text=mask_credentials(self.text),
            reason=mask_credentials(self.reason),
            callback_url=mask(self.callback_url),
            command=mask(self.command),
            summary_command=mask(self.summary_command),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Alert:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class Notifier(Protocol):
    def notify(self, alert: Alert) -> None:
        """Queue `alert` for people to see; never blocks the caller, never raises."""

    def close(self) -> None: ...


class NullNotifier:
    """What runs without SLACK_WEBHOOK_URL: alerts are already in the log where they arise."""

    def notify(self, alert: Alert) -> None:
        pass

    def close(self) -> None:
        pass


# -- Datadog links -------------------------------------------------------------------------


def datadog_app_url(site: str | None) -> str:
    """The Datadog web app of a site: `datadoghq.eu` -> `https://app.datadoghq.eu`.

    Sites with their own subdomain (`us3.datadoghq.com`, `ap1.datadoghq.com`) serve the app there.
    """
    host = (site or DEFAULT_DD_SITE).strip().lower()
    # Tolerate a URL where a site name belongs (`https://app.datadoghq.eu/`).
    host = (urlsplit(host).hostname or host) if "//" in host else host.strip("/")
    for prefix in ("api.", "app."):
        host = host.removeprefix(prefix)
    return f"https://{host}" if host.count(".") >= 2 else f"https://app.{host}"


def _digits(value: str | None) -> str | None:
    # Ids come from senders: only plain ids make links, never text that could bend a URL.
    return value if value and value.isascii() and value.isdigit() else None


def monitor_link(app_url: str, monitor_id: str | None) -> str | None:
    monitor_id = _digits(monitor_id)
    return f"{app_url}/monitors/{quote(monitor_id)}" if monitor_id else None


def event_link(app_url: str, event_id: str | None) -> str | None:
    event_id = _digits(event_id)
    return f"{app_url}/event/event?id={quote(event_id)}" if event_id else None


# -- Slack messages --------------------------------------------------------------------------


def _escape(text: str) -> str:
    """Slack's three control characters, escaped as its message formatting asks."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int = TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class Fold:
    """A fold window that ended with repeats: what its summary says."""

    first: Alert
    last: Alert
    started_ms: int
    first_repeat_ms: int
    last_ms: int
    count: int

    @classmethod
    def from_fields(cls, data: dict[str, str]) -> Fold | None:
        """None for a window without repeats (nothing to summarise) or an unreadable one."""
        try:
            count = int(data.get("count") or 0)
            if count <= 0:
                return None
            first = Alert.from_json(data["first"])
            return cls(
                first=first,
                last=Alert.from_json(data["last"]) if data.get("last") else first,
                started_ms=int(data["started_ms"]),
                first_repeat_ms=int(data.get("first_repeat_ms") or data["started_ms"]),
                last_ms=int(data.get("last_ms") or data["started_ms"]),
                count=count,
            )
        except (KeyError, ValueError, TypeError) as exc:
            log.warning("unreadable notification fold dropped: %s", exc)
            return None


def render(alert: Alert, *, app_url: str, at_ms: int, fold: Fold | None = None) -> dict[str, Any]:
    """The incoming-webhook payload: one attachment coloured by severity, links, what to run."""
    word = WORDING[alert.severity]
    if fold is None:
        title = alert.title
        text = alert.text
        command = alert.command
    else:
        repeats = "1 more time" if fold.count == 1 else f"{fold.count} more times"
        title = f"Repeated {repeats}: {alert.title}"
        text = (
            f"Happened {repeats} between {_when(fold.first_repeat_ms)} and "
            f"{_when(fold.last_ms)} (first notified {_when(fold.started_ms)}). Latest: {alert.text}"
        )
        command = alert.summary_command or alert.command
    title = _clip(title.splitlines()[0] if title else alert.kind, 300)
    message_fields: list[dict[str, Any]] = []
    if alert.callback_url:
        message_fields.append({"title": "Callback", "value": _escape(alert.callback_url)})
    links = (
        ("Monitor", monitor_link(app_url, alert.monitor_id), alert.monitor_id),
        ("Event", event_link(app_url, alert.event_id), alert.event_id),
    )
    for name, link, label in links:
        if link:
            message_fields.append({"title": name, "value": f"<{link}|{label}>", "short": True})
    if command:
        message_fields.append({"title": "Run", "value": f"`{_escape(command)}`"})
    summary = f"[{word}] {title}"
    return {
        "text": _escape(summary),
        "attachments": [
            {
                "color": COLORS[alert.severity],
                "fallback": _escape(summary),
                "title": _escape(f"{word}: {title}"),
                "text": _escape(_clip(text)),
                "fields": message_fields,
                "footer": f"breaker-router {__version__} · {alert.kind}",
                "ts": at_ms // 1000,
                "mrkdwn_in": ["text", "fields"],
            }
        ],
    }


# -- fold state shared by all workers ---------------------------------------------------------

# First of its kind in a window: open the window and send. Inside it: count only. A window that
# ended but nobody took yet is taken here, so its summary is sent once, by whoever comes first.
_ADMIT = """
-- KEYS[1]=fold hash, KEYS[2]=open folds zset; ARGV[1]=now_ms, ARGV[2]=window end ms,
-- ARGV[3]=fingerprint, ARGV[4]=alert json, ARGV[5]=ttl ms
local ends = redis.call('HGET', KEYS[1], 'ends_ms')
if ends and tonumber(ends) > tonumber(ARGV[1]) then
  if redis.call('HINCRBY', KEYS[1], 'count', 1) == 1 then
    redis.call('HSET', KEYS[1], 'first_repeat_ms', ARGV[1])
  end
  redis.call('HSET', KEYS[1], 'last_ms', ARGV[1], 'last', ARGV[4])
  return {0, {}}
end
local ended = {}
if ends then ended = redis.call('HGETALL', KEYS[1]) end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'started_ms', ARGV[1], 'ends_ms', ARGV[2], 'count', 0,
  'first', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return {1, ended}
"""

# Windows that ended leave the shared state in the same step that hands them to one caller.
_TAKE_DUE = """
-- KEYS[1]=open folds zset; ARGV[1]=now_ms, ARGV[2]=batch, ARGV[3]=fold key prefix
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local taken = {}
for _, fingerprint in ipairs(due) do
  local key = ARGV[3] .. fingerprint
  local flat = redis.call('HGETALL', key)
  redis.call('ZREM', KEYS[1], fingerprint)
  redis.call('DEL', key)
  if #flat > 0 then table.insert(taken, flat) end
end
return taken
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(flat: list[Any]) -> dict[str, str]:
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}


@dataclass(frozen=True)
class Admitted:
    send_now: bool
    # The previous window of the same fingerprint, ended and taken by this call.
    ended: Fold | None = None


class FoldBook:
    """Fold windows in Redis, one hash per fingerprint plus a sorted set of when each ends."""

    def __init__(self, client: redis.Redis, keys: RouterKeys, *, window_s: float) -> None:
        self.keys = keys
        self.window_ms = int(window_s * 1000)
        self._admit = client.register_script(_ADMIT)
        self._take_due = client.register_script(_TAKE_DUE)

    def admit(self, alert: Alert, now_ms: int) -> Admitted:
        fingerprint = alert.fingerprint
        ends_ms = now_ms + self.window_ms
        ttl_ms = self.window_ms + int(FOLD_TTL_MARGIN_S * 1000)
        answer = cast(
            list[Any],
            self._admit(
                keys=[self.keys.notify_fold(fingerprint), self.keys.notify_folds],
                args=[now_ms, ends_ms, fingerprint, alert.to_json(), ttl_ms],
            ),
        )
        ended = Fold.from_fields(_pairs(answer[1])) if answer[1] else None
        return Admitted(send_now=int(answer[0]) == 1, ended=ended)

    def take_due(self, now_ms: int, batch: int = FLUSH_BATCH) -> list[Fold]:
        """Every window that ended by `now_ms` and had repeats; each is handed out once."""
        answer = cast(
            list[list[Any]],
            self._take_due(
                keys=[self.keys.notify_folds], args=[now_ms, batch, self.keys.notify_fold("")]
            ),
        )
        return [fold for flat in answer if (fold := Fold.from_fields(_pairs(flat)))]


# -- the sender ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outgoing:
    title: str
    payload: dict[str, Any]


SendOutcome = Literal["sent", "retry", "permanent"]


class SlackNotifier:
    """Folds in Redis, then posts to a Slack incoming webhook from one thread."""

    def __init__(
        self,
        webhook_url: str,
        folds: FoldBook,
        *,
        app_url: str = datadog_app_url(None),
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], object] | None = None,
        rng: Callable[[], float] = random.random,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        timeout_s: float = DEFAULT_HTTP_TIMEOUT_S,
        close_timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S,
        flush_interval_s: float = FLUSH_INTERVAL_S,
    ) -> None:
        self.webhook_url = webhook_url
        self.folds = folds
        self.app_url = app_url
        self._http = http or httpx.Client(
            timeout=timeout_s,
            follow_redirects=False,
            headers={"user-agent": f"breaker-router/{__version__}"},
        )
        self._clock = clock
        self._closing = threading.Event()
        # Waiting on the closing flag lets close() cut a backoff short.
        self._sleep = sleep or self._closing.wait
        self._policy = RetryPolicy(RETRY_SCHEDULE_S, rng=rng)
        self._queue: queue.Queue[_Outgoing] = queue.Queue(maxsize=queue_size)
        self._close_timeout_s = close_timeout_s
        self._flush_interval_s = flush_interval_s
        self._counts_lock = threading.Lock()
        self.counts = {"sent": 0, "folded": 0, "dropped": 0, "failed": 0}
        self._thread = threading.Thread(target=self._run, name="slack-notifier", daemon=True)
        self._thread.start()

    def notify(self, alert: Alert) -> None:
        try:
            alert = alert.masked()
            if self._closing.is_set():
                log.warning("notification after close, not sent: %s", alert.title)
                return
            now_ms = self._now_ms()
            try:
                admitted = self.folds.admit(alert, now_ms)
            except redis.RedisError as exc:
                # Better a repeat in Slack than silence because Redis is sick.
                log.warning("notification folds unreachable (%s); sending unfolded", exc)
                admitted = Admitted(send_now=True)
            if admitted.ended is not None:
                self._summarise(admitted.ended, now_ms)
            if admitted.send_now:
                self._enqueue(alert.title, render(alert, app_url=self.app_url, at_ms=now_ms))
            else:
                self._count("folded")
                log.debug("notification folded into its window: %s", alert.title)
        except Exception:
            log.exception("notification could not be queued: %s", alert.title)

    def flush_due(self) -> int:
        """Queue a summary for every fold window that ended; returns how many this call took."""
        now_ms = self._now_ms()
        folds = self.folds.take_due(now_ms)
        for fold in folds:
            self._summarise(fold, now_ms)
        return len(folds)

    def close(self) -> None:
        """Let queued messages go out for a few seconds, then log whatever is left."""
        self._closing.set()
        self._thread.join(self._close_timeout_s)
        left: list[str] = []
        while True:
            try:
                left.append(self._queue.get_nowait().title)
            except queue.Empty:
                break
        for title in left:
            log.error("stopping before this notification reached Slack: %s", title)
        if self._thread.is_alive():
            log.warning("Slack is still answering a request; not waiting for it")
        else:
            self._http.close()

    # -- internals ---------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _count(self, name: str) -> None:
        with self._counts_lock:
            self.counts[name] += 1

    def _summarise(self, fold: Fold, now_ms: int) -> None:
        payload = render(fold.last, app_url=self.app_url, at_ms=now_ms, fold=fold)
        self._enqueue(f"{fold.count} repeats of: {fold.first.title}", payload)

    def _enqueue(self, title: str, payload: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(_Outgoing(title, payload))
        except queue.Full:
            self._count("dropped")
            log.error(
                "Slack notification queue full (%d waiting, Slack slow or down); dropped: %s",
                self._queue.qsize(),
                title,
            )

    def _run(self) -> None:
        next_flush = 0.0
        while not (self._closing.is_set() and self._queue.empty()):
            if not self._closing.is_set() and time.monotonic() >= next_flush:
                next_flush = time.monotonic() + self._flush_interval_s
                try:
                    self.flush_due()
                except Exception:
                    log.exception("could not take ended notification folds; trying again later")
            try:
                item = self._queue.get(timeout=min(self._flush_interval_s, 0.5))
            except queue.Empty:
                continue
            try:
                self._deliver(item)
            except Exception:
                self._count("failed")
                log.exception("notification not sent: %s", item.title)

    def _deliver(self, item: _Outgoing) -> None:
        attempts = 0
        while True:
            attempts += 1
            outcome, detail, retry_after_s = self._post(item.payload)
            if outcome == "sent":
                self._count("sent")
                return
            if outcome == "permanent":
                log.error("Slack refused a notification (%s), not retried: %s", detail, item.title)
                self._count("failed")
                return
            if retry_after_s is not None:
                retry_after_s = min(retry_after_s, MAX_RETRY_AFTER_S)
            delay = self._policy.next_delay(attempts, retry_after_s)
            if delay is None or self._closing.is_set():
                log.error(
                    "Slack failed %d times (last: %s); notification lost: %s",
                    attempts,
                    detail,
                    item.title,
                )
                self._count("failed")
                return
            log.warning("Slack answered %s; trying again in %s", detail, format_duration(delay))
            self._sleep(delay)

    def _post(self, payload: dict[str, Any]) -> tuple[SendOutcome, str, float | None]:
        try:
            response = self._http.post(self.webhook_url, json=payload)
        except httpx.HTTPError as exc:
            return "retry", f"{type(exc).__name__}: {exc}", None
        status = response.status_code
        detail = f"HTTP {status} {response.text[:200]!r}"
        if 200 <= status < 300:
            return "sent", detail, None
        if status == 429 or status == 408 or status >= 500:
            return "retry", detail, parse_retry_after(response.headers.get("retry-after"))
        return "permanent", detail, None


def build_notifier(settings: Settings, redis_client: redis.Redis, *, keys: RouterKeys) -> Notifier:
    """The Slack notifier when SLACK_WEBHOOK_URL is set, else one that does nothing."""
    url = settings.slack_webhook_url
    if not url:
        return NullNotifier()
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(
            "SLACK_WEBHOOK_URL: expected an incoming-webhook URL such as "
            f"https://hooks.slack.com/services/T000/B000/XXXX, got {mask_credentials(url)[:40]!r}"
        )
    folds = FoldBook(redis_client, keys, window_s=settings.notify_fold_window_s)
    return SlackNotifier(url, folds, app_url=datadog_app_url(settings.dd_site))


def alert_sink(notifier: Notifier) -> Callable[..., None]:
    """`notifier` in the shape of `router.reconcile.AlertSink`; context names `Alert` fields."""
    known = {f.name for f in fields(Alert)} - {"kind", "severity", "title", "text"}

    def sink(kind: str, severity: str, title: str, text: str, **context: str) -> None:
        level = cast(Severity, severity if severity in COLORS else "warning")
        extra = {name: value for name, value in context.items() if name in known}
        extra.setdefault("reason", title)
        notifier.notify(Alert(kind=kind, severity=level, title=title, text=text, **extra))

    return sink


# -- what the worker reports -------------------------------------------------------------------


def dead_letter_alert(delivery: Delivery, reason: str) -> Alert:
    n = delivery.notification
    return Alert(
        kind="dead_letter",
        severity="critical",
        title=f"Dead letter: {n.title or n.transition} could not reach its callback",
        text=(
            f"{n.transition} for monitor {n.monitor_id or '?'} (scope {n.scope or '-'}) was not "
            f"delivered: {reason}. The service's breaker may not have been told."
        ),
        reason=reason,
        callback_url=delivery.url,
        monitor_id=n.monitor_id,
        event_id=n.event_id,
        command=f"router dlq replay {delivery.id}",
        summary_command="router dlq list",
    )


def breaker_alert(delivery: Delivery, enrichment: Enrichment) -> Alert | None:
    """An alert or recovery that its callback acknowledged: a breaker opened or closed."""
    n = delivery.notification
    if n.transition not in ("alert", "recovery"):
        return None
    opened = n.transition == "alert"
    what = "opened" if opened else "closed"
    name = enrichment.monitor_name or n.title or f"monitor {n.monitor_id or '?'}"
    return Alert(
        kind="breaker_opened" if opened else "breaker_closed",
        severity="warning" if opened else "info",
        title=f"Breaker {what}: {name}",
        text=(
            f"{n.datadog_transition or n.transition} (scope {n.scope or '-'}) delivered; the "
            f"callback acknowledged it, so its breaker is {what}."
        ),
        reason=f"monitor {n.monitor_id or n.title} {n.transition}",
        callback_url=delivery.url,
        monitor_id=n.monitor_id,
        event_id=n.event_id,
        command="router breakers list",
    )


def credentials_alerts(health: dict[str, Any]) -> list[Alert]:
    """One alert per Datadog API call that refuses the router's keys (from Enricher.health)."""
    return [
        Alert(
            kind="datadog_credentials",
            severity="critical",
            title="Datadog refuses the router's API keys",
            text=(
                f"{failure.get('operation')}: HTTP {failure.get('status')}: "
                f"{failure.get('message')} (since {failure.get('since')}). Deliveries go out "
                "without enrichment and the reconciler cannot read monitors."
            ),
            reason=f"Datadog refused {failure.get('operation')} ({failure.get('status')})",
            command="check DD_API_KEY, DD_APP_KEY (scopes monitors_read, events_read) and DD_SITE",
        )
        for failure in health.get("auth_failures") or ()
    ]


def oldest_waiting_ms(delivery_queue: DeliveryQueue) -> int | None:
    """When the oldest entry still in the stream (ready or held by a worker) was added."""
    entries = cast(
        list[tuple[Any, Any]], delivery_queue.redis.xrange(delivery_queue.keys.stream, count=1)
    )
    if not entries:
        return None
    # Entries are removed when settled, so the first one left is the oldest unfinished one.
    return int(_text(entries[0][0]).partition("-")[0])


def backlog_alert(age_s: float, threshold_s: float) -> Alert:
    return Alert(
        kind="backlog",
        severity="critical",
        title=f"Deliveries are waiting: the oldest for {age_s / 60:.0f} min",
        text=(
            f"A delivery has waited {age_s / 60:.1f} min to be sent (threshold "
            f"{format_duration(threshold_s)}): workers are down, overwhelmed, or stuck on slow "
            "endpoints."
        ),
        reason=f"backlog older than {format_duration(threshold_s)}",
        command="check that `router worker` processes run (and their logs); add workers",
    )
