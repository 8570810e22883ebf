"""The stub Datadog API: recorded shapes, spec-shaped group states, keys, limits, faults."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from datadog_api_client import ApiClient, Configuration
from datadog_api_client.v1.api.events_api import EventsApi
from datadog_api_client.v1.api.monitors_api import MonitorsApi

import router
from router.datadog_stub import (
    RECORDED_EVENT_ID,
    RECORDED_MONITOR_ID,
    StubClient,
    StubServer,
    StubState,
    load_fixture,
)
from tests.conftest import free_port

KEYS = {"DD-API-KEY": "api-key", "DD-APPLICATION-KEY": "app-key"}
GROUP_FIELDS = {
    "last_nodata_ts",
    "last_notified_ts",
    "last_resolved_ts",
    "last_triggered_ts",
    "name",
    "status",
}


@pytest.fixture(scope="module")
def server() -> Iterator[StubServer]:
    with StubServer() as running:
        yield running


@pytest.fixture
def stub(server: StubServer) -> StubClient:
    client = server.client()
    client.reset()
    return client


@pytest.fixture
def http(server: StubServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=KEYS, timeout=5) as client:
        yield client


def define_bank_monitor(stub: StubClient) -> None:
    stub.define_monitor(
        42,
        name="Bank API errors",
        tags=["team:payments", "env:prod"],
        groups={
            "bank_code:0001,env:prod": "Alert",
            "bank_code:0002,env:prod": "OK",
            "bank_code:0003,env:prod": "No Data",
        },
    )


def test_monitor_without_group_states_is_the_recorded_body(
    stub: StubClient, http: httpx.Client
) -> None:
    answer = http.get(f"/api/v1/monitor/{RECORDED_MONITOR_ID}", params={"with_downtimes": "true"})
    assert answer.status_code == 200
    assert answer.json() == load_fixture("v1_monitor_get_with_downtimes_200.json")
    assert "state" not in answer.json()


def test_group_states_all_gives_spec_shaped_groups(stub: StubClient, http: httpx.Client) -> None:
    define_bank_monitor(stub)
    body = http.get("/api/v1/monitor/42", params={"group_states": "all"}).json()
    assert body["name"] == "Bank API errors"
    assert body["overall_state"] == "Alert"
    groups = body["state"]["groups"]
    assert set(groups) == {
        "bank_code:0001,env:prod",
        "bank_code:0002,env:prod",
        "bank_code:0003,env:prod",
    }
    for name, group in groups.items():
        assert set(group) == GROUP_FIELDS
        assert group["name"] == name
    assert groups["bank_code:0001,env:prod"]["status"] == "Alert"
    assert groups["bank_code:0001,env:prod"]["last_triggered_ts"] > 1_600_000_000
    assert "state" not in http.get("/api/v1/monitor/42").json()


def test_group_states_filter_and_invalid_filter(stub: StubClient, http: httpx.Client) -> None:
    define_bank_monitor(stub)
    alert = http.get("/api/v1/monitor/42", params={"group_states": "alert,no data"}).json()
    assert set(alert["state"]["groups"]) == {"bank_code:0001,env:prod", "bank_code:0003,env:prod"}
    invalid = http.get("/api/v1/monitor/42", params={"group_states": "notagroupstate"})
    assert invalid.status_code == 400
    assert invalid.json() == load_fixture("v1_monitor_get_400_invalid_group_states.json")


def test_group_changes_move_the_overall_state(stub: StubClient, http: httpx.Client) -> None:
    define_bank_monitor(stub)
    stub.update_groups(42, {"bank_code:0001,env:prod": "OK", "bank_code:0003,env:prod": "OK"})
    assert http.get("/api/v1/monitor/42").json()["overall_state"] == "OK"


def test_unknown_monitor_is_the_recorded_404(stub: StubClient, http: httpx.Client) -> None:
    answer = http.get("/api/v1/monitor/12345")
    assert answer.status_code == 404
    assert answer.json() == load_fixture("v1_monitor_get_404.json")


def test_recorded_event_and_not_yet_indexed_event(stub: StubClient, http: httpx.Client) -> None:
    recorded = http.get(f"/api/v1/events/{RECORDED_EVENT_ID}")
    assert recorded.json() == load_fixture("v1_event_get_200.json")

    stub.define_event(6327818702635911562, tags=["monitor"], monitor_id=42, not_found_calls=2)
    not_yet = load_fixture("v1_event_get_404_not_yet_indexed.json")
    for _ in range(2):
        answer = http.get("/api/v1/events/6327818702635911562")
        assert (answer.status_code, answer.json()) == (404, not_yet)
    event = http.get("/api/v1/events/6327818702635911562").json()["event"]
    # The exact 64-bit id, as a JSON integer and as `id_str`.
    assert '"id": 6327818702635911562' in http.get("/api/v1/events/6327818702635911562").text
    assert event["id_str"] == "6327818702635911562"
    assert event["monitor_id"] == 42


def test_event_readable_after_a_delay() -> None:
    now = [100.0]
    state = StubState(clock=lambda: now[0])
    state.define_event({"id": "7", "readable_after_s": 12})
    assert state.handle("/api/v1/events/7", {}, KEYS).status == 404
    now[0] += 12
    assert state.handle("/api/v1/events/7", {}, KEYS).status == 200


def test_keys_are_required_and_can_be_restricted(stub: StubClient, server: StubServer) -> None:
    missing = httpx.get(f"{server.url}/api/v1/monitor/{RECORDED_MONITOR_ID}")
    assert (missing.status_code, missing.json()) == (403, {"errors": ["Forbidden"]})
    stub.set_keys(["good-api"], ["good-app"], status=401)
    good = {"DD-API-KEY": "good-api", "DD-APPLICATION-KEY": "good-app"}
    bad = {"DD-API-KEY": "good-api", "DD-APPLICATION-KEY": "revoked"}
    url = f"{server.url}/api/v1/monitor/{RECORDED_MONITOR_ID}"
    assert httpx.get(url, headers=good).status_code == 200
    assert httpx.get(url, headers=bad).status_code == 401


def test_rate_limit_headers_on_every_answer_and_limit_enforced(
    stub: StubClient, http: httpx.Client
) -> None:
    stub.set_rate_limit("get_monitors", limit=2, period_s=10)
    first = http.get(f"/api/v1/monitor/{RECORDED_MONITOR_ID}")
    second = http.get("/api/v1/monitor/12345")
    third = http.get(f"/api/v1/monitor/{RECORDED_MONITOR_ID}")
    assert [a.status_code for a in (first, second, third)] == [200, 404, 429]
    assert first.headers["X-Ratelimit-Name"] == "get_monitors"
    assert [a.headers["X-Ratelimit-Remaining"] for a in (first, second, third)] == ["1", "0", "0"]
    for answer in (first, second, third):
        assert answer.headers["X-Ratelimit-Limit"] == "2"
        assert answer.headers["X-Ratelimit-Period"] == "10"
        assert 1 <= int(answer.headers["X-Ratelimit-Reset"]) <= 10
    # Another limit is counted separately.
    assert http.get(f"/api/v1/events/{RECORDED_EVENT_ID}").status_code == 200


def test_scripted_faults(stub: StubClient, http: httpx.Client) -> None:
    define_bank_monitor(stub)
    stub.add_fault("/api/v1/monitor/42", status=429, reset_s=7)
    stub.add_fault("/api/v1/monitor/42", status=503)
    stub.add_fault("/api/v1/monitor/42", sleep_s=0.3)
    limited = http.get("/api/v1/monitor/42")
    assert limited.status_code == 429
    assert limited.headers["X-Ratelimit-Reset"] == "7"
    assert limited.headers["X-Ratelimit-Remaining"] == "0"
    assert "errors" in limited.json()
    # Other paths are untouched while faults wait for theirs.
    assert http.get(f"/api/v1/monitor/{RECORDED_MONITOR_ID}").status_code == 200
    assert http.get("/api/v1/monitor/42").status_code == 503
    started = time.monotonic()
    slow = http.get("/api/v1/monitor/42")
    assert slow.status_code == 200
    assert time.monotonic() - started >= 0.3
    assert http.get("/api/v1/monitor/42").status_code == 200


def test_calls_are_counted_per_path_and_reset(stub: StubClient, http: httpx.Client) -> None:
    for _ in range(3):
        http.get(f"/api/v1/monitor/{RECORDED_MONITOR_ID}")
    http.get("/api/v1/monitor/1")
    assert stub.calls_to(f"/api/v1/monitor/{RECORDED_MONITOR_ID}") == 3
    assert stub.calls_under("/api/v1/monitor/") == 4
    assert stub.calls()["limits"] == {"get_monitors": 4}
    stub.reset()
    assert stub.calls()["total"] == 0


def test_groups_search(stub: StubClient, http: httpx.Client) -> None:
    recorded = http.get("/api/v1/monitor/groups/search").json()
    assert recorded == load_fixture("v1_monitor_groups_search_200.json")
    define_bank_monitor(stub)
    found = http.get("/api/v1/monitor/groups/search", params={"query": "group_status:alert"}).json()
    assert [g["group"] for g in found["groups"]] == ["bank_code:0001,env:prod"]
    assert found["groups"][0]["group_tags"] == ["bank_code:0001", "env:prod"]
    assert found["metadata"]["total_count"] == 1


def test_control_api_rejects_malformed_definitions(server: StubServer) -> None:
    answer = httpx.post(f"{server.url}/stub/monitors", json={"id": "x", "groups": {}})
    assert answer.status_code == 400
    assert "monitor id" in answer.json()["error"]
    answer = httpx.post(f"{server.url}/stub/monitors", json={"id": 1, "groups": {"a:b": "Red"}})
    assert answer.status_code == 400
    assert "status" in answer.json()["error"]


def test_official_client_with_type_checks_accepts_the_shapes(
    stub: StubClient, server: StubServer
) -> None:
    """datadog-api-client's own models (type checks on) validate what the stub serves."""
    define_bank_monitor(stub)
    configuration = Configuration(  # type: ignore[no-untyped-call]
        host=server.url, api_key={"apiKeyAuth": "k", "appKeyAuth": "a"}, request_timeout=5
    )
    with ApiClient(configuration) as client:
        monitor = MonitorsApi(client).get_monitor(42, group_states="all")  # type: ignore[no-untyped-call]
        assert monitor.name == "Bank API errors"
        assert str(monitor.state.groups["bank_code:0001,env:prod"].status) == "Alert"
        event = EventsApi(client).get_event(RECORDED_EVENT_ID)  # type: ignore[no-untyped-call]
        assert event.event.id == RECORDED_EVENT_ID
        groups = MonitorsApi(client).search_monitor_groups(query="group_status:alert")  # type: ignore[no-untyped-call]
        assert groups.groups[0].monitor_id == 42


def test_runs_as_a_module() -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(router.__file__).resolve().parents[1])}
    process = subprocess.Popen(
        [sys.executable, "-m", "router.datadog_stub", "--port", str(port), "--demo"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        assert (
            process.stdout.readline().strip()
            == f"datadog stub listening on http://127.0.0.1:{port}"
        )
        StubClient(f"http://127.0.0.1:{port}").wait_ready()
        answer = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/monitor/{RECORDED_MONITOR_ID}", headers=KEYS
        )
        assert answer.status_code == 200
        demo = httpx.get(f"http://127.0.0.1:{port}/api/v1/monitor/1001", headers=KEYS)
        assert demo.json()["name"] == "Bank charge API errors"
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
