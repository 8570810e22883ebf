"""What the dashboard and its JSON API show and do, in one place, so both serve the same data.

Everything here returns plain JSON-ready dicts (times in epoch ms) with every string that came
from a sender or a URL passed through `mask_credentials`: no page or API answer can show a
secret. Actions take the person's stated name; breaker overrides carry it into the breaker's
history, and every action is also written to a capped audit stream (`RouterKeys.audit`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from breaker_client import BreakerState, HistoryEntry
from breaker_client.breakers import Breakers

from router.keys import BreakerKeys
from router.metrics import WORKER_SILENT_AFTER_MS
from router.parsing.callbacks import mask_credentials
from router.queue import RECENT_DELIVERIES_MAX, Delivery, DeliveryQueue, now_ms
from router.reconcile import RECONCILE_STATUS_FIELDS, ToldBook, reconciler_health

Status = Literal["queued", "retrying", "delivered", "dead"]
STATUSES: tuple[Status, ...] = ("queued", "retrying", "delivered", "dead")
ForceAction = Literal["open", "close"]

# Enough to see a bad night at a glance without loading thousands of records per page view.
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# A breaker's changes drawn in its timeline (the client keeps at most its `history_max`).
HISTORY_LIMIT = 100
# Dead letters read per page; the stream itself is never trimmed.
DEAD_LETTERS_READ = 500
# A person's actions kept for the dashboard; older ones are trimmed (roughly) past this.
AUDIT_MAX = 2000
# Deliveries waiting longer than this make the page say so (Datadog itself gives up at 15 s).
QUEUE_AGE_WARN_MS = 60_000
# A breaker list that long is cut on the page (the API's `limit` says how many it returns).
BREAKERS_SHOWN_MAX = 1000
# Sources that `breaker_client.apply_callback` writes: `monitor:<id> event:<id> delivery:<id>`.
_SOURCE_PART = re.compile(r"\b(monitor|event|delivery):(\S+)")
# What a timeline spans when a breaker has a single change: far enough back to show it.
TIMELINE_MIN_SPAN_MS = 60_000
TIMELINE_WIDTH = 1000


class ActionRefused(Exception):
    """An action that cannot be done as asked; `status` is the HTTP status that says why."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def masked(value: Any) -> Any:
    """`value` with credentials masked in every string it holds, however deeply nested."""
    if isinstance(value, str):
        return mask_credentials(value)
    if isinstance(value, Mapping):
        return {key: masked(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [masked(item) for item in value]
    return value


@dataclass(frozen=True)
class Filters:
    """What a person narrowed the page to; empty fields match everything."""

    breaker: str = ""  # part of `name` or `name:key`
    monitor: str = ""  # a monitor id
    callback: str = ""  # part of a (masked) callback URL

    @property
    def active(self) -> bool:
        return bool(self.breaker or self.monitor or self.callback)

    def as_query(self) -> dict[str, str]:
        return {k: v for k, v in vars(self).items() if v}

    def breaker_matches(self, row: Mapping[str, Any]) -> bool:
        if self.breaker and self.breaker.lower() not in row["member"].lower():
            return False
        return not self.monitor or row["links"].get("monitor") == self.monitor

    def delivery_matches(self, row: Mapping[str, Any], monitors: set[str] | None) -> bool:
        if self.monitor and row["monitor_id"] != self.monitor:
            return False
        if self.callback and self.callback.lower() not in row["url"].lower():
            return False
        return monitors is None or row["monitor_id"] in monitors


def source_links(source: str) -> dict[str, str]:
    """The monitor, event and delivery a breaker's source names (`apply_callback` writes them)."""
    return {kind: value for kind, value in _SOURCE_PART.findall(source)}


def breaker_row(state: BreakerState) -> dict[str, Any]:
    row = masked(state.to_dict())
    row["member"] = BreakerKeys.member(state.name, state.key)
    row["open"] = state.open
    # The monitor write under any override: which monitor, event and delivery set it.
    row["links"] = source_links(row["monitor_source"])
    return cast(dict[str, Any], row)


def delivery_row(delivery: Delivery) -> dict[str, Any]:
    notification = delivery.notification
    last = delivery.attempts[-1] if delivery.attempts else None
    return cast(
        dict[str, Any],
        masked(
            {
                "id": delivery.id,
                "status": delivery.status,
                "url": delivery.url,
                "reason": delivery.reason,
                "monitor_id": notification.monitor_id or "",
                "event_id": notification.event_id,
                "title": notification.title,
                "transition": notification.transition,
                "source": notification.source,
                "created_ms": delivery.created_ms,
                "updated_ms": delivery.updated_ms,
                "next_attempt_ms": delivery.next_attempt_ms,
                "replays": delivery.replays,
                "attempts": delivery.attempts,
                "last_attempt": last,
            }
        ),
    )


def timeline(history: list[HistoryEntry], now: int, *, ramp_ms: int = 0) -> dict[str, Any]:
    """A breaker's history as segments on one axis (0..`TIMELINE_WIDTH`), oldest on the left.

    Each change holds until the next; a recovery ramp ends by itself after `ramp_ms` with no
    history entry, so a `recovering` segment turns `closed` there."""
    # An ignored (stale) event is listed in the history but changed nothing to draw.
    changes = sorted((e for e in history if not e.stale), key=lambda e: e.time_ms)
    if not changes:
        return {"start_ms": now, "end_ms": now, "segments": [], "marks": []}
    start = min(changes[0].time_ms, now - TIMELINE_MIN_SPAN_MS)
    span = max(now - start, 1)

    def x(ms: int) -> float:
        return round((ms - start) / span * TIMELINE_WIDTH, 2)

    spans: list[tuple[str, int, int]] = [
        (changes[0].old_state or "closed", start, changes[0].time_ms)
    ]
    for entry, after in zip(changes, [*changes[1:], None], strict=True):
        end = after.time_ms if after is not None else now
        if entry.new_state == "recovering" and ramp_ms and entry.time_ms + ramp_ms < end:
            spans.append(("recovering", entry.time_ms, entry.time_ms + ramp_ms))
            spans.append(("closed", entry.time_ms + ramp_ms, end))
        else:
            spans.append((entry.new_state, entry.time_ms, end))
    segments = [
        {"state": state, "start_ms": s, "end_ms": e, "x": x(s), "width": max(x(e) - x(s), 0.0)}
        for state, s, e in spans
        if e > s
    ]
    marks = [
        {"x": x(e.time_ms), "time_ms": e.time_ms, "action": e.action, "new_state": e.new_state}
        for e in changes
    ]
    return {"start_ms": start, "end_ms": now, "segments": segments, "marks": marks}


class Dashboard:
    """Reads for the pages and the API, and the actions a signed-in person may take."""

    def __init__(
        self,
        queue: DeliveryQueue,
        breakers: Breakers,
        *,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.queue = queue
        self.redis = queue.redis
        self.keys = queue.keys
        self.breakers = breakers
        self.book = ToldBook(queue.redis, queue.keys)
        self.clock = clock

    # -- health ----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Workers, queue, Datadog API and reconciler, plus plain-words problems first."""
        now = self.clock()
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.worker_heartbeats)
        pipe.hgetall(self.keys.enrichment_health)
        pipe.hmget(self.keys.reconcile_status, list(RECONCILE_STATUS_FIELDS))
        pipe.xrange(self.keys.stream, count=1)
        pipe.zrange(self.keys.delayed, 0, 0, withscores=True)
        beats, reports, reconcile_values, oldest, next_retry = pipe.execute()
        workers: list[dict[str, Any]] = []
        for name, beat in sorted(cast(dict[str, str], beats).items()):
            report = json.loads(reports.get(name) or "null") or {}
            workers.append(
                {
                    "name": name,
                    "last_heartbeat_ms": int(beat),
                    "alive": now - int(beat) <= WORKER_SILENT_AFTER_MS,
                    "datadog": masked(
                        {
                            "enabled": bool(report.get("enabled")),
                            "ok": bool(report.get("ok", True)),
                            "api_host": report.get("api_host"),
                            "problems": list(report.get("problems") or ()),
                        }
                    )
                    if report
                    else None,
                }
            )
        status = {k: v for k, v in zip(RECONCILE_STATUS_FIELDS, reconcile_values, strict=True) if v}
        reconciler = reconciler_health(status, now=now)
        reconciler["last_run_ms"] = (
            int(status["last_run_ms"]) if status.get("last_run_ms") else None
        )
        oldest_ms = int(oldest[0][0].partition("-")[0]) if oldest else None
        queue = {
            **self.queue.depths(),
            "oldest_waiting_ms": oldest_ms,
            "oldest_age_ms": now - oldest_ms if oldest_ms is not None else None,
            "next_retry_ms": int(next_retry[0][1]) if next_retry else None,
        }
        datadog = _datadog_summary(workers)
        alive = [w for w in workers if w["alive"]]
        last_beat = max((w["last_heartbeat_ms"] for w in workers), default=None)
        problems = _problems(alive, queue, datadog, reconciler)
        return {
            "now_ms": now,
            "status": "critical"
            if any(p["severity"] == "critical" for p in problems)
            else ("warning" if problems else "ok"),
            "problems": problems,
            "workers": workers,
            "workers_alive": len(alive),
            "last_heartbeat_ms": last_beat,
            "queue": queue,
            "datadog": datadog,
            "reconciler": masked(reconciler),
        }

    # -- breakers --------------------------------------------------------------------------

    def breaker_rows(self, filters: Filters | None = None) -> list[dict[str, Any]]:
        """The breakers that match: not closed first (open, forced, ramping), then by name."""
        filters = filters or Filters()
        rows = [breaker_row(state) for state in self.breakers.list()]
        rows = [row for row in rows if filters.breaker_matches(row)]
        return sorted(rows, key=lambda r: (_STATE_ORDER.get(r["state"], 9), r["member"]))

    def breaker(self, name: str, key: str | None) -> dict[str, Any]:
        """One breaker with its history (newest first) and that history as a timeline."""
        try:
            state = self.breakers.state(name, key)
            history = self.breakers.history(name, key, limit=HISTORY_LIMIT)
        except ValueError as exc:  # a malformed name or key
            raise ActionRefused(str(exc), 422) from exc
        member = BreakerKeys.member(name, key)
        if not history and state.updated_ms is None:
            raise ActionRefused(f"no breaker {member!r} has ever been written", 404)
        ramp = self.redis.hget(self.breakers.keys.record(member), "ramp_ms")
        return {
            "breaker": breaker_row(state),
            "history": [
                {**masked(entry.to_dict()), "links": source_links(entry.source)}
                for entry in history
            ],
            "timeline": timeline(history, self.clock(), ramp_ms=int(ramp or 0)),
            "audit": self.audit(target=member),
        }

    # -- deliveries ------------------------------------------------------------------------

    def delivery_rows(
        self,
        filters: Filters | None = None,
        *,
        status: Status | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[dict[str, Any]]:
        """The latest deliveries (newest change first) that match, each with every attempt."""
        filters = filters or Filters()
        monitors = self._monitors_of_breakers(filters)
        rows = []
        for delivery in self.queue.recent(RECENT_DELIVERIES_MAX):
            row = delivery_row(delivery)
            if status and row["status"] != status:
                continue
            if filters.delivery_matches(row, monitors):
                rows.append(row)
                if len(rows) >= limit:
                    break
        return rows

    def delivery(self, delivery_id: str) -> dict[str, Any]:
        delivery = self.queue.load(delivery_id)
        if delivery is None:
            raise ActionRefused(
                f"no delivery {delivery_id!r}: never queued, purged, or past its retention", 404
            )
        row = delivery_row(delivery)
        row["notification"] = masked(delivery.notification.to_dict())
        row["audit"] = self.audit(target=delivery_id)
        return row

    def dead_letter_rows(
        self, filters: Filters | None = None, *, limit: int = DEFAULT_LIMIT
    ) -> list[dict[str, Any]]:
        """Dead letters newest first, each with its delivery's title and attempts."""
        filters = filters or Filters()
        monitors = self._monitors_of_breakers(filters)
        letters = self.queue.dead_letters(limit=DEAD_LETTERS_READ)
        pipe = self.redis.pipeline(transaction=False)
        for letter in letters:
            pipe.hgetall(self.keys.delivery(letter.delivery_id))
        rows = []
        for letter, data in zip(letters, pipe.execute(), strict=True):
            delivery = Delivery.from_hash(data) if data else None
            if delivery is None:
                continue  # purged between the two reads
            row = delivery_row(delivery)
            row["dead_at_ms"] = letter.dead_at_ms
            if filters.delivery_matches(row, monitors):
                rows.append(row)
                if len(rows) >= limit:
                    break
        return rows

    def _monitors_of_breakers(self, filters: Filters) -> set[str] | None:
        """The monitors that last wrote the breakers a breaker filter names (None: no filter)."""
        if not filters.breaker:
            return None
        rows = self.breaker_rows(Filters(breaker=filters.breaker))
        return {row["links"]["monitor"] for row in rows if "monitor" in row["links"]}

    # -- monitors --------------------------------------------------------------------------

    def monitor_rows(self, filters: Filters | None = None) -> list[dict[str, Any]]:
        """Each monitor with a callback: its last reconcile and what each callback was last told."""
        filters = filters or Filters()
        outcomes = self.book.monitor_outcomes()
        by_monitor: dict[str, dict[str, Any]] = {}

        def monitor(monitor_id: str) -> dict[str, Any]:
            return by_monitor.setdefault(
                monitor_id,
                {
                    "id": monitor_id,
                    "title": None,
                    "last_delivery_ms": None,
                    "reconcile": outcomes.get(monitor_id),
                    "callbacks": [],
                },
            )

        for target in self.book.targets():
            told = self.book.told(target)
            monitor(target.monitor_id)["callbacks"].append(
                masked(
                    {
                        "url": target.url,
                        "since_ms": target.since_ms,
                        "told": [
                            {"group": group, "status": t.status, "as_of_ms": t.version}
                            for group, t in sorted(told.items())
                        ],
                    }
                )
            )
        for delivery in self.queue.recent(RECENT_DELIVERIES_MAX):
            monitor_id = delivery.notification.monitor_id
            if not monitor_id:
                continue
            row = monitor(monitor_id)
            if row["title"] is None:  # the newest delivery names the monitor best
                row["title"] = mask_credentials(delivery.notification.title)
                row["last_delivery_ms"] = delivery.updated_ms
        monitors_of_breakers = self._monitors_of_breakers(filters)
        rows = []
        for row in sorted(by_monitor.values(), key=lambda r: r["id"]):
            if filters.monitor and row["id"] != filters.monitor:
                continue
            if monitors_of_breakers is not None and row["id"] not in monitors_of_breakers:
                continue
            if filters.callback:
                wanted = filters.callback.lower()
                row["callbacks"] = [c for c in row["callbacks"] if wanted in c["url"].lower()]
                if not row["callbacks"]:
                    continue
            rows.append(row)
        return rows

    # -- actions ---------------------------------------------------------------------------

    def replay(self, delivery_id: str, *, by: str, channel: str) -> dict[str, Any]:
        """Queue a dead letter again under its own id."""
        if not self.queue.replay(delivery_id):
            self._refuse_not_dead(delivery_id, "replay")
        self._audit(by, "replay", delivery_id, "", channel)
        return {"replayed": delivery_id, "by": by}

    def purge(self, delivery_id: str, *, by: str, channel: str) -> dict[str, Any]:
        """Forget a dead letter for good (callers ask for confirmation first)."""
        if not self.queue.purge([delivery_id]):
            self._refuse_not_dead(delivery_id, "purge")
        self._audit(by, "purge", delivery_id, "", channel)
        return {"purged": delivery_id, "by": by}

    def _refuse_not_dead(self, delivery_id: str, what: str) -> None:
        delivery = self.queue.load(delivery_id)
        if delivery is None:
            raise ActionRefused(f"no delivery {delivery_id!r} to {what}", 404)
        raise ActionRefused(
            f"delivery {delivery_id} is {delivery.status}, not dead: only a dead letter can be "
            f"{what}d",
            409,
        )

    def force(
        self,
        action: ForceAction,
        name: str,
        key: str | None,
        *,
        reason: str,
        by: str,
        expires_in_s: float | None,
        channel: str,
    ) -> dict[str, Any]:
        """Force a breaker open or closed, in its history under `by`, until cleared or expiry."""
        write = self.breakers.force_open if action == "open" else self.breakers.force_close
        try:
            result = write(name, key, reason=reason, by=by, expires_in=expires_in_s)
        except ValueError as exc:
            raise ActionRefused(str(exc), 422) from exc
        detail = reason + (f" (for {expires_in_s:g}s)" if expires_in_s else "")
        self._audit(by, f"force_{action}", BreakerKeys.member(name, key), detail, channel)
        return result.to_dict()

    def clear(
        self, name: str, key: str | None, *, reason: str, by: str, channel: str
    ) -> dict[str, Any]:
        """End a person's override; the breaker follows its monitor again."""
        try:
            result = self.breakers.clear_override(name, key, reason=reason, by=by)
        except ValueError as exc:
            raise ActionRefused(str(exc), 422) from exc
        self._audit(by, "clear", BreakerKeys.member(name, key), reason, channel)
        return result.to_dict()

    def _audit(self, by: str, action: str, target: str, reason: str, channel: str) -> None:
        self.redis.xadd(
            self.keys.audit,
            {
                "at_ms": self.clock(),
                "by": by,
                "action": action,
                "target": target,
                "reason": reason,
                "channel": channel,
            },
            maxlen=AUDIT_MAX,
            approximate=True,
        )

    def audit(
        self, *, target: str | None = None, limit: int = DEFAULT_LIMIT
    ) -> list[dict[str, Any]]:
        """What people did, newest first (only what concerns `target`, when given)."""
        count = AUDIT_MAX if target else limit
        rows = cast(
            list[tuple[str, dict[str, str]]], self.redis.xrevrange(self.keys.audit, count=count)
        )
        found = []
        for entry_id, fields in rows:
            if target is not None and fields.get("target") != target:
                continue
            found.append(masked({"id": entry_id, **fields, "at_ms": int(fields.get("at_ms") or 0)}))
            if len(found) >= limit:
                break
        return found


# Not closed first: what is refusing calls, then what is held by a person, then ramps.
_STATE_ORDER = {"open": 0, "forced_open": 1, "recovering": 2, "forced_closed": 3, "closed": 4}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _datadog_summary(workers: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    reports = [w["datadog"] for w in workers if w["alive"] and w["datadog"] is not None]
    if not reports:
        return {"status": "unknown", "detail": "no live worker has reported Datadog API health"}
    problems = sorted({p for r in reports for p in r["problems"]})
    if not any(r["enabled"] for r in reports):
        return {
            "status": "disabled",
            "detail": "no Datadog keys: callbacks carry only what the notification says",
            "problems": problems,
        }
    healthy = all(r["ok"] for r in reports) and not problems
    return {
        "status": "ok" if healthy else "degraded",
        "detail": "; ".join(problems) if problems else "reads monitors and events",
        "problems": problems,
    }


def _problems(
    alive: list[dict[str, Any]],
    queue: Mapping[str, Any],
    datadog: Mapping[str, Any],
    reconciler: Mapping[str, Any],
) -> list[dict[str, str]]:
    """What needs a person, most urgent first, in plain words."""
    found = []
    if not alive:
        found.append(
            {
                "severity": "critical",
                "text": "No worker has sent a heartbeat recently: nothing is being delivered",
            }
        )
    if queue["dead"]:
        found.append(
            {
                "severity": "critical",
                "text": f"{_count(queue['dead'], 'dead letter')} waiting for a person to "
                "replay or purge",
            }
        )
    age = queue.get("oldest_age_ms")
    if age is not None and age > QUEUE_AGE_WARN_MS:
        found.append(
            {
                "severity": "warning",
                "text": f"The oldest delivery has waited {age // 1000}s to be sent",
            }
        )
    if datadog["status"] == "degraded":
        found.append({"severity": "warning", "text": f"Datadog API: {datadog['detail']}"})
    if reconciler.get("status") == "stale":
        found.append(
            {
                "severity": "warning",
                "text": "The reconciler has not completed a cycle recently"
                + (f": {reconciler['last_error']}" if reconciler.get("last_error") else ""),
            }
        )
    return found
