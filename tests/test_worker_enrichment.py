"""The worker enriches deliveries through the real Datadog client against the stub API."""

from __future__ import annotations

import time

from router.datadog_stub.harness import StubServer
from tests.conftest import free_port
from tests.support import running_receiver, wait_for
from tests.test_worker import enqueue, running_worker, verify

MONITOR_ID = "155844758"


def test_a_delivery_carries_the_monitor_name_groups_and_tags(redis_url, redis, key_prefix):
    with StubServer() as stub, running_receiver() as receiver:
        stub.client().define_monitor(
            MONITOR_ID,
            name="Bank charge API errors",
            tags=["team:payments"],
            groups={"bank_code:0001,env:prod": "Alert", "bank_code:0002,env:prod": "OK"},
        )
        with running_worker(
            redis_url,
            key_prefix,
            receiver,
            DD_API_HOST=stub.url,
            DD_API_KEY="k",
            DD_APP_KEY="a",
        ):
            enqueue(redis, key_prefix, f"{receiver.url}/cb", monitor_id=MONITOR_ID)
            wait_for(lambda: receiver.requests, what="the callback")
        body = verify(receiver.requests[0])
    assert body["enrichment"] == {"status": "complete", "complete": True, "problems": []}
    assert body["monitor"]["name"] == "Bank charge API errors"
    assert body["monitor"]["tags"] == ["team:payments"]
    groups = {g["name"]: (g["status"], g["tags"]) for g in body["monitor"]["groups"]}
    assert groups == {
        "bank_code:0001,env:prod": ("Alert", ["bank_code:0001", "env:prod"]),
        "bank_code:0002,env:prod": ("OK", ["bank_code:0002", "env:prod"]),
    }


def test_a_dead_datadog_api_still_delivers_within_the_budget(redis_url, redis, key_prefix):
    dead_api = f"http://127.0.0.1:{free_port()}"
    with (
        running_receiver() as receiver,
        running_worker(
            redis_url,
            key_prefix,
            receiver,
            DD_API_HOST=dead_api,
            DD_API_KEY="k",
            DD_APP_KEY="a",
            ROUTER_ENRICH_BUDGET="1s",
        ),
    ):
        started = time.monotonic()
        enqueue(redis, key_prefix, f"{receiver.url}/cb", monitor_id=MONITOR_ID)
        wait_for(lambda: receiver.requests, what="the callback despite a dead Datadog API")
        elapsed = time.monotonic() - started
        body = verify(receiver.requests[0])
    assert body["enrichment"]["complete"] is False
    assert body["enrichment"]["problems"], "the body says why enrichment is missing"
    assert body["monitor"]["id"] == MONITOR_ID  # what the notification held is still there
    assert elapsed < 1.0 + 2.0, f"took {elapsed:.1f}s with a 1s enrichment budget"


def test_readyz_shows_datadog_health_published_by_a_worker(redis_url, redis, key_prefix):
    from router.app import create_app
    from tests.support import router_env

    with StubServer() as stub:
        stub.client().set_keys(["other"], ["other"], status=403)
        with (
            running_receiver() as receiver,
            running_worker(
                redis_url,
                key_prefix,
                receiver,
                DD_API_HOST=stub.url,
                DD_API_KEY="k",
                DD_APP_KEY="a",
            ),
        ):
            enqueue(redis, key_prefix, f"{receiver.url}/cb", monitor_id=MONITOR_ID)
            wait_for(lambda: receiver.requests, what="the callback")
            app = create_app(router_env(redis_url, key_prefix))

            def degraded():
                check = app.test_client().get("/readyz").get_json()["checks"]["datadog"]
                return check if check["status"] == "degraded" else None

            # Workers publish health with their heartbeat (every 5 s).
            check = wait_for(degraded, timeout=12, what="/readyz to report the refused keys")
    assert any("refused" in problem for problem in check["problems"])
