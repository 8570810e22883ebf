"""Issue 12.3, done-when: a Cluster run with nothing acknowledged lost.

A real three-master cluster (tests.redis_ha_support), a `router worker` process, the web app
through Flask's test client and a callback receiver; the client library's writes, reads and
change channel on the same cluster.
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

from breaker_client import Breakers

from router.app import create_app
from router.keys import BreakerKeys, RouterKeys
from tests.payloads import custom_payload
from tests.redis_ha_support import cluster, raw, send_until_accepted, write_until_done
from tests.support import (
    INBOUND_TOKEN,
    process,
    router_command,
    router_env,
    running_receiver,
    wait_for,
)

AUTH = {"Authorization": f"Bearer {INBOUND_TOKEN}"}
NOTIFICATIONS = 30


def test_the_queue_runs_end_to_end_on_a_cluster_and_delivers_every_acknowledged(tmp_path: Path):
    prefix = f"ha-{uuid.uuid4().hex[:8]}"
    with cluster(tmp_path) as nodes, running_receiver() as receiver:
        env = router_env(
            nodes.url,
            prefix,
            ROUTER_CALLBACK_ALLOW=receiver.url,
            BREAKERS_PREFIX=f"{prefix}-breakers",
            ROUTER_ADMIN_TOKEN="admin-token-for-the-cluster-test",
        )
        app = create_app(env)
        assert app.extensions["router.settings"].key_prefix == f"{{{prefix}}}"
        client = app.test_client()
        acknowledged: set[str] = set()
        with process(router_command("worker"), env, log_path=tmp_path / "worker.log"):
            for n in range(NOTIFICATIONS):
                payload = custom_payload(f"{receiver.url}/cb", event_id=f"74122{n:05d}")
                answer = client.post("/webhooks/datadog", json=payload, headers=AUTH)
                assert answer.status_code == 202, answer.get_data(as_text=True)
                acknowledged.update(d["id"] for d in answer.get_json()["deliveries"])

            wait_for(
                lambda: acknowledged <= receiver.webhook_ids(), timeout=30, what="every delivery"
            )
        assert len(acknowledged) == NOTIFICATIONS
        # Every router key shares the prefix's slot: one node holds the whole queue.
        keys = RouterKeys(f"{{{prefix}}}")
        home = nodes.node_of(keys.stream)
        assert {nodes.node_of(k) for k in (keys.stats, keys.delayed, keys.delivery("x"))} == {home}
        assert raw(home).exists(*(keys.delivery(i) for i in acknowledged)) == NOTIFICATIONS
        # Reads that scan or span keys work on a cluster too: health, metrics, the dashboard API.
        assert client.get("/readyz").status_code == 200
        metrics = client.get("/metrics").get_data(as_text=True)
        assert "breaker_router_redis_up 1" in metrics
        api = client.get(
            "/api/deliveries", headers={"Authorization": "Bearer admin-token-for-the-cluster-test"}
        )
        assert api.status_code == 200, api.get_data(as_text=True)
        assert len(api.get_json()["deliveries"]) == NOTIFICATIONS


def test_breakers_write_read_and_follow_the_change_channel_on_a_cluster(tmp_path: Path):
    prefix = f"ha-{uuid.uuid4().hex[:8]}"
    with cluster(tmp_path) as nodes:
        writer = Breakers.from_url(nodes.url, prefix=prefix, sync=False)
        assert writer.keys.prefix == f"{{{prefix}}}"
        with Breakers.from_url(nodes.url, prefix=prefix, resync_interval=600) as reader:
            assert reader.wait_ready(10)
            writer.open("bank-charge", "0001", reason="bank 0001 down")
            # Only the change channel can bring it: no periodic resync during the test.
            wait_for(lambda: reader.is_open("bank-charge", "0001"), timeout=10)
            writer.force_open("bank-charge", reason="vendor maintenance", by="ops")
            wait_for(lambda: reader.is_open("bank-charge", "0002"), timeout=10)
            writer.close("bank-charge", "0001", reason="bank 0001 back")
            writer.clear_override("bank-charge", reason="maintenance over", by="ops")
            wait_for(lambda: not reader.is_open("bank-charge", "0001"), timeout=10)
            assert reader.stats()["messages"] >= 4
            assert [s.key for s in writer.list()] == [None, "0001"]
            assert writer.history("bank-charge", "0001", limit=10)
        keys = BreakerKeys(f"{{{prefix}}}")
        slots = {nodes.node_of(k) for k in (keys.index, keys.revision, keys.record("bank-charge"))}
        assert len(slots) == 1


def test_a_cluster_failover_mid_run_loses_nothing_and_the_reader_follows_it(tmp_path: Path):
    """Three masters with a replica each; the queue's and the breakers' shards fail over while
    notifications arrive. Web (its WAIT on the queue's node meets MOVED and finds the new
    master), worker and client follow the new topology; every 202 is delivered."""
    prefix = f"ha-{uuid.uuid4().hex[:8]}"
    with cluster(tmp_path, replicas=1) as nodes, running_receiver() as receiver:
        env = router_env(
            nodes.url,
            prefix,
            ROUTER_CALLBACK_ALLOW=receiver.url,
            BREAKERS_PREFIX=f"{prefix}-breakers",
            ROUTER_REDIS_WAIT_REPLICAS="1",
            ROUTER_REDIS_WAIT_TIMEOUT="300ms",
            ROUTER_DELIVERY_TIMEOUT="2s",
            ROUTER_ENRICH_BUDGET="500ms",
            ROUTER_CLAIM_IDLE="5s",
        )
        client = create_app(env).test_client()
        queue_key = RouterKeys(f"{{{prefix}}}").stream
        breakers_key = BreakerKeys(f"{{{prefix}-breakers}}").index
        writer = Breakers.from_url(nodes.url, prefix=f"{prefix}-breakers", sync=False)
        with (
            Breakers.from_url(
                nodes.url, prefix=f"{prefix}-breakers", resync_interval=600
            ) as reader,
            process(router_command("worker"), env, log_path=tmp_path / "worker.log"),
        ):
            writer.open("bank-charge", "0001", reason="bank 0001 down")
            wait_for(lambda: reader.is_open("bank-charge", "0001"), timeout=10)
            acknowledged: set[str] = set()
            old_queue_master = nodes.node_of(queue_key)
            for n in range(NOTIFICATIONS):
                payload = custom_payload(f"{receiver.url}/cb", event_id=f"74133{n:05d}")
                acknowledged.update(send_until_accepted(client, payload, []))
                if n == NOTIFICATIONS // 3:
                    nodes.failover(queue_key)
                    if nodes.node_of(breakers_key) != nodes.node_of(queue_key):
                        nodes.failover(breakers_key)
            assert nodes.node_of(queue_key) != old_queue_master

            wait_for(
                lambda: acknowledged <= receiver.webhook_ids(), timeout=40, what="every delivery"
            )
            assert reader.is_open("bank-charge", "0001")
            write_until_done(lambda: writer.close("bank-charge", "0001", reason="bank 0001 back"))
            wait_for(lambda: not reader.is_open("bank-charge", "0001"), timeout=15)
        assert len(acknowledged) == NOTIFICATIONS


def test_a_cluster_enqueue_waits_for_the_replica_of_its_own_shard(tmp_path: Path):
    """WAIT runs on the connection that wrote, to the queue's master: with that master's
    replica cut off the answer is 503, although the other shards' replicas are fine."""
    prefix = f"ha-{uuid.uuid4().hex[:8]}"
    with cluster(tmp_path, replicas=1) as nodes, running_receiver() as receiver:
        env = router_env(
            nodes.url,
            prefix,
            ROUTER_CALLBACK_ALLOW=receiver.url,
            ROUTER_REDIS_WAIT_REPLICAS="1",
            ROUTER_REDIS_WAIT_TIMEOUT="300ms",
        )
        client = create_app(env).test_client()
        first = custom_payload(f"{receiver.url}/cb", event_id="7414400001")
        second = custom_payload(f"{receiver.url}/cb", event_id="7414400002")
        ids = send_until_accepted(client, first, [])
        assert client.get("/readyz").status_code == 200
        master, replica = nodes.shard_of(RouterKeys(f"{{{prefix}}}").stream)[:2]
        os.kill(nodes.servers[replica].pid, signal.SIGSTOP)
        try:
            raw(master).client_kill_filter(_type="replica")
            answer = client.post("/webhooks/datadog", json=second, headers=AUTH)
            assert answer.status_code == 503, answer.get_data(as_text=True)
            assert "0 of 1 replicas" in answer.get_json()["error"]
            assert client.get("/readyz").status_code == 503  # the queue's master has none
        finally:
            os.kill(nodes.servers[replica].pid, signal.SIGCONT)
        ids += send_until_accepted(client, second, [])
        with process(router_command("worker"), env, log_path=tmp_path / "worker.log"):
            wait_for(lambda: set(ids) <= receiver.webhook_ids(), timeout=30, what="both deliveries")
