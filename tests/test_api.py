"""The JSON API under /api/: the dashboard's data for scripts; actions with the bearer token only;
every bad input a 4xx JSON error that names the problem."""

from __future__ import annotations

import pytest

from router.app import create_app
from tests.dashboard_support import (
    ADMIN_TOKEN,
    breakers_for,
    dashboard_env,
    make_dead_letter,
    notification,
    queue_for,
    sign_in,
)

CALLBACK = "http://127.0.0.1:9/breaker/callback"
BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def client(redis_url, key_prefix):
    return create_app(dashboard_env(redis_url, key_prefix)).test_client()


@pytest.fixture
def dead_id(redis, key_prefix):
    return make_dead_letter(queue_for(redis, key_prefix), notification(CALLBACK))


def refused(response, status, words):
    body = response.get_json()
    assert response.status_code == status, body
    assert words in body["error"], body
    assert body["status"] == status


def test_reads_serve_what_the_page_shows(client, redis, key_prefix, dead_id):
    breakers_for(redis, key_prefix).open(
        "bank-charge", "0001", reason="alert: charges failing", source="monitor:155844758 event:7"
    )
    [breaker] = client.get("/api/breakers").get_json()["breakers"]
    assert (breaker["member"], breaker["state"]) == ("bank-charge:0001", "open")
    assert breaker["links"] == {"monitor": "155844758", "event": "7"}
    detail = client.get("/api/breakers/bank-charge?key=0001").get_json()
    assert [e["action"] for e in detail["history"]] == ["open"]
    assert detail["timeline"]["segments"][-1]["state"] == "open"
    [dead] = client.get("/api/dead-letters").get_json()["dead_letters"]
    assert dead["id"] == dead_id and dead["attempts"][0]["status"] == 410
    [delivery] = client.get("/api/deliveries?status=dead").get_json()["deliveries"]
    assert delivery["id"] == dead_id
    assert client.get(f"/api/deliveries/{dead_id}").get_json()["reason"].startswith("permanent")
    health = client.get("/api/health").get_json()
    assert health["queue"]["dead"] == 1 and health["datadog"]["status"] == "unknown"
    [monitor] = client.get("/api/monitors").get_json()["monitors"]
    assert monitor["id"] == "155844758" and monitor["callbacks"] == []


def test_an_action_without_the_bearer_token_is_refused(client, redis, key_prefix, dead_id):
    path = f"/api/dead-letters/{dead_id}/replay"
    refused(client.post(path, json={"by": "a"}), 401, "Authorization: Bearer")
    wrong = {"Authorization": "Bearer nope"}
    refused(client.post(path, json={"by": "a"}, headers=wrong), 401, "not ROUTER_ADMIN_TOKEN")
    basic = {"Authorization": "Basic " + "YTpiCg=="}
    refused(client.post(path, json={"by": "a"}, headers=basic), 401, "Bearer")
    assert redis.hget(f"{key_prefix}:delivery:{dead_id}", "status") == "dead"


def test_the_api_ignores_a_signed_in_dashboard_session(client, redis, key_prefix, dead_id):
    sign_in(client)  # the session cookie is for /ui only, and the API reads no cookie anyway
    client.set_cookie("router_ui", client.get_cookie("router_ui", path="/ui").value, path="/")
    response = client.post(f"/api/dead-letters/{dead_id}/replay", json={"by": "a"})
    refused(response, 401, "Authorization: Bearer")


def test_actions_are_refused_when_no_admin_token_is_configured(redis_url, key_prefix, dead_id):
    app = create_app(dashboard_env(redis_url, key_prefix, ROUTER_ADMIN_TOKEN=""))
    response = app.test_client().post(
        f"/api/dead-letters/{dead_id}/replay", json={"by": "a"}, headers=BEARER
    )
    refused(response, 403, "ROUTER_ADMIN_TOKEN is not set")


def test_replay_then_purge_with_the_token(client, redis, key_prefix, dead_id):
    done = client.post(f"/api/dead-letters/{dead_id}/replay", json={"by": "cron"}, headers=BEARER)
    assert done.get_json() == {"replayed": dead_id, "by": "cron"}
    again = client.post(f"/api/dead-letters/{dead_id}/replay", json={"by": "cron"}, headers=BEARER)
    refused(again, 409, "is queued, not dead")
    [audit] = client.get("/api/audit").get_json()["audit"]
    assert (audit["by"], audit["action"], audit["channel"]) == ("cron", "replay", "api")
    other = make_dead_letter(queue_for(redis, key_prefix), notification(CALLBACK, title="other"))
    path = f"/api/dead-letters/{other}/purge"
    refused(client.post(path, json={"by": "cron"}, headers=BEARER), 400, '"confirm": true')
    refused(
        client.post(path, json={"by": "cron", "confirm": "yes"}, headers=BEARER), 400, "confirm"
    )
    purged = client.post(path, json={"by": "cron", "confirm": True}, headers=BEARER)
    assert purged.get_json() == {"purged": other, "by": "cron"}
    refused(client.get(f"/api/deliveries/{other}"), 404, "no delivery")


def test_force_open_with_expiry_then_clear(client, redis, key_prefix):
    body = {"key": "0001", "reason": "vendor maintenance", "by": "Dana", "expires_in": "30m"}
    forced = client.post("/api/breakers/bank-charge/force-open", json=body, headers=BEARER)
    assert forced.status_code == 200, forced.get_json()
    assert forced.get_json()["new_state"] == "forced_open"
    [entry] = breakers_for(redis, key_prefix).history("bank-charge", "0001")
    assert (entry.by, entry.action) == ("Dana", "force_open")
    cleared = client.post(
        "/api/breakers/bank-charge/clear", json={"key": "0001", "by": "Dana"}, headers=BEARER
    )
    assert cleared.get_json()["new_state"] == "closed"


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/api/deliveries?limit=abc", 400, "limit: expected a whole number from 1 to 500"),
        ("/api/deliveries?limit=0", 400, "limit"),
        ("/api/deliveries?status=lost", 400, "status: expected one of queued"),
        ("/api/deliveries?monitr=1", 400, "unknown query parameter 'monitr'"),
        ("/api/health?x=1", 400, "unknown query parameter 'x'"),
        ("/api/breakers/bad:name", 422, "breaker name must be"),
        ("/api/breakers/never-written", 404, "has ever been written"),
        ("/api/deliveries/dlv_nope", 404, "no delivery 'dlv_nope'"),
        ("/api/nothing-here", 404, ""),
    ],
)
def test_bad_reads_are_4xx_naming_the_problem(client, path, status, words):
    refused(client.get(path), status, words)


@pytest.mark.parametrize(
    ("kwargs", "status", "words"),
    [
        ({"data": "by=a"}, 415, "expected Content-Type: application/json"),
        ({"data": "{not json", "content_type": "application/json"}, 400, "expected a JSON object"),
        ({"json": ["a"]}, 400, "expected a JSON object"),
        ({"json": {"reason": "r"}}, 422, "by: say who you are"),
        ({"json": {"reason": "r", "by": "  "}}, 422, "by: say who you are"),
        ({"json": {"reason": "r", "by": "x" * 81}}, 422, "at most 80 characters"),
        ({"json": {"by": "a"}}, 422, "reason: required"),
        ({"json": {"by": "a", "reason": 5}}, 422, "reason: expected a string"),
        ({"json": {"by": "a", "reason": "r", "expires_in": "soon"}}, 422, "expires_in: expected"),
        ({"json": {"by": "a", "reason": "r", "expires_in": -5}}, 422, "expires_in"),
        ({"json": {"by": "a", "reason": "r", "key": ""}}, 200, ""),
        ({"json": {"by": "a", "reason": "r", "ttl": "1h"}}, 400, "unknown field 'ttl'"),
    ],
)
def test_bad_action_bodies_are_4xx_naming_the_problem(client, kwargs, status, words):
    response = client.post("/api/breakers/fx-quotes/force-open", headers=BEARER, **kwargs)
    if status == 200:
        assert response.status_code == 200, response.get_json()
        return
    refused(response, status, words)


def test_a_malformed_breaker_name_in_an_action_is_422(client):
    body = {"by": "a", "reason": "r"}
    response = client.post("/api/breakers/Bad!name/force-close", json=body, headers=BEARER)
    refused(response, 422, "breaker name must be")


def test_monitors_show_what_each_callback_was_last_told(client, redis, key_prefix):
    from router.reconcile import ToldBook

    queue = queue_for(redis, key_prefix)
    [enqueued] = queue.enqueue(notification(CALLBACK, monitor_id="1001"))
    delivery = queue.load(enqueued.delivery_id)
    body = {
        "transition": "alert",
        "monitor": {"id": "1001"},
        "event": {"time_ms": 1_795_350_000_000},
        "group": {"name": "bank_code:0001,env:prod"},
        "enrichment": {"complete": False},
    }
    ToldBook(redis, queue.keys).record_delivered(delivery, body)
    [monitor] = client.get("/api/monitors").get_json()["monitors"]
    [callback] = monitor["callbacks"]
    assert callback["url"] == CALLBACK
    assert callback["told"] == [
        {"group": "bank_code:0001,env:prod", "status": "Alert", "as_of_ms": 1_795_350_000_000}
    ]
    page = client.get("/ui/monitors").get_data(as_text=True)
    assert "bank_code:0001,env:prod" in page and "No callback has answered" not in page
