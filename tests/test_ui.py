"""The dashboard's pages through the Flask test client: read-only without the token, refusals
(sign-in, CSRF), confirmation before a purge, escaping of what senders wrote, masked secrets."""

from __future__ import annotations

import pytest
from breaker_client import HistoryEntry

from router.app import create_app
from router.ui.data import timeline
from tests.dashboard_support import (
    ADMIN_TOKEN,
    HOSTILE_TITLE,
    SECRET_URL,
    breakers_for,
    csrf_of,
    dashboard_env,
    make_dead_letter,
    notification,
    queue_for,
    sign_in,
)

CALLBACK = "http://127.0.0.1:9/breaker/callback"


@pytest.fixture
def app(redis_url, key_prefix):
    return create_app(dashboard_env(redis_url, key_prefix))


@pytest.fixture
def dead_id(redis, key_prefix):
    return make_dead_letter(queue_for(redis, key_prefix), notification(CALLBACK))


def status_of(redis, key_prefix, delivery_id):
    return redis.hget(f"{key_prefix}:delivery:{delivery_id}", "status")


def test_every_page_renders_with_no_data_and_no_datadog_keys(client):
    for path in ("/ui", "/ui/", "/ui/breakers", "/ui/deliveries", "/ui/dead-letters",
                 "/ui/monitors", "/ui/health", "/ui/login"):  # fmt: skip
        response = client.get(path)
        assert response.status_code == 200, path
    page = client.get("/ui").get_data(as_text=True)
    assert "No worker has sent a heartbeat recently" in page
    assert "Every breaker is closed" in page


def test_without_an_admin_token_the_dashboard_is_read_only(redis_url, key_prefix, redis, dead_id):
    app = create_app(dashboard_env(redis_url, key_prefix, ROUTER_ADMIN_TOKEN=""))
    client = app.test_client()
    page = client.get(f"/ui/deliveries/{dead_id}").get_data(as_text=True)
    assert "Read-only" in page and "Replay" not in page
    refused = client.post(f"/ui/dead-letters/{dead_id}/replay", data={"csrf": "x"})
    assert refused.status_code == 403
    assert "ROUTER_ADMIN_TOKEN is not set" in refused.get_data(as_text=True)
    assert client.post("/ui/login", data={"name": "a", "token": "x"}).status_code == 403
    assert status_of(redis, key_prefix, dead_id) == "dead"


def test_an_action_by_someone_not_signed_in_is_refused(client, redis, key_prefix, dead_id):
    csrf = csrf_of(client, f"/ui/deliveries/{dead_id}")
    refused = client.post(f"/ui/dead-letters/{dead_id}/replay", data={"csrf": csrf})
    assert refused.status_code == 401
    assert "sign in with ROUTER_ADMIN_TOKEN" in refused.get_data(as_text=True)
    assert status_of(redis, key_prefix, dead_id) == "dead"


def test_a_wrong_token_does_not_sign_in(client, redis, key_prefix, dead_id):
    response = sign_in(client, token="not-the-token")
    assert response.status_code == 401
    assert "not the router&#39;s ROUTER_ADMIN_TOKEN" in response.get_data(as_text=True)
    csrf = csrf_of(client)
    assert client.post(f"/ui/dead-letters/{dead_id}/replay", data={"csrf": csrf}).status_code == 401


def test_a_post_without_the_sessions_csrf_token_is_refused(client, redis, key_prefix, dead_id):
    assert sign_in(client).status_code == 303
    for data in ({}, {"csrf": "forged-by-another-site"}):
        refused = client.post(f"/ui/dead-letters/{dead_id}/replay", data=data)
        assert refused.status_code == 400
        assert "came from another site" in refused.get_data(as_text=True)
    assert status_of(redis, key_prefix, dead_id) == "dead"


def test_a_csrf_token_from_before_sign_in_is_not_accepted_after(client, dead_id):
    before = csrf_of(client, "/ui/login")
    sign_in(client)
    assert (
        client.post(f"/ui/dead-letters/{dead_id}/replay", data={"csrf": before}).status_code == 400
    )


def test_replay_by_a_signed_in_person_requeues_and_says_who(client, redis, key_prefix, dead_id):
    sign_in(client, name="Alice Operator")
    response = client.post(f"/ui/dead-letters/{dead_id}/replay", data={"csrf": csrf_of(client)})
    assert response.status_code == 303
    assert status_of(redis, key_prefix, dead_id) == "queued"
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Replayed" in page and "Alice Operator" in page and "replay" in page


def test_purge_asks_for_confirmation_before_it_deletes(client, redis, key_prefix, dead_id):
    sign_in(client)
    csrf = csrf_of(client)
    asked = client.post(f"/ui/dead-letters/{dead_id}/purge", data={"csrf": csrf})
    assert asked.status_code == 303 and asked.headers["Location"].endswith("/purge")
    assert status_of(redis, key_prefix, dead_id) == "dead"
    confirm = client.get(asked.headers["Location"]).get_data(as_text=True)
    assert "cannot be undone" in confirm
    done = client.post(f"/ui/dead-letters/{dead_id}/purge", data={"csrf": csrf, "confirm": "yes"})
    assert done.status_code == 303
    assert status_of(redis, key_prefix, dead_id) is None
    assert client.get(f"/ui/deliveries/{dead_id}").status_code == 404


def test_replaying_what_is_not_dead_says_so(client, redis, key_prefix, dead_id):
    sign_in(client)
    csrf = csrf_of(client)
    client.post(f"/ui/dead-letters/{dead_id}/replay", data={"csrf": csrf})
    again = client.post(f"/ui/dead-letters/{dead_id}/replay", data={"csrf": csrf})
    assert again.status_code == 409
    assert "is queued, not dead" in again.get_data(as_text=True)


def test_force_open_goes_into_the_breaker_history_with_the_stated_name(client, redis, key_prefix):
    sign_in(client, name="Bob on call")
    form = {"csrf": csrf_of(client), "key": "0001", "action": "open",
            "reason": "bank says maintenance", "for": "1h"}  # fmt: skip
    response = client.post("/ui/breakers/bank-charge/force", data=form)
    assert response.status_code == 303
    [entry] = breakers_for(redis, key_prefix).history("bank-charge", "0001")
    assert (entry.action, entry.by, entry.reason) == (
        "force_open",
        "Bob on call",
        "bank says maintenance",
    )
    assert entry.expires_at_ms is not None
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "FORCED OPEN" in page and "Bob on call" in page and "Clear the override" in page
    cleared = client.post(
        "/ui/breakers/bank-charge/clear", data={"csrf": csrf_of(client), "key": "0001"}
    )
    assert cleared.status_code == 303
    assert breakers_for(redis, key_prefix).state("bank-charge", "0001").state == "closed"


def test_the_breaker_page_says_it_is_in_shadow_mode(client, redis, key_prefix):
    breakers = breakers_for(redis, key_prefix)
    breakers.set_shadow("bank-charge", on=True, by="Alice <tuning>")
    breakers.open("bank-charge", reason="alert")
    page = client.get("/ui/breakers/bank-charge").get_data(as_text=True)
    assert "Shadow mode" in page and "Alice &lt;tuning&gt;" in page
    assert "every key of bank-charge too" in page
    assert "Shadow mode" not in client.get("/ui/breakers/ledger").get_data(as_text=True)


def test_a_bad_override_duration_is_refused_naming_it(client):
    sign_in(client)
    form = {"csrf": csrf_of(client), "action": "open", "reason": "r", "for": "soon"}
    refused = client.post("/ui/breakers/bank-charge/force", data=form)
    assert refused.status_code == 422
    assert "for: expected a duration" in refused.get_data(as_text=True)


def test_a_hostile_monitor_title_is_escaped_everywhere(client, redis, key_prefix):
    queue = queue_for(redis, key_prefix)
    dead = make_dead_letter(queue, notification(CALLBACK, title=HOSTILE_TITLE))
    breakers_for(redis, key_prefix).open(
        "bank-charge", "0001", reason=f"alert: {HOSTILE_TITLE}", source="monitor:1 event:2"
    )
    for path in ("/ui", f"/ui/deliveries/{dead}", "/ui/dead-letters", "/ui/deliveries",
                 "/ui/breakers", "/ui/breakers/bank-charge?key=0001", "/ui/monitors"):  # fmt: skip
        page = client.get(path).get_data(as_text=True)
        assert "<script>alert" not in page and "<img src=x" not in page, path
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in client.get("/ui").get_data(
        as_text=True
    )


def test_callback_credentials_are_never_shown(client, redis, key_prefix):
    dead = make_dead_letter(queue_for(redis, key_prefix), notification(SECRET_URL))
    for path in ("/ui", f"/ui/deliveries/{dead}", "/ui/dead-letters", f"/api/deliveries/{dead}",
                 "/api/dead-letters", "/api/deliveries"):  # fmt: skip
        body = client.get(path).get_data(as_text=True)
        assert "hunter2" not in body, path
        assert "https://***@bank.internal/breaker/callback" in body, path


def test_pages_carry_a_strict_content_security_policy(client):
    response = client.get("/ui")
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "Content-Security-Policy" in client.get("/ui/static/ui.css").headers


def test_the_session_cookie_is_scoped_and_not_readable_by_scripts(client):
    sign_in(client)
    cookie = client.get_cookie("router_ui", path="/ui")
    assert cookie is not None
    assert cookie.http_only and cookie.same_site == "Strict"


def test_sign_in_never_redirects_to_another_site(client):
    csrf = csrf_of(client, "/ui/login")
    form = {"csrf": csrf, "name": "a", "token": ADMIN_TOKEN, "next": "https://evil.example/"}
    response = client.post("/ui/login", data=form)
    assert response.headers["Location"] == "/ui"


def test_filters_narrow_breakers_and_deliveries(client, redis, key_prefix):
    queue = queue_for(redis, key_prefix)
    make_dead_letter(
        queue, notification(CALLBACK, title="[Triggered] alpha-monitor", monitor_id="111")
    )
    make_dead_letter(
        queue,
        notification(
            "http://127.0.0.1:9/other", title="[Triggered] beta-monitor", monitor_id="222"
        ),
    )
    breakers = breakers_for(redis, key_prefix)
    breakers.open("bank-charge", "0001", reason="r", source="monitor:111 event:1 delivery:d")
    breakers.open("fx-quotes", reason="r", source="monitor:222 event:2 delivery:e")
    by_monitor = client.get("/ui/dead-letters?monitor=111").get_data(as_text=True)
    assert "alpha-monitor" in by_monitor and "beta-monitor" not in by_monitor
    by_callback = client.get("/ui/deliveries?callback=/other").get_data(as_text=True)
    assert "beta-monitor" in by_callback and "alpha-monitor" not in by_callback
    by_breaker = client.get("/ui?breaker=fx-quotes").get_data(as_text=True)
    assert "beta-monitor" in by_breaker and "alpha-monitor" not in by_breaker
    assert (
        'data-member="fx-quotes"' in by_breaker
        and 'data-member="bank-charge:0001"' not in by_breaker
    )
    assert client.get("/ui/deliveries?monitr=1").status_code == 400


def test_the_timeline_ends_a_ramp_by_itself():
    def entry(t, old, new, action):
        return HistoryEntry(f"{t}-0", t, "b", None, action, old, new, new, "", "", None, False,
                            None, None)  # fmt: skip

    history = [
        entry(200_000, "open", "recovering", "close"),
        entry(100_000, "closed", "open", "open"),
    ]
    drawn = timeline(history, 400_000, ramp_ms=60_000)
    states = [(s["state"], s["start_ms"], s["end_ms"]) for s in drawn["segments"]]
    assert states == [("open", 100_000, 200_000),
                      ("recovering", 200_000, 260_000), ("closed", 260_000, 400_000)]  # fmt: skip
    assert drawn["segments"][-1]["x"] + drawn["segments"][-1]["width"] == 1000
