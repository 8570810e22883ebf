"""Done-when: an Alertmanager firing -> resolved cycle opens and closes a breaker in the example
service, through real processes (gunicorn web, `router worker`, the service) over real HTTP."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import httpx

from tests.alertmanager_payloads import ZERO_TIME, am_webhook, bank_alert
from tests.conftest import free_port
from tests.support import (
    INBOUND_TOKEN,
    SIGNING_SECRET,
    process,
    router_command,
    router_env,
    wait_for,
    wait_http,
)
from tests.test_processes import web

# Alertmanager's `http_config: {basic_auth: {username: am, password: <token>}}`.
BASIC_AUTH = ("alertmanager", INBOUND_TOKEN)


def rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def charge_status(service: str, bank_code: str) -> int:
    answer = httpx.post(
        f"{service}/charges", json={"bank_code": bank_code, "amount": 100}, timeout=5
    )
    return answer.status_code


def breaker_state(service: str, bank_code: str) -> str | None:
    listed = httpx.get(f"{service}/breakers", timeout=5).json()["breakers"]
    states = [b["state"] for b in listed if b["name"] == "bank-charge" and b["key"] == bank_code]
    return states[0] if states else None


def send(router: str, payload: dict) -> dict:
    answer = httpx.post(
        f"{router}/webhooks/alertmanager", json=payload, auth=BASIC_AUTH, timeout=10
    )
    assert answer.status_code == 202, answer.text
    return answer.json()


def test_firing_then_resolved_opens_then_closes_the_banks_breaker(redis_url, key_prefix, tmp_path):
    port = free_port()
    service = f"http://127.0.0.1:{port}"
    callback = f"{service}/breaker/callback"
    service_env = {
        "PORT": str(port),
        "REDIS_URL": redis_url,
        "ROUTER_SIGNING_SECRET": SIGNING_SECRET,
        "BREAKERS_PREFIX": f"{key_prefix}:breakers",
        # A short ramp, so the recovery ends within the test.
        "BREAKER_RAMP_WINDOW": "0.5",
    }
    env = router_env(redis_url, key_prefix, ROUTER_CALLBACK_ALLOW=f"{service}/breaker/")
    started = datetime.now(UTC) - timedelta(minutes=1)
    with (
        process(
            [sys.executable, "-m", "services_example"], service_env, log_path=tmp_path / "svc.log"
        ),
        web(env, tmp_path) as router,
        process(router_command("worker"), env, log_path=tmp_path / "worker.log"),
    ):
        wait_http(f"{service}/healthz")
        assert charge_status(service, "0001") == 201

        firing = am_webhook(
            bank_alert("0001", callback, starts_at=rfc3339(started)),
            bank_alert("0002", None, starts_at=rfc3339(started)),
        )
        answer = send(router, firing)
        assert [d["alert"] for d in answer["deliveries"]] == ["b4e10001c0ffee00"]
        wait_for(
            lambda: charge_status(service, "0001") == 503, timeout=15, what="bank 0001 refused"
        )
        assert charge_status(service, "0002") == 201  # its alert names no callback

        # Alertmanager's resend while firing (repeat_interval): nothing new is queued.
        resend = send(router, firing)
        assert [d["duplicate"] for d in resend["deliveries"]] == [True]

        resolved = am_webhook(
            bank_alert(
                "0001",
                callback,
                status="resolved",
                starts_at=rfc3339(started),
                ends_at=rfc3339(datetime.now(UTC)),
            )
        )
        assert send(router, resolved)["deliveries"][0]["duplicate"] is False
        wait_for(
            lambda: breaker_state(service, "0001") == "closed",
            timeout=15,
            what="bank 0001's breaker closed after the ramp",
        )
        assert charge_status(service, "0001") == 201
    assert ZERO_TIME in str(firing)  # firing alerts carried Alertmanager's zero endsAt
