"""The reconciler: a level-triggered repair for every notification that was lost.

Notifications are edges; an edge that never arrives (Datadog dropped a webhook, an SNS
subscription lapsed, a recovery was dead-lettered and purged) would leave a breaker open for
good. So the router remembers, for every (monitor, callback URL) it has delivered to, what that
callback was last told about each group, with the time each status was true (`ToldBook`). One
worker at a time (a Redis lease, `ReconcilerLoop`) reads those monitors from Datadog every
`ROUTER_RECONCILE_INTERVAL`, through the same cached, rate-limited reads as enrichment, and where
Datadog's truth is newer than and different from what a callback was told, queues a `reconcile`
snapshot to it through the normal queue: signed, retried, dead-lettered like any delivery.

A monitor deleted in Datadog is reported (log, notification, `/readyz`), not silently dropped; a
monitor whose message no longer names a callback stops being reconciled for it. After a cycle
in which every monitor could be read, the time is recorded and `ROUTER_HEARTBEAT_URL` pinged,
so a dead man's switch notices a reconciler that stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import redis
from breaker_client.model import STATUS_AFTER

from router.enrich import MonitorRead
from router.enrich.snapshot import MonitorSnapshot, is_id
from router.keys import RouterKeys
from router.model import MonitorGroup, Notification
from router.parsing.callbacks import extract_callback_urls, mask_credentials
from router.parsing.conditionals import LINT_TRANSITIONS, render_for
from router.queue import Delivery, DeliveryQueue, OneTrip, now_ms

log = logging.getLogger(__name__)

# A monitor read may wait this long for Datadog (or its rate-limit reset) within a cycle; a
# read that cannot be made in time makes the cycle incomplete, and it is tried next cycle.
READ_BUDGET_S = 10.0
# How often a worker tries for the lease, and the leader renews it.
LEASE_CHECK_S = 1.0
# The heartbeat GET must not hold the reconciler up when the check-in service is slow.
HEARTBEAT_TIMEOUT_S = 5.0
# /readyz calls the reconciler stale when its last complete cycle is older than this many
# intervals: one missed cycle is a blip, two are a problem.
STALE_AFTER_INTERVALS = 2

_MERGE_TOLD = """
-- KEYS[1]=told hash of one target; ARGV[1]=replace ('1' drops groups not listed), then
-- triples (group, status, version): a group's status is kept only if not older than stored.
local listed = {}
for i = 2, #ARGV, 3 do
  local group, status, version = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  listed[group] = true
  local stored = redis.call('HGET', KEYS[1], group)
  local stored_version = stored and tonumber(string.match(stored, '|(%d+)$')) or nil
  if stored_version == nil or tonumber(version) >= stored_version then
    redis.call('HSET', KEYS[1], group, status .. '|' .. version)
  end
end
if ARGV[1] == '1' then
  for _, group in ipairs(redis.call('HKEYS', KEYS[1])) do
    if not listed[group] then redis.call('HDEL', KEYS[1], group) end
  end
end
"""


class AlertSink(Protocol):
    """Where the reconciler reports what a person should know (Slack, via `router.notify`)."""

    def __call__(self, kind: str, severity: str, title: str, text: str, **context: str) -> None:
        """Report; never raises, never blocks."""


def _no_alerts(kind: str, severity: str, title: str, text: str, **context: str) -> None:
    return None


@dataclass(frozen=True)
class Told:
    """One group's status as a callback was told it, and since when it was true (ms)."""

    status: str
    version: int


@dataclass(frozen=True)
class Target:
    """A (monitor, callback URL) the router has delivered to: what reconciling is about."""

    monitor_id: str
    url: str
    since_ms: int

    @property
    def id(self) -> str:
        digest = hashlib.sha256(f"{self.monitor_id}\n{self.url}".encode()).hexdigest()
        return digest[:20]


def transition_ms(group: MonitorGroup) -> int:
    """When a group's current status became true, as far as Datadog says (0: unknown)."""
    return _since_ms(group.status, group.last_triggered_ms, group.last_resolved_ms)


def _since_ms(status: str, last_triggered_ms: int | None, last_resolved_ms: int | None) -> int:
    if status == "OK":
        return last_resolved_ms or last_triggered_ms or 0
    return last_triggered_ms or last_resolved_ms or 0


class ToldBook:
    """What each callback was last told, per monitor group, in Redis (shared by all workers)."""

    def __init__(self, client: redis.Redis, keys: RouterKeys) -> None:
        self.redis = client
        self.keys = keys
        self._merge = client.register_script(_MERGE_TOLD)

    def _told_key(self, target: Target) -> str:
        return f"{self.keys.reconcile_targets}:{target.id}"

    def record_delivered(self, delivery: Delivery, body: Mapping[str, Any]) -> None:
        """After a callback answered 2xx: remember the target and what its body said."""
        trip = OneTrip(self.redis)
        self.record_into(trip, delivery, body)
        for answer in trip.execute():
            if isinstance(answer, Exception):
                raise answer

    def record_into(self, trip: OneTrip, delivery: Delivery, body: Mapping[str, Any]) -> None:
        """`record_delivered`, added to a round trip the caller sends (with the settle)."""
        monitor = body.get("monitor") or {}
        monitor_id = monitor.get("id")
        if not monitor_id or not is_id(str(monitor_id)):
            # Nothing to read back from Datadog: e.g. an Alertmanager group ("am-..."), whose
            # sender resends the group's truth itself.
            return
        target = Target(str(monitor_id), delivery.url, now_ms())
        trip.pipe.hsetnx(
            self.keys.reconcile_targets,
            self._field(target),
            json.dumps(
                {"monitor_id": target.monitor_id, "url": target.url, "since_ms": target.since_ms}
            ),
        )
        told = self._told_in(body)
        if told:
            replace = body.get("transition") == "reconcile"
            args: list[str | int] = ["1" if replace else "0"]
            for group, (status, version) in told.items():
                args += [group, status, version]
            trip.script(self._merge, [self._told_key(target)], args)

    @staticmethod
    def _told_in(body: Mapping[str, Any]) -> dict[str, tuple[str, int]]:
        """Each group the body states, with the time that statement is true at."""
        event = body.get("event") or {}
        event_ms = int(event.get("time_ms") or 0)
        told: dict[str, tuple[str, int]] = {}
        enrichment = body.get("enrichment") or {}
        if enrichment.get("complete"):
            # Read straight from the body's dicts: a storm's body names every group of its
            # monitor, and a MonitorGroup built per group was a fifth of a worker's CPU.
            for raw in (body.get("monitor") or {}).get("groups") or ():
                status = raw["status"]
                since = _since_ms(status, raw.get("last_triggered_ms"), raw.get("last_resolved_ms"))
                told[raw["name"]] = (status, since)
        status = STATUS_AFTER.get(str(body.get("transition")))
        if status is not None:
            notified = body.get("group")
            # The notification is the authority on its own group at its own time.
            told[notified["name"] if notified else "*"] = (status, event_ms)
        return told

    @staticmethod
    def _field(target: Target) -> str:
        return f"{target.monitor_id} {target.url}"

    def targets(self) -> list[Target]:
        rows = self.redis.hgetall(self.keys.reconcile_targets)
        found = []
        for raw in rows.values():
            data = json.loads(raw)
            found.append(Target(data["monitor_id"], data["url"], int(data["since_ms"])))
        return sorted(found, key=lambda t: (t.monitor_id, t.url))

    def told(self, target: Target) -> dict[str, Told]:
        rows = self.redis.hgetall(self._told_key(target))
        told = {}
        for group, value in rows.items():
            status, _, version = str(value).rpartition("|")
            told[str(group)] = Told(status, int(version or 0))
        return told

    def forget(self, target: Target) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(self.keys.reconcile_targets, self._field(target))
        pipe.delete(self._told_key(target))
        pipe.execute()

    def forget_monitor(self, monitor_id: str) -> int:
        """Stop reconciling every callback of `monitor_id` (e.g. after it was deleted)."""
        targets = [t for t in self.targets() if t.monitor_id == monitor_id]
        for target in targets:
            self.forget(target)
        self.redis.hdel(self.keys.reconcile_status, f"monitor:{monitor_id}")
        return len(targets)

    def monitor_outcomes(self) -> dict[str, dict[str, Any]]:
        """Each monitor's last reconcile outcome (`in_sync`, `corrected`, `deleted`, `unread`)."""
        rows = self.redis.hgetall(self.keys.reconcile_status)
        return {
            str(name).removeprefix("monitor:"): json.loads(value)
            for name, value in rows.items()
            if str(name).startswith("monitor:")
        }


def differences(told: Mapping[str, Told], snapshot: MonitorSnapshot) -> list[str]:
    """Where Datadog's truth is newer than and different from what a callback was told.

    A read that lags what the callback was told (its group changed before the told event)
    is not a difference: the read is behind, not the callback. A group Datadog no longer has
    but the callback was told is failing is one (it would stay open for good)."""
    found = []
    for group in snapshot.groups:
        said = told.get(group.name)
        if said is None:
            if group.status != "OK":
                found.append(f"{group.name}: {group.status}, never told")
            continue
        # Datadog keeps transition times in whole seconds; the told time is in ms.
        if said.status != group.status and transition_ms(group) >= said.version // 1000 * 1000:
            found.append(f"{group.name}: {group.status}, told {said.status}")
    present = {group.name for group in snapshot.groups}
    if not snapshot.groups and "*" in told:
        present.add("*")  # a simple monitor: its one group is the monitor itself
        overall = snapshot.overall_state or "OK"
        said = told["*"]
        if said.status != overall:
            found.append(f"*: {overall}, told {said.status}")
    for name, said in told.items():
        if name not in present and said.status != "OK":
            found.append(f"{name}: gone from Datadog, told {said.status}")
    return found


def names_callback(snapshot: MonitorSnapshot, url: str, keyword: str) -> bool:
    """Does the monitor's message yield `url` for some transition (None: cannot tell: yes)?"""
    if snapshot.message is None:
        return True
    return any(
        url in extract_callback_urls(render_for(snapshot.message, transition), keyword)
        for transition in LINT_TRANSITIONS
    )


def correction(target: Target, snapshot: MonitorSnapshot) -> Notification:
    """The `reconcile` notification for one target: Datadog's truth, as a snapshot."""
    state = "\n".join(
        f"{g.name}={g.status}@{g.last_triggered_ms}/{g.last_resolved_ms}" for g in snapshot.groups
    )
    # The same truth is corrected once (a retry of it is the queue's job); a changed truth,
    # even back to an earlier status, has new transition times and so a new delivery.
    digest = hashlib.sha256(f"{state}\n{snapshot.overall_state}".encode()).hexdigest()[:20]
    return Notification(
        source="reconciler",
        dedup_key=f"reconcile:{target.id}:{digest}",
        transition="reconcile",
        datadog_transition="Reconcile",
        renotification=False,
        title=f"[Reconcile] {snapshot.name or f'monitor {snapshot.monitor_id}'}",
        message="",
        callback_urls=(target.url,),
        received_at_ms=now_ms(),
        monitor_id=snapshot.monitor_id,
        event_time_ms=snapshot.fetched_at_ms,
    )


@dataclass
class CycleReport:
    monitors: int = 0
    corrections: int = 0
    deleted: list[str] = field(default_factory=list)
    forgotten: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every monitor was read (a deleted one counts: Datadog answered)."""
        return not self.problems


class Reconciler:
    """One reconcile cycle over every target; `ReconcilerLoop` decides when and who."""

    def __init__(
        self,
        queue: DeliveryQueue,
        read_monitor: Callable[[str], MonitorRead],
        *,
        keyword: str,
        alert: AlertSink = _no_alerts,
    ) -> None:
        self.queue = queue
        self.book = ToldBook(queue.redis, queue.keys)
        self.read_monitor = read_monitor
        self.keyword = keyword
        self.alert = alert

    def run_cycle(self) -> CycleReport:
        report = CycleReport()
        by_monitor: dict[str, list[Target]] = {}
        for target in self.book.targets():
            by_monitor.setdefault(target.monitor_id, []).append(target)
        for monitor_id, targets in by_monitor.items():
            report.monitors += 1
            read = self.read_monitor(monitor_id)
            if read.missing:
                report.deleted.append(monitor_id)
                self._report_deleted(monitor_id, targets)
                continue
            if read.snapshot is None:
                report.problems.append(f"monitor {monitor_id}: {read.problem}")
                self._set_status(monitor_id, "unread", read.problem or "")
                continue
            corrected = self._reconcile_monitor(read.snapshot, targets, report)
            self._set_status(monitor_id, "corrected" if corrected else "in_sync", "")
        return report

    def _reconcile_monitor(
        self, snapshot: MonitorSnapshot, targets: Iterable[Target], report: CycleReport
    ) -> bool:
        corrected = False
        for target in targets:
            if not names_callback(snapshot, target.url, self.keyword):
                log.info(
                    "monitor=%s no longer names callback %s; no longer reconciled for it",
                    target.monitor_id,
                    mask_credentials(target.url),
                )
                self.book.forget(target)
                report.forgotten += 1
                continue
            found = differences(self.book.told(target), snapshot)
            if not found:
                continue
            [enqueued] = self.queue.enqueue(correction(target, snapshot))
            if not enqueued.created:
                continue  # this very correction is already queued, retrying or dead
            corrected = True
            report.corrections += 1
            summary = "; ".join(found[:5]) + (
                f"; and {len(found) - 5} more" if len(found) > 5 else ""
            )
            log.warning(
                "delivery=%s monitor=%s reconcile: %s differs from Datadog (%s); snapshot queued",
                enqueued.delivery_id,
                target.monitor_id,
                mask_credentials(target.url),
                summary,
            )
            self.alert(
                "reconcile_correction",
                "warning",
                f"Reconciler corrected monitor {target.monitor_id}",
                f"What {mask_credentials(target.url)} was last told differs from Datadog: "
                f"{summary}. A reconcile snapshot is on its way.",
                callback_url=target.url,
                monitor_id=target.monitor_id,
                command=f"router dlq show {enqueued.delivery_id}",
            )
        return corrected

    def _report_deleted(self, monitor_id: str, targets: list[Target]) -> None:
        callbacks = ", ".join(mask_credentials(t.url) for t in targets)
        log.warning(
            "monitor=%s is gone from Datadog; its callbacks (%s) keep what they were last told",
            monitor_id,
            callbacks,
        )
        self._set_status(monitor_id, "deleted", "Datadog answers 404 for this monitor")
        for target in targets:
            self.alert(
                "monitor_deleted",
                "warning",
                f"Monitor {monitor_id} was deleted in Datadog",
                f"{mask_credentials(target.url)} keeps the breaker state it was last told; "
                "check it, then stop reconciling it with `router reconcile forget`.",
                callback_url=target.url,
                monitor_id=monitor_id,
                command=f"router reconcile forget {monitor_id}",
            )

    def _set_status(self, monitor_id: str, outcome: str, detail: str) -> None:
        value = json.dumps({"at_ms": now_ms(), "outcome": outcome, "detail": detail})
        self.queue.redis.hset(self.queue.keys.reconcile_status, f"monitor:{monitor_id}", value)


_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def lease_ttl_s(interval_s: float) -> float:
    """A dead leader's lease runs out within half an interval, so another leads in time."""
    return min(max(interval_s / 2, 2 * LEASE_CHECK_S), 30.0)


class ReconcilerLoop:
    """Runs `Reconciler` cycles in a thread of the worker while this worker holds the lease."""

    def __init__(
        self,
        reconciler: Reconciler,
        *,
        name: str,
        interval_s: float,
        heartbeat_url: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        ping: Callable[[str], None] | None = None,
    ) -> None:
        self.reconciler = reconciler
        self.name = f"{name}-{uuid.uuid4().hex[:6]}"
        self.interval_s = interval_s
        self.heartbeat_url = heartbeat_url
        self._clock = clock
        self._ping = ping or _http_ping
        queue = reconciler.queue
        self._redis, self._keys = queue.redis, queue.keys
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.leading = False
        self._next_cycle = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="reconciler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=READ_BUDGET_S + HEARTBEAT_TIMEOUT_S)
        with suppress(redis.RedisError):  # the lease runs out by itself
            self._release(keys=[self._keys.reconcile_leader], args=[self.name])

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.turn()
            except redis.RedisError as exc:
                log.warning("reconciler: Redis unavailable (%s); trying again", exc)
                self.leading = False
            except Exception:
                log.exception("reconciler: unexpected error; trying again next turn")
            self._stop.wait(LEASE_CHECK_S)

    def turn(self) -> CycleReport | None:
        """Hold or take the lease; run a cycle when one is due. Returns the cycle's report."""
        ttl_ms = int(lease_ttl_s(self.interval_s) * 1000)
        key = self._keys.reconcile_leader
        if self.leading:
            self.leading = bool(self._renew(keys=[key], args=[self.name, ttl_ms]))
        if not self.leading:
            self.leading = bool(self._redis.set(key, self.name, nx=True, px=ttl_ms))
            if self.leading:
                log.info("reconciler: %s leads, every %.0fs", self.name, self.interval_s)
                self._next_cycle = self._clock()
        if not self.leading or self._clock() < self._next_cycle:
            return None
        self._next_cycle = self._clock() + self.interval_s
        return self.cycle()

    def cycle(self) -> CycleReport:
        started = now_ms()
        report = self.reconciler.run_cycle()
        pipe = self._redis.pipeline(transaction=False)
        pipe.hincrby(self._keys.stats, "reconcile_runs", 1)
        if report.corrections:
            pipe.hincrby(self._keys.stats, "reconcile_corrections", report.corrections)
        status: dict[Any, Any] = {  # redis-py wants its own (invariant) key type
            "last_run_ms": started,
            "last_error": "; ".join(report.problems[:3]),
            "interval_s": self.interval_s,
            "leader": self.name,
        }
        if report.complete:
            status["last_success_ms"] = started
        pipe.hset(self._keys.reconcile_status, mapping=status)
        pipe.execute()
        level = logging.INFO if report.complete else logging.WARNING
        log.log(
            level,
            "reconcile cycle: %d monitors, %d corrections, %d deleted%s",
            report.monitors,
            report.corrections,
            len(report.deleted),
            f"; incomplete: {'; '.join(report.problems[:3])}" if report.problems else "",
        )
        if report.complete and self.heartbeat_url:
            try:
                self._ping(self.heartbeat_url)
            except Exception as exc:  # a check-in service is not ours to fail over
                log.warning("reconciler heartbeat to ROUTER_HEARTBEAT_URL failed: %s", exc)
        return report


def _http_ping(url: str) -> None:
    response = httpx.get(url, timeout=HEARTBEAT_TIMEOUT_S, follow_redirects=True)
    response.raise_for_status()


# The fields of `RouterKeys.reconcile_status` that describe the last cycle.
RECONCILE_STATUS_FIELDS = ("last_success_ms", "last_run_ms", "last_error", "interval_s", "leader")


def reconciler_health(status: Mapping[str, str], *, now: int | None = None) -> dict[str, Any]:
    """The reconciler's part of /readyz: when its last complete cycle was, and whether that is
    recent enough (`stale` after two intervals: Datadog unreadable, or no worker leads)."""
    now = now_ms() if now is None else now
    last = int(status["last_success_ms"]) if status.get("last_success_ms") else None
    interval_s = float(status.get("interval_s") or 0) or None
    health: dict[str, Any] = {
        "last_success_ms": last,
        "last_error": status.get("last_error") or None,
        "leader": status.get("leader") or None,
    }
    if last is None:
        health["status"] = "never" if not status.get("last_run_ms") else "stale"
        return health
    age_s = (now - last) / 1000
    health["age_s"] = round(age_s, 1)
    stale = interval_s is not None and age_s > STALE_AFTER_INTERVALS * interval_s
    health["status"] = "stale" if stale else "ok"
    return health
