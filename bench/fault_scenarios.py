"""The fault scenarios of `bench/faults.py`, each a function of a `Run` returning a `Result`.

Each starts its own processes (`System`), sends a storm, injects its fault while the storm is
on, waits (bounded) until every accepted delivery is received or dead-lettered, and checks
what a user would notice. Counts are small enough to finish in a minute or two; `quick` runs
are the CI size.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.fault_receiver import CallbackEndpoint
from bench.fault_storm import NO_ANSWER, Account, Storm, account, dead_ids
from bench.fault_system import Child, System
from router.config import DEFAULT_ENRICH_BUDGET_S
from router.datadog_stub import StubClient
from router.demo import datadog_payload
from tests.support import SIGNING_SECRET, router_command, wait_for

# The shortest claim timings the worker accepts (see Settings.claim_idle_floor), so a killed
# worker's deliveries are reclaimed within seconds rather than the default minute.
FAST_RECLAIM = {
    "ROUTER_DELIVERY_TIMEOUT": "2s",
    "ROUTER_ENRICH_BUDGET": "500ms",
    "ROUTER_CLAIM_IDLE": "5s",
}
MONITOR_ID = 7_100_000
# Event ids as Datadog's: 19 digits, above 2^53.
FIRST_EVENT_ID = 7_400_000_000_000_000_000


@dataclass
class Run:
    """One scenario's parameters; `workdir` holds its Redis data and the processes' logs."""

    workdir: Path
    notifications: int
    rate: float
    quick: bool = False


@dataclass
class Result:
    name: str
    accounts: list[tuple[str, Account]]
    checks: list[tuple[str, bool]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(ok for _, ok in self.checks) and all(a.lost == 0 for _, a in self.accounts)

    def check(self, what: str, ok: bool) -> None:
        self.checks.append((what, ok))


def bank_code(index: int) -> str:
    """The `index`-th bank: 0001, 0002, ... (four digits, as the example service expects)."""
    return f"{index % 9999 + 1:04d}"


def bank_scope(index: int) -> str:
    return f"bank_code:{bank_code(index)},env:prod"


class Payloads:
    """Datadog-shaped notifications with unique event ids, all naming one callback URL."""

    def __init__(self, callback: str) -> None:
        self.callback = callback
        self.next_event = FIRST_EVENT_ID + uuid.uuid4().int % 10**12 * 1000

    def one(
        self,
        *,
        transition: str = "Triggered",
        monitor_id: int = MONITOR_ID,
        scope: str = "bank_code:0001,env:prod",
        date_ms: int | None = None,
    ) -> dict[str, Any]:
        self.next_event += 1
        return datadog_payload(
            self.callback,
            event_id=str(self.next_event),
            transition=transition,
            monitor_id=str(monitor_id),
            scope=scope,
            date_ms=date_ms or int(time.time() * 1000),
        )

    def make(
        self,
        count: int,
        *,
        monitor_id: Callable[[int], int] = lambda _: MONITOR_ID,
        scope: Callable[[int], str] = bank_scope,
    ) -> list[dict[str, Any]]:
        """`count` alerts; notification i for monitor `monitor_id(i)`, group `scope(i)`."""
        return [self.one(monitor_id=monitor_id(i), scope=scope(i)) for i in range(count)]


@contextmanager
def callback_endpoint(delay_s: float = 0.0) -> Iterator[CallbackEndpoint]:
    endpoint = CallbackEndpoint(SIGNING_SECRET, delay_s=delay_s)
    endpoint.up()
    try:
        yield endpoint
    finally:
        endpoint.down()


def router(system: System, workers: int = 2, **worker_env: str) -> None:
    system.start_web()
    for _ in range(workers):
        system.start_worker(**worker_env)
    system.wait_workers_ready(workers)


def unique_prefix() -> str:
    return f"faults-{uuid.uuid4().hex[:8]}"


def settle_timeout(run: Run) -> float:
    """How long deliveries may take after the storm: generous, but a run always ends."""
    return 60.0 + run.notifications / 20


# -- workers SIGKILLed three times ---------------------------------------------------------


def pending_by_consumer(system: System) -> dict[str, int]:
    client = system.redis()
    keys = system.queue().keys
    summary = client.xpending(keys.stream, keys.group)
    return {c["name"]: int(c["pending"]) for c in summary.get("consumers") or []}


def held_by(system: System, worker: Child) -> int:
    held = pending_by_consumer(system)
    return next((n for name, n in held.items() if f"-{worker.pid}-" in name), 0)


def busiest_worker(system: System) -> tuple[Child, int]:
    """The live worker holding the most deliveries (waiting up to a second for one to hold
    any): the kill that strands the most."""
    deadline = time.monotonic() + 1.0
    while True:
        counts = [(held_by(system, w), w) for w in system.live_workers()]
        count, worker = max(counts, key=lambda pair: pair[0])
        if count or time.monotonic() > deadline:
            return worker, count
        time.sleep(0.01)


def worker_sigkill(run: Run) -> Result:
    kills: list[str] = []
    with (
        callback_endpoint(delay_s=0.1) as endpoint,
        System(
            run.workdir, prefix=unique_prefix(), callback_allow=endpoint.url, **FAST_RECLAIM
        ) as system,
    ):
        router(system)
        storm = Storm(system.web_url, run.rate)
        payloads = Payloads(f"{endpoint.url}/breaker/callback").make(run.notifications)

        def kill_three_times() -> None:
            for share in (0.25, 0.5, 0.75):
                wait_for(
                    lambda s=share: storm.accepted >= s * run.notifications,  # type: ignore[misc]
                    timeout=120,
                    interval=0.01,
                    what=f"{share:.0%} of the storm accepted",
                )
                victim, count = busiest_worker(system)
                victim.kill()
                kills.append(f"pid {victim.pid} holding {count}")
                system.start_worker()

        started = time.monotonic()
        storm.run(payloads, during=kill_three_times)
        totals = account(
            storm, endpoint, system.queue(), started=started, timeout_s=settle_timeout(run)
        )
        reclaimed = system.queue().stats().get("reclaimed", 0)
    result = Result("worker-sigkill", [("3 SIGKILLs", totals)])
    result.notes.append(f"killed: {'; '.join(kills)}; reclaimed from dead workers: {reclaimed}")
    result.check("three workers were SIGKILLed during the storm", len(kills) == 3)
    result.check(
        "every accepted delivery reached the callback", totals.delivered == totals.accepted
    )
    result.check("no 5xx answer to the sender", not totals.server_errors)
    result.check("every callback was correctly signed", totals.bad_signatures == 0)
    return result


# -- Redis restarted during the storm ------------------------------------------------------


def describe_answers(answers: Counter[int]) -> str:
    named = {("no answer in 15 s" if s == NO_ANSWER else str(s)): n for s, n in answers.items()}
    return ", ".join(f"{status}: {n}" for status, n in sorted(named.items())) or "none"


# A probe that gets no answer counts as a failed probe: a Kubernetes probe gives up after 1 s
# by default; this is generous. /readyz may wait for a thread behind webhooks held for the
# enqueue's retry window (router.inbound), so it may answer only once Redis is back.
READYZ_TIMEOUT_S = 10.0


def redis_kill(run: Run) -> Result:
    """As `redis_restart`, but Redis is SIGKILLed: no shutdown, no final write."""
    return redis_restart(run, kill=True)


def redis_restart(run: Run, *, kill: bool = False) -> Result:
    down_s = 4.0 if run.quick else 8.0
    observed: dict[str, Any] = {}
    with (
        callback_endpoint() as endpoint,
        # A worker waits up to ROUTER_CLAIM_IDLE to write a result Redis could not take; a
        # claim idle that outlasts the outage (the default is a minute) but not by a minute,
        # so a delivery stranded anyway is reclaimed within the run.
        System(
            run.workdir,
            prefix=unique_prefix(),
            callback_allow=endpoint.url,
            **(FAST_RECLAIM | {"ROUTER_CLAIM_IDLE": f"{2 * down_s:g}s"}),
        ) as system,
    ):
        router(system)
        storm = Storm(system.web_url, run.rate)
        payloads = Payloads(f"{endpoint.url}/breaker/callback").make(run.notifications)

        def restart_redis() -> None:
            wait_for(
                lambda: storm.accepted >= run.notifications / 3,
                timeout=120,
                interval=0.01,
                what="a third of the storm accepted",
            )
            system.redis_server.stop(kill=kill)
            went_down = time.monotonic()
            try:
                time.sleep(down_s / 2)
                # On its own thread: /readyz may wait behind webhook requests, the outage not.
                probe = threading.Thread(target=ask_readyz)
                probe.start()
                time.sleep(max(0.0, went_down + down_s - time.monotonic()))
            finally:
                system.redis_server.start()
                observed["window"] = (went_down, time.monotonic())
            probe.join(READYZ_TIMEOUT_S)

        def ask_readyz() -> None:
            asked = time.monotonic()
            try:
                status = httpx.get(f"{system.web_url}/readyz", timeout=READYZ_TIMEOUT_S).status_code
            except httpx.HTTPError:
                status = NO_ANSWER
            observed["readyz"] = (status, time.monotonic() - asked)

        started = time.monotonic()
        storm.run(payloads, during=restart_redis)
        totals = account(
            storm, endpoint, system.queue(), started=started, timeout_s=settle_timeout(run)
        )
    went_down, came_back = observed["window"]
    during = storm.answers_between(went_down, came_back)
    readyz_status, readyz_s = observed.get("readyz", (NO_ANSWER, READYZ_TIMEOUT_S))
    how = "SIGKILL" if kill else "SIGTERM"
    result = Result("redis-kill" if kill else "redis-restart", [(f"Redis {how}", totals)])
    result.notes.append(
        f"Redis down {came_back - went_down:.1f} s ({how}, then started on its AOF); "
        f"answers meanwhile: {describe_answers(during)}; /readyz while down: "
        f"{readyz_status} after {readyz_s:.1f} s"
    )
    result.check("the web answered 503 while Redis was down", during.get(503, 0) > 0)
    result.check("every request answered (no sender timeout)", NO_ANSWER not in storm.answers)
    result.check("never a 500", totals.server_errors.get(500, 0) == 0)
    result.check("only 503s among 5xx answers", set(totals.server_errors) <= {503})
    result.check(
        "every accepted delivery reached the callback", totals.delivered == totals.accepted
    )
    return result


# -- a callback endpoint down for ten minutes (simulated) ----------------------------------

# Time runs 100 times faster: the production retry schedule (5s,30s,2m,10m,30m,1h,2h) and a
# ten-minute outage, both divided by 100.
TIME_SCALE = 100
PRODUCTION_SCHEDULE_SCALED = "50ms,300ms,1200ms,6s,18s,36s,72s"
# Its first three steps only: 2 min 35 s of retrying (1.55 s here), shorter than the outage.
SHORT_SCHEDULE_SCALED = "50ms,300ms,1200ms"
OUTAGE_S = 600 / TIME_SCALE


def callback_outage(run: Run) -> Result:
    result = Result("callback-outage", [])
    with (
        callback_endpoint() as endpoint,
        System(
            run.workdir,
            prefix=unique_prefix(),
            callback_allow=endpoint.url,
            ROUTER_RETRY_SCHEDULE=PRODUCTION_SCHEDULE_SCALED,
        ) as system,
    ):
        router(system)
        payloads = Payloads(f"{endpoint.url}/breaker/callback")
        # 1. The production schedule rides out ten minutes: retried until the endpoint is back.
        rode_out = outage_storm(run, system, endpoint, payloads)
        result.accounts.append(("rides out 10 min", rode_out))
        result.check(
            "production schedule: nothing dead-lettered, all delivered after the outage",
            rode_out.dead == 0 and rode_out.delivered == rode_out.accepted,
        )
        # 2. A schedule shorter than the outage: everything is dead-lettered, then replayed.
        for worker in system.live_workers():
            worker.stop()
        system.settings["ROUTER_RETRY_SCHEDULE"] = SHORT_SCHEDULE_SCALED
        router_workers(system, 2)
        storm = Storm(system.web_url, run.rate)
        endpoint.down()
        started = time.monotonic()
        storm.run(payloads.make(run.notifications))
        queue = system.queue()
        dead_in_outage = account(
            storm, endpoint, queue, started=started, timeout_s=settle_timeout(run)
        )
        time.sleep(max(0.0, started + OUTAGE_S - time.monotonic()))
        endpoint.up()
        replay_started = time.monotonic()
        replay = subprocess.run(
            [*router_command("dlq", "replay", "--all")],
            env={**os.environ, **system.env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        replayed = account(
            storm, endpoint, queue, started=replay_started, timeout_s=settle_timeout(run)
        )
        replay_lines = [line for line in replay.stdout.splitlines() if line.startswith("replayed")]
        result.accounts.append(("outlasts retries", dead_in_outage))
        result.accounts.append(("after dlq replay", replayed))
        result.notes.append(
            f"outage {OUTAGE_S:.0f} s = 10 min at {TIME_SCALE}x; schedules "
            f"{PRODUCTION_SCHEDULE_SCALED} (production /{TIME_SCALE}) and "
            f"{SHORT_SCHEDULE_SCALED} (its first three steps); the endpoint came back after "
            f"{replay_started - started:.0f} s and `router dlq replay --all` replayed "
            f"{len(replay_lines)}"
        )
        result.check(
            "short schedule: every delivery dead-lettered during the outage",
            dead_in_outage.dead == dead_in_outage.accepted,
        )
        result.check("`router dlq replay --all` succeeded", replay.returncode == 0)
        result.check(
            "after the replay: all delivered, dead-letter queue empty",
            replayed.delivered == replayed.accepted and not dead_ids(queue),
        )
    return result


def router_workers(system: System, count: int) -> None:
    before = len(system.live_workers())
    for _ in range(count):
        system.start_worker()
    system.wait_workers_ready(before + count)


def outage_storm(
    run: Run, system: System, endpoint: CallbackEndpoint, payloads: Payloads
) -> Account:
    storm = Storm(system.web_url, run.rate)
    endpoint.down()
    started = time.monotonic()

    def bring_back() -> None:
        time.sleep(OUTAGE_S)
        endpoint.up()

    storm.run(payloads.make(run.notifications), during=bring_back)
    return account(storm, endpoint, system.queue(), started=started, timeout_s=settle_timeout(run))


def latencies(storm: Storm, endpoint: CallbackEndpoint) -> list[float]:
    """Seconds from the 202 to the callback's first receipt, per delivery."""
    return [
        receipt.at - storm.accepted_at[webhook_id]
        for webhook_id, receipt in endpoint.first_receipts().items()
        if webhook_id in storm.accepted_at
    ]


# -- the Datadog API answering 429 and 5xx throughout --------------------------------------

# Every monitor read fails, in turn: rate limited (Datadog's 10 s window) and server errors.
MONITOR_READ_FAULTS = ({"status": 429, "reset_s": 10}, {"status": 500}, {"status": 502},
                       {"status": 503})  # fmt: skip
# Slack on top of the budget for a loaded machine's scheduling: an enrichment held for the
# Datadog API would take a multiple of the budget.
BUDGET_SLACK_S = 0.5
DATADOG_MONITORS = 10
HEALTHY, FAILING = "healthy API", "429/5xx API"
# Each phase its own monitors (the first of ten), so the second cannot use cached reads.
DATADOG_PHASES = ((HEALTHY, MONITOR_ID), (FAILING, MONITOR_ID + 100))
_ENRICHED = re.compile(r"^enrichment \w+ for monitor=(\d+) .* in (\d+\.\d+)s")


def enrichment_seconds(system: System) -> list[tuple[int, float]]:
    """(monitor id, seconds) of every enrichment the workers logged (each attempt's own)."""
    found = []
    for path in system.logs.glob("worker-*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if '"router.enrich.engine"' not in line:
                continue
            match = _ENRICHED.match(json.loads(line).get("message", ""))
            if match:
                found.append((int(match.group(1)), float(match.group(2))))
    return found


def spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"p50 {statistics.median(ordered):.2f} s, p99 {p99:.2f} s, max {ordered[-1]:.2f} s"


def datadog_errors(run: Run) -> Result:
    """Notifications that need the monitor read (and their event, which the API does serve)."""
    result = Result("datadog-errors", [])
    with (
        callback_endpoint() as endpoint,
        System(run.workdir, prefix=unique_prefix(), callback_allow=endpoint.url) as system,
    ):
        stub = system.start_stub()
        # The enricher logs how long each enrichment took at DEBUG; JSON lines parse safely.
        router(system, ROUTER_LOG_LEVEL="DEBUG", ROUTER_LOG_FORMAT="json")
        budget_s = DEFAULT_ENRICH_BUDGET_S
        payloads = Payloads(f"{endpoint.url}/breaker/callback")
        phases: list[tuple[str, int, Storm]] = []
        for phase, first_monitor in DATADOG_PHASES:
            if phase == FAILING:
                faults = [dict(f, path="/api/v1/monitor/") for f in MONITOR_READ_FAULTS]
                # Cycled for longer than the storm lasts, then failing for good.
                stub_control(stub, "/stub/faults", {"faults": faults * 2500})
                stub.add_fault("/api/v1/monitor/", status=503, times=None)
            batch = datadog_storm_payloads(payloads, run.notifications, first_monitor)
            define_in_stub(stub, batch)
            storm = Storm(system.web_url, run.rate)
            started = time.monotonic()
            storm.run(batch)
            totals = account(
                storm, endpoint, system.queue(), started=started, timeout_s=settle_timeout(run)
            )
            result.accounts.append((phase, totals))
            phases.append((phase, first_monitor, storm))
        calls = stub.calls()["paths"]
        enrich_s = enrichment_seconds(system)
    statuses = {}
    receipts = endpoint.first_receipts()
    for phase, first_monitor, storm in phases:
        statuses[phase] = Counter(
            receipts[i].body["enrichment"]["status"] for i in storm.accepted_ids if i in receipts
        )
        took = [t for m, t in enrich_s if first_monitor <= m < first_monitor + DATADOG_MONITORS]
        result.notes.append(
            f"{phase}: enrichment {dict(statuses[phase])}, took {spread(took)} "
            f"(budget {budget_s:g} s); 202 to callback {spread(latencies(storm, endpoint))}"
        )
        if phase == FAILING:
            result.check(
                f"{phase}: every enrichment ended within the budget (+{BUDGET_SLACK_S:g} s)",
                bool(took) and max(took) <= budget_s + BUDGET_SLACK_S,
            )
    monitor_reads = sum(n for path, n in calls.items() if path.startswith("/api/v1/monitor/"))
    result.notes.append(f"monitor reads made in all: {monitor_reads} (the API paused on 429)")
    result.check(f"{HEALTHY}: every delivery enriched completely",
                 set(statuses[HEALTHY]) == {"complete"})  # fmt: skip
    result.check(f"{FAILING}: every delivery went out partial (the event read, not the monitor)",
                 set(statuses[FAILING]) == {"partial"})  # fmt: skip
    return result


def datadog_storm_payloads(
    payloads: Payloads, count: int, first_monitor: int
) -> list[dict[str, Any]]:
    """Payloads without $TAGS, as Datadog's default payload: the router must read the event."""
    batch = payloads.make(count, monitor_id=lambda i: first_monitor + i % DATADOG_MONITORS)
    for payload in batch:
        payload["tags"] = ""
    return batch


def stub_control(stub: StubClient, path: str, body: dict[str, Any]) -> None:
    """A batch request to the stub's control API (StubClient sends one item per call)."""
    httpx.post(f"{stub.url}{path}", json=body, timeout=30).raise_for_status()


def define_in_stub(stub: StubClient, batch: list[dict[str, Any]]) -> None:
    """Each payload's monitor (its groups alerting) and event (readable, with its tags)."""
    groups: dict[str, dict[str, str]] = {}
    for payload in batch:
        groups.setdefault(payload["alert_id"], {})[payload["alert_scope"]] = "Alert"
    stub.define_monitors(
        [{"id": m, "name": f"Bank API errors {m}", "groups": g} for m, g in groups.items()]
    )
    events = [
        {"id": p["id"], "monitor_id": int(p["alert_id"]), "tags": p["alert_scope"].split(",")}
        for p in batch
    ]
    stub_control(stub, "/stub/events", {"events": events})
