"""Issue 12.3, done-when: a Sentinel failover in the middle of a run loses nothing acknowledged.

Real processes: a master, its replica and two sentinels (tests.redis_ha_support), a `router
worker` process, the web app through Flask's test client, a callback receiver over HTTP.
"""

from __future__ import annotations

import os
import signal
import threading
import uuid
from pathlib import Path

from breaker_client import Breakers

from router.app import create_app
from tests.payloads import custom_payload
from tests.redis_ha_support import (
    SentinelSet,
    raw,
    send_until_accepted,
    sentinel_set,
    write_until_done,
)
from tests.support import (
    INBOUND_TOKEN,
    process,
    router_command,
    router_env,
    running_receiver,
    wait_for,
)

AUTH = {"Authorization": f"Bearer {INBOUND_TOKEN}"}
# Accepted by the old master before the failover starts, and by the new one after it ended.
BEFORE_FAILOVER = 10
AFTER_FAILOVER = 10


def failover_in_background(ha: SentinelSet, result: dict[str, int]) -> threading.Thread:
    def run() -> None:
        result["new_master"] = ha.failover()

    thread = threading.Thread(target=run, name="failover", daemon=True)
    thread.start()
    return thread


def test_a_sentinel_failover_mid_run_loses_no_acknowledged_notification(tmp_path: Path):
    prefix = f"ha-{uuid.uuid4().hex[:8]}"
    with sentinel_set(tmp_path) as ha, running_receiver() as receiver:
        old_master = ha.master_port()
        env = router_env(
            ha.url,
            prefix,
            ROUTER_CALLBACK_ALLOW=receiver.url,
            # A 202 only once the replica holds the enqueue: the failover target has it.
            ROUTER_REDIS_WAIT_REPLICAS="1",
            ROUTER_REDIS_WAIT_TIMEOUT="300ms",
            # Short timings, so a delivery a lost acknowledgement left pending is reclaimed soon.
            ROUTER_DELIVERY_TIMEOUT="2s",
            ROUTER_ENRICH_BUDGET="500ms",
            ROUTER_CLAIM_IDLE="5s",
        )
        client = create_app(env).test_client()
        assert client.get("/readyz").status_code == 200  # both replicas connected
        with process(router_command("worker"), env, log_path=tmp_path / "worker.log"):
            acknowledged: set[str] = set()
            refused: list[int] = []
            failover: dict[str, int] = {}
            thread: threading.Thread | None = None
            sent = 0
            # Notifications keep coming before, during and after the failover: the loop runs
            # until the failover is over and AFTER_FAILOVER more were accepted by the new master.
            after = 0
            while after < AFTER_FAILOVER:
                payload = custom_payload(f"{receiver.url}/cb", event_id=f"74111{sent:05d}")
                acknowledged.update(send_until_accepted(client, payload, refused))
                sent += 1
                if sent == BEFORE_FAILOVER:
                    thread = failover_in_background(ha, failover)
                if thread is not None and not thread.is_alive():
                    after += 1
                assert sent < 5000, "the failover did not finish"
            assert failover["new_master"] != old_master
            wait_for(
                lambda: acknowledged <= receiver.webhook_ids(),
                timeout=60,
                what=f"every acknowledged delivery at the receiver (missing: "
                f"{sorted(acknowledged - receiver.webhook_ids())[:5]})",
            )
        assert len(acknowledged) == sent


def test_an_enqueue_no_replica_holds_is_refused_so_the_master_dying_loses_nothing_acknowledged(
    tmp_path: Path,
):
    """The failure WAIT exists for: the master takes a write its replicas never see, then
    dies. Without ROUTER_REDIS_WAIT_REPLICAS that write was already answered 202 and the
    promoted replica lacks it; with it the sender got a 503 and its retry lands on the new
    master."""
    prefix = f"ha-{uuid.uuid4().hex[:8]}"
    with sentinel_set(tmp_path) as ha, running_receiver() as receiver:
        env = router_env(
            ha.url,
            prefix,
            ROUTER_CALLBACK_ALLOW=receiver.url,
            ROUTER_REDIS_WAIT_REPLICAS="1",
            ROUTER_REDIS_WAIT_TIMEOUT="300ms",
        )
        client = create_app(env).test_client()
        master = ha.master_port()
        replicas = [port for port in ha.ports if port != master]
        payload = custom_payload(f"{receiver.url}/cb", event_id="7411100001")
        # Cut the replicas off: frozen, then their links dropped, so nothing written from now
        # on reaches them (a frozen process's kernel would still buffer the stream).
        for port in replicas:
            os.kill(ha.servers[port].pid, signal.SIGSTOP)
        raw(master).client_kill_filter(_type="replica")
        try:
            answer = client.post("/webhooks/datadog", json=payload, headers=AUTH)
            assert answer.status_code == 503, answer.get_data(as_text=True)
            assert "0 of 1 replicas" in answer.get_json()["error"]
        finally:
            ha.servers[master].kill()
            ha.servers[master].wait(timeout=5)
            for port in replicas:
                os.kill(ha.servers[port].pid, signal.SIGCONT)
        # The sender retries (Datadog does on a 5xx) and gets its 202 from the new master.
        ids = send_until_accepted(client, payload, [])
        assert ha.master_port() in replicas
        with process(router_command("worker"), env, log_path=tmp_path / "worker.log"):
            wait_for(lambda: set(ids) <= receiver.webhook_ids(), timeout=30, what="the delivery")


def test_breakers_stay_open_through_a_failover_and_follow_changes_after_it(tmp_path: Path):
    prefix = f"ha-{uuid.uuid4().hex[:8]}"
    with sentinel_set(tmp_path) as ha:
        writer = Breakers.from_url(ha.url, prefix=prefix, sync=False)
        # No periodic resync during the test: only the channel or a reconnect can bring news.
        with Breakers.from_url(ha.url, prefix=prefix, resync_interval=600) as reader:
            writer.open("bank-charge", "0001", reason="bank 0001 down")
            wait_for(lambda: reader.is_open("bank-charge", "0001"), what="the open to arrive")
            # Breaker writes do not WAIT: the test lets the replica catch up first.
            wait_for(ha.in_sync, what="the replica to hold the open")
            old_master = ha.master_port()
            assert ha.failover() != old_master

            assert reader.is_open("bank-charge", "0001")
            fresh = Breakers.from_url(ha.url, prefix=prefix, sync=False)
            assert fresh.state("bank-charge", "0001").state == "open"

            write_until_done(lambda: writer.close("bank-charge", "0001", reason="bank 0001 back"))
            wait_for(
                lambda: not reader.is_open("bank-charge", "0001"),
                timeout=15,
                what="the close after the failover to reach the reader's snapshot",
            )
            write_until_done(lambda: writer.open("bank-charge", "0002", reason="bank 0002 down"))
            wait_for(lambda: reader.is_open("bank-charge", "0002"), timeout=15)
