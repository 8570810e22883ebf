"""The reconciler: what callbacks were told, corrections, deleted monitors, leadership, heartbeat.

Real Redis throughout; the end-to-end tests run a real worker against the stub Datadog API over
HTTP and apply what the callback receives with the real client library.
"""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest
from breaker_client import Breakers, apply_callback, parse_callback_body

from router.callback_body import build_callback_body
from router.datadog_stub.harness import StubServer
from router.enrich import MonitorRead
from router.enrich.snapshot import MonitorSnapshot
from router.keys import RouterKeys
from router.model import Enrichment, MonitorGroup
from router.parsing.datadog import parse_datadog_webhook
from router.queue import DeliveryQueue, now_ms
from router.reconcile import (
    Reconciler,
    ReconcilerLoop,
    Told,
    ToldBook,
    differences,
    lease_ttl_s,
    reconciler_health,
)
from tests.conftest import free_port
from tests.payloads import custom_payload
from tests.support import process, router_command, router_env, running_receiver, wait_for
from tests.test_worker import running_worker, verify

MONITOR_ID = "155844758"
GROUP = "bank_code:0001,env:prod"
OTHER = "bank_code:0002,env:prod"
URL = "http://127.0.0.1:9/breaker/callback"
MESSAGE = (
    "{{#is_alert}}circuit-breaker-callback: " + URL + "{{/is_alert}}\n"
    "{{#is_alert_recovery}}circuit-breaker-callback: " + URL + "{{/is_alert_recovery}}"
)
T0 = 1_795_350_000_000


def snapshot(
    groups: dict[str, tuple[str, int]], *, message: str | None = MESSAGE
) -> MonitorSnapshot:
    """A read: each group's status and when it became true (ms, whole seconds as Datadog)."""
    return MonitorSnapshot(
        monitor_id=MONITOR_ID,
        name="Bank charge API errors",
        overall_state="Alert" if any(s == "Alert" for s, _ in groups.values()) else "OK",
        tags=(),
        groups=tuple(
            MonitorGroup(
                name=name,
                status=status,
                tags=tuple(name.split(",")),
                last_triggered_ms=at if status != "OK" else None,
                last_resolved_ms=at if status == "OK" else None,
            )
            for name, (status, at) in sorted(groups.items())
        ),
        fetched_at_ms=now_ms(),
        message=message,
    )


def delivered(queue: DeliveryQueue, transition: str, date_ms: int, read: MonitorSnapshot | None):
    """Enqueue a notification and return (delivery, the body its callback answered 2xx to)."""
    notification = parse_datadog_webhook(
        custom_payload(URL, transition=transition, scope=GROUP, date_ms=str(date_ms),
                       event_id=str(date_ms)),
        keyword="circuit-breaker-callback",
        received_at_ms=date_ms,
    )  # fmt: skip
    [enqueued] = queue.enqueue(notification)
    delivery = queue.load(enqueued.delivery_id)
    assert delivery is not None
    enrichment = Enrichment(status="complete", groups=read.groups) if read else None
    return delivery, build_callback_body(delivery.id, notification, enrichment)


class Reads:
    """A scripted Datadog: what `read_monitor` answers next, and how often it was asked."""

    def __init__(self) -> None:
        self.answer = MonitorRead(problem="not scripted")
        self.calls = 0

    def __call__(self, monitor_id: str) -> MonitorRead:
        self.calls += 1
        return self.answer


@pytest.fixture
def queue(redis, key_prefix) -> DeliveryQueue:
    return DeliveryQueue(redis, RouterKeys(key_prefix), retention_s=60)


def alerts(queue: DeliveryQueue):
    alerts_seen: list[tuple[str, str, dict[str, Any]]] = []

    def sink(kind: str, severity: str, title: str, text: str, **context: str) -> None:
        alerts_seen.append((kind, severity, {"title": title, "text": text, **context}))

    return alerts_seen, sink


# -- what a callback was told ---------------------------------------------------------------


def test_the_told_book_keeps_each_groups_newest_statement(queue):
    book = ToldBook(queue.redis, queue.keys)
    alert, alert_body = delivered(queue, "Triggered", T0, None)
    recovery, recovery_body = delivered(queue, "Recovered", T0 + 60_000, None)
    book.record_delivered(recovery, recovery_body)
    book.record_delivered(alert, alert_body)  # an older alert delivered late changes nothing
    [target] = book.targets()
    assert (target.monitor_id, target.url) == (MONITOR_ID, URL)
    assert book.told(target) == {GROUP: Told("OK", T0 + 60_000)}


def test_a_lost_recovery_is_a_difference_and_a_lagging_read_is_not():
    told = {GROUP: Told("Alert", T0)}
    assert differences(told, snapshot({GROUP: ("OK", T0 + 30_000)})) == [f"{GROUP}: OK, told Alert"]
    # Told of a recovery at T0; a read whose alert is older is behind, not the callback.
    assert differences({GROUP: Told("OK", T0)}, snapshot({GROUP: ("Alert", T0 - 60_000)})) == []
    # Never told of a failing group (its alert was lost): a difference; an OK one is not.
    assert differences({}, snapshot({OTHER: ("Alert", T0), GROUP: ("OK", T0)})) == [
        f"{OTHER}: Alert, never told"
    ]
    # Datadog no longer has a group the callback was told is failing.
    assert differences(told, snapshot({})) == [f"{GROUP}: gone from Datadog, told Alert"]


# -- cycles ---------------------------------------------------------------------------------


def test_a_cycle_queues_one_reconcile_snapshot_for_a_lost_recovery(queue):
    reads = Reads()
    seen, sink = alerts(queue)
    reconciler = Reconciler(queue, reads, keyword="circuit-breaker-callback", alert=sink)
    reconciler.book.record_delivered(*delivered(queue, "Triggered", T0, None))
    reads.answer = MonitorRead(snapshot=snapshot({GROUP: ("OK", T0 + 30_000)}))
    before = queue.depths()["ready"]

    report = reconciler.run_cycle()
    assert (report.monitors, report.corrections, report.complete) == (1, 1, True)
    assert queue.depths()["ready"] == before + 1
    assert [kind for kind, _severity, _ in seen] == ["reconcile_correction"]
    # The same truth again: already queued, not a second delivery.
    assert reconciler.run_cycle().corrections == 0
    assert queue.depths()["ready"] == before + 1


def test_a_deleted_monitor_is_reported_and_kept(queue):
    reads = Reads()
    seen, sink = alerts(queue)
    reconciler = Reconciler(queue, reads, keyword="circuit-breaker-callback", alert=sink)
    reconciler.book.record_delivered(*delivered(queue, "Triggered", T0, None))
    reads.answer = MonitorRead(problem=f"monitor {MONITOR_ID} not found", missing=True)
    report = reconciler.run_cycle()
    assert report.deleted == [MONITOR_ID] and report.complete
    [(kind, severity, context)] = seen
    assert (kind, severity, context["monitor_id"]) == ("monitor_deleted", "warning", MONITOR_ID)
    assert len(reconciler.book.targets()) == 1  # reported, not silently dropped
    status = json.loads(queue.redis.hget(queue.keys.reconcile_status, f"monitor:{MONITOR_ID}"))
    assert status["outcome"] == "deleted"
    assert reconciler.book.forget_monitor(MONITOR_ID) == 1  # `router reconcile forget`
    assert reconciler.book.targets() == []


def test_a_monitor_that_no_longer_names_the_callback_stops_being_reconciled(queue):
    reads = Reads()
    reconciler = Reconciler(queue, reads, keyword="circuit-breaker-callback")
    reconciler.book.record_delivered(*delivered(queue, "Triggered", T0, None))
    other = MESSAGE.replace(URL, "http://127.0.0.1:9/elsewhere")
    reads.answer = MonitorRead(snapshot=snapshot({GROUP: ("OK", T0 + 1000)}, message=other))
    report = reconciler.run_cycle()
    assert (report.forgotten, report.corrections) == (1, 0)
    assert reconciler.book.targets() == []


def test_an_unreadable_monitor_makes_the_cycle_incomplete_and_skips_the_heartbeat(queue):
    reads = Reads()
    reconciler = Reconciler(queue, reads, keyword="circuit-breaker-callback")
    reconciler.book.record_delivered(*delivered(queue, "Triggered", T0, None))
    pings: list[str] = []
    loop = ReconcilerLoop(
        reconciler, name="w", interval_s=60, heartbeat_url="http://hc/ping", ping=pings.append
    )
    reads.answer = MonitorRead(problem="Datadog API unavailable: HTTP 503")
    assert loop.cycle().complete is False
    assert pings == []
    status = queue.redis.hgetall(queue.keys.reconcile_status)
    assert "last_success_ms" not in status and "503" in status["last_error"]
    assert reconciler_health(status)["status"] == "stale"

    reads.answer = MonitorRead(snapshot=snapshot({GROUP: ("Alert", T0)}))
    assert loop.cycle().complete is True
    assert pings == ["http://hc/ping"]
    status = queue.redis.hgetall(queue.keys.reconcile_status)
    assert reconciler_health(status)["status"] == "ok"
    assert queue.stats()["reconcile_runs"] == 2


def test_reconciler_health_turns_stale_after_two_intervals():
    status = {"last_success_ms": "1000000", "last_run_ms": "1000000", "interval_s": "60"}
    assert reconciler_health(status, now=1_000_000 + 119_000)["status"] == "ok"
    assert reconciler_health(status, now=1_000_000 + 121_000)["status"] == "stale"
    assert reconciler_health({})["status"] == "never"


# -- leadership -----------------------------------------------------------------------------


def test_one_leader_at_a_time_and_a_dead_leaders_lease_runs_out(queue):
    reads = Reads()
    reads.answer = MonitorRead(snapshot=snapshot({}))

    def loop(name: str) -> ReconcilerLoop:
        reconciler = Reconciler(queue, reads, keyword="circuit-breaker-callback")
        return ReconcilerLoop(reconciler, name=name, interval_s=2.0)

    first, second = loop("first"), loop("second")
    assert first.turn() is not None and first.leading  # leads, and runs a cycle at once
    assert second.turn() is None and not second.leading
    assert first.turn() is None  # still leading; the next cycle is not due yet
    # `first` dies without a word (SIGKILL): it stops renewing. Within the lease, and so
    # within an interval, `second` takes over.
    assert lease_ttl_s(2.0) <= 2.0
    wait_for(lambda: second.turn() is not None, timeout=lease_ttl_s(2.0) + 2, what="takeover")
    assert second.leading
    assert queue.redis.get(queue.keys.reconcile_leader) == second.name


# -- end to end: a real worker, the stub Datadog API, the client library ---------------------


def test_a_recovery_that_never_arrived_is_repaired_within_two_intervals(
    redis_url, redis, key_prefix
):
    breakers_prefix = f"{key_prefix}:breakers"
    with StubServer() as stub, running_receiver() as receiver, running_receiver() as heartbeat:
        callback = f"{receiver.url}/breaker/callback"
        message = MESSAGE.replace(URL, callback)
        stub.client().define_monitor(MONITOR_ID, groups={GROUP: "Alert"}, message=message)
        with running_worker(
            redis_url,
            key_prefix,
            receiver,
            DD_API_HOST=stub.url,
            DD_API_KEY="k",
            DD_APP_KEY="a",
            ROUTER_RECONCILE_INTERVAL="2s",
            ROUTER_HEARTBEAT_URL=f"{heartbeat.url}/ping/check-uuid",
        ):
            queue = DeliveryQueue(redis, RouterKeys(key_prefix), retention_s=60)
            payload = custom_payload(callback, scope=GROUP, date_ms=str(now_ms() - 2000))
            queue.enqueue(
                parse_datadog_webhook(
                    payload, keyword="circuit-breaker-callback", received_at_ms=now_ms()
                )
            )
            wait_for(lambda: receiver.requests, what="the alert delivered")
            wait_for(lambda: heartbeat.requests, timeout=10, what="a heartbeat after a cycle")
            # The vendor recovers; Datadog's recovery notification is lost on the way.
            stub.client().update_groups(MONITOR_ID, {GROUP: "OK"})
            # Two intervals, plus the few seconds a monitor read is shared for.
            wait_for(lambda: len(receiver.requests) >= 2, timeout=2 * 2 + 5 + 3, what="repair")
            bodies = [verify(r) for r in receiver.requests]
            beats = len(heartbeat.requests)
            wait_for(lambda: len(heartbeat.requests) > beats, timeout=6, what="another beat")
    assert [b["transition"] for b in bodies] == ["alert", "reconcile"]
    assert [(g["name"], g["status"]) for g in bodies[1]["monitor"]["groups"]] == [(GROUP, "OK")]
    assert bodies[1]["enrichment"]["complete"] is True
    assert heartbeat.requests[0].path == "/ping/check-uuid"
    # What a service's callback does with them: the breaker opens, then the repair closes it.
    with Breakers.from_url(redis_url, prefix=breakers_prefix, ramp_window=0) as breakers:
        for body in bodies:
            apply_callback(breakers, parse_callback_body(body), "bank-charge", tag="bank_code")
            if body["transition"] == "alert":
                assert breakers.is_open("bank-charge", "0001")
        assert not breakers.is_open("bank-charge", "0001")


def test_a_killed_leader_is_replaced_by_another_worker_process(
    redis_url, redis, key_prefix, tmp_path
):
    keys = RouterKeys(key_prefix)
    with StubServer() as stub:
        env = router_env(
            redis_url,
            key_prefix,
            DD_API_HOST=stub.url,
            DD_API_KEY="k",
            DD_APP_KEY="a",
            ROUTER_RECONCILE_INTERVAL="2s",
        )
        with (
            process(router_command("worker"), env, log_path=tmp_path / "a.log") as a,
            process(router_command("worker"), env, log_path=tmp_path / "b.log") as b,
        ):
            leader = wait_for(lambda: redis.get(keys.reconcile_leader), timeout=15, what="a leader")
            doomed, survivor = (a, b) if f"-{a.pid}-" in leader else (b, a)
            assert f"-{doomed.pid}-" in leader
            doomed.send_signal(signal.SIGKILL)
            doomed.wait(timeout=5)
            # The lease runs out within an interval and the other worker takes it.
            new_leader = wait_for(
                lambda: (redis.get(keys.reconcile_leader) or "").find(f"-{survivor.pid}-") >= 0,
                timeout=2 + 3,
                what="the surviving worker to lead",
            )
            assert new_leader
            runs = int(redis.hget(keys.stats, "reconcile_runs") or 0)
            wait_for(
                lambda: int(redis.hget(keys.stats, "reconcile_runs") or 0) > runs,
                timeout=2 + 3,
                what="a cycle by the new leader",
            )


def test_readyz_shows_the_reconciler_stale_while_datadog_cannot_be_read(
    redis_url, redis, key_prefix
):
    from router.app import create_app

    queue = DeliveryQueue(redis, RouterKeys(key_prefix), retention_s=60)
    ToldBook(redis, queue.keys).record_delivered(*delivered(queue, "Triggered", T0, None))
    env = router_env(redis_url, key_prefix)
    client = create_app(env).test_client()
    assert client.get("/readyz").json["checks"]["reconciler"]["status"] == "never"
    dead_api = f"http://127.0.0.1:{free_port()}"
    with (
        running_receiver() as heartbeat,
        running_worker(
            redis_url,
            key_prefix,
            DD_API_HOST=dead_api,
            DD_API_KEY="k",
            DD_APP_KEY="a",
            ROUTER_RECONCILE_INTERVAL="1s",
            ROUTER_HEARTBEAT_URL=f"{heartbeat.url}/ping",
        ),
    ):
        wait_for(lambda: queue.stats().get("reconcile_runs", 0) >= 2, what="two cycles")
        answer = client.get("/readyz")
    assert answer.status_code == 200  # notifications are still accepted
    reconciler = answer.json["checks"]["reconciler"]
    assert reconciler["status"] == "stale"
    assert "Datadog API unavailable" in reconciler["last_error"]
    assert heartbeat.requests == []  # the dead man's switch hears nothing


def test_the_cli_lists_what_each_callback_was_told_and_forgets_a_monitor(
    redis_url, redis, key_prefix
):
    from click.testing import CliRunner

    from router.cli import cli

    queue = DeliveryQueue(redis, RouterKeys(key_prefix), retention_s=60)
    ToldBook(redis, queue.keys).record_delivered(*delivered(queue, "Triggered", T0, None))
    env = router_env(redis_url, key_prefix)
    runner = CliRunner()
    shown = runner.invoke(cli, ["reconcile", "status"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "reconciler: never" in shown.output
    assert f"monitor {MONITOR_ID}  {URL}  not yet reconciled" in shown.output
    assert f"told {GROUP}: Alert" in shown.output
    as_json = json.loads(runner.invoke(cli, ["reconcile", "status", "--json"], env=env).output)
    assert as_json["targets"][0]["told"] == {GROUP: "Alert"}

    forgot = runner.invoke(cli, ["reconcile", "forget", MONITOR_ID], env=env)
    assert forgot.exit_code == 0 and "no longer reconciled for 1 callback" in forgot.output
    again = runner.invoke(cli, ["reconcile", "forget", MONITOR_ID], env=env)
    assert again.exit_code == 2 and "router reconcile status" in again.output
