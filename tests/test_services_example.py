"""The example bank-charge service: router callbacks drive its breakers; charges obey them."""

from __future__ import annotations

import json

import pytest
import redis as redis_lib
from breaker_client import Breakers

from router.callback_body import build_callback_body
from router.delivery import CallbackSender
from router.model import Enrichment, MonitorGroup
from router.parsing.datadog import parse_datadog_webhook
from router.queue import now_ms
from services_example.app import create_app
from tests.payloads import custom_payload
from tests.support import SIGNING_SECRET


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def service(redis_url, key_prefix, clock):
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    breakers = Breakers(client, prefix=key_prefix, clock=clock, ramp_window=60.0, rng=lambda: 0.99)
    assert breakers.wait_ready(5), "the breakers snapshot did not load"
    app = create_app({"ROUTER_SIGNING_SECRET": SIGNING_SECRET}, breakers=breakers)
    yield app.test_client(), app
    breakers.stop()


def callback(client, path="/breaker/callback", *, transition="Triggered", date_ms, enrichment=None):
    payload = custom_payload(
        "http://svc/cb", transition=transition, date_ms=str(date_ms), event_id=str(date_ms)
    )
    notification = parse_datadog_webhook(
        payload, keyword="circuit-breaker-callback", received_at_ms=now_ms()
    )
    delivery_id = f"dlv_{date_ms}"
    body = json.dumps(build_callback_body(delivery_id, notification, enrichment))
    headers = CallbackSender(SIGNING_SECRET, timeout_s=1).signed_headers(delivery_id, body)
    return client.post(path, data=body, headers=headers)


def charge(client, bank_code="0001", amount=100):
    return client.post("/charges", json={"bank_code": bank_code, "amount": amount})


def test_an_alert_opens_only_that_banks_breaker(service, clock):
    client, _app = service
    assert charge(client).status_code == 201
    assert callback(client, date_ms=1_000).status_code == 200
    refused = charge(client)
    assert refused.status_code == 503
    assert refused.get_json()["error"] == "bank 0001 is unavailable: circuit breaker open"
    assert refused.get_json()["breaker"]["key"] == "0001"
    assert charge(client, "0002").status_code == 201


def test_a_recovery_ramps_calls_back_in(service, clock):
    client, app = service
    callback(client, date_ms=1_000)
    assert callback(client, transition="Recovered", date_ms=2_000).status_code == 200
    # rng 0.99: only a call at the very end of the ramp gets through.
    ramping = charge(client)
    assert ramping.status_code == 503
    assert "recovering, letting 10% of calls through" in ramping.get_json()["error"]
    clock.now += 61
    assert charge(client).status_code == 201
    bank, _fx = app.extensions["vendors"]
    assert bank.calls == 1


def test_an_older_event_does_not_reopen_a_recovered_breaker(service, clock):
    client, _app = service
    callback(client, transition="Recovered", date_ms=5_000)
    callback(client, date_ms=4_000)  # a late retry of an older alert
    clock.now += 61
    assert charge(client).status_code == 201


def test_an_enriched_snapshot_sets_every_bank(service):
    client, _app = service
    enrichment = Enrichment(
        status="complete",
        monitor_id="155844758",
        monitor_name="Bank charge API errors",
        overall_state="Alert",
        groups=(
            MonitorGroup("bank_code:0001,env:prod", "Alert", ("bank_code:0001", "env:prod")),
            MonitorGroup("bank_code:0002,env:prod", "Alert", ("bank_code:0002", "env:prod")),
            MonitorGroup("bank_code:0003,env:prod", "OK", ("bank_code:0003", "env:prod")),
        ),
    )
    assert callback(client, date_ms=1_000, enrichment=enrichment).status_code == 200
    assert [charge(client, code).status_code for code in ("0001", "0002", "0003")] == [
        503,
        503,
        201,
    ]


def test_the_keyless_fx_breaker_covers_the_whole_vendor(service):
    client, _app = service
    assert client.post("/quotes", json={}).status_code == 200
    assert callback(client, "/breaker/fx-quotes/callback", date_ms=1_000).status_code == 200
    refused = client.post("/quotes", json={"base": "USD", "quote": "JPY"})
    assert refused.status_code == 503
    assert "the FX vendor is unavailable" in refused.get_json()["error"]
    assert charge(client).status_code == 201  # other breakers untouched


def test_an_unsigned_callback_is_refused(service):
    client, _app = service
    response = client.post("/breaker/callback", json={"transition": "alert"})
    assert response.status_code == 401
    assert charge(client).status_code == 201


@pytest.mark.parametrize(
    "payload, expected",
    [
        ({"bank_code": "1", "amount": 100}, "bank_code"),
        ({"bank_code": 1, "amount": 100}, "bank_code"),
        ({"bank_code": "0001", "amount": -5}, "amount"),
        ({"bank_code": "0001", "amount": True}, "amount"),
    ],
)
def test_bad_charges_are_422(service, payload, expected):
    client, _app = service
    response = client.post("/charges", json=payload)
    assert response.status_code == 422
    assert expected in response.get_json()["error"]


def test_breakers_are_listed(service):
    client, _app = service
    callback(client, date_ms=1_000)
    listed = client.get("/breakers").get_json()["breakers"]
    assert [(b["name"], b["key"], b["state"]) for b in listed] == [("bank-charge", "0001", "open")]


def test_a_whole_vendor_breaker_refuses_every_bank_and_says_so(service):
    client, app = service
    app.extensions["breakers"].force_open("bank-charge", reason="bank network down", by="ops")
    refused = charge(client, "0002")
    assert refused.status_code == 503
    body = refused.get_json()
    assert body["error"] == (
        "bank 0002 is unavailable: circuit breaker forced open for the whole bank-charge vendor"
    )
    assert body["breaker"]["key"] is None
    assert body["breaker"]["reason"] == "forced by ops: bank network down"
