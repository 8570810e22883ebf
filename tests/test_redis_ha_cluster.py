"""Issue 12.3, done-when: a Cluster run with nothing acknowledged lost.

A real three-master cluster (tests.redis_ha_support), a `router worker` process, the web app
through Flask's test client and a callback receiver; the client library's writes, reads and
change channel on the same cluster.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from breaker_client import Breakers

from router.app import create_app
from router.keys import BreakerKeys, RouterKeys
from tests.payloads import custom_payload
from tests.redis_ha_support import cluster, raw
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

            def delivered() -> set[str]:
                with receiver.lock:
                    return {r.headers["webhook-id"] for r in receiver.requests}

            wait_for(lambda: acknowledged <= delivered(), timeout=30, what="every delivery")
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
