"""Done-when: an Alertmanager firing -> resolved cycle opens and closes a breaker in the example
service, through real processes (gunicorn web, `router worker`, the service) over real HTTP."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.alertmanager_payloads import am_webhook, bank_alert
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


@contextmanager
def router_and_service(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> Iterator[tuple[str, str]]:
    """The router's web and worker and the example service, each a process; (router, service)."""
    port = free_port()
    service = f"http://127.0.0.1:{port}"
    service_env = {
        "PORT": str(port),
        "REDIS_URL": redis_url,
        "ROUTER_SIGNING_SECRET": SIGNING_SECRET,
        "BREAKERS_PREFIX": f"{key_prefix}:breakers",
        # A short ramp, so the recovery ends within the test.
        "BREAKER_RAMP_WINDOW": "0.5",
    }
    env = router_env(redis_url, key_prefix, ROUTER_CALLBACK_ALLOW=f"{service}/breaker/")
    with (
        process(
            [sys.executable, "-m", "services_example"], service_env, log_path=tmp_path / "svc.log"
        ),
        web(env, tmp_path) as router,
        process(router_command("worker"), env, log_path=tmp_path / "worker.log"),
    ):
        wait_http(f"{service}/healthz")
        yield router, service


def test_firing_then_resolved_opens_then_closes_the_banks_breaker(redis_url, key_prefix, tmp_path):
    started = datetime.now(UTC) - timedelta(minutes=1)
    with router_and_service(redis_url, key_prefix, tmp_path) as (router, service):
        callback = f"{service}/breaker/callback"
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


ALERTMANAGER_YML = """
route:
  receiver: breaker-router
  group_by: ['...']
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: breaker-router
    webhook_configs:
      - url: {router}/webhooks/alertmanager
        send_resolved: true
        http_config:
          authorization:
            credentials: {token}
"""


def post_to_alertmanager(
    alertmanager: str, bank_code: str, callback: str, starts_at: datetime, ends_at: datetime
) -> None:
    """What Prometheus sends Alertmanager for the README's rule (`endsAt` past: resolved).

    Prometheus always sends `startsAt` (when the alert became active): without it Alertmanager
    would take `endsAt`, a time in the future while the alert fires."""
    alert = {
        "labels": {"alertname": "BankChargeErrors", "bank_code": bank_code, "env": "prod"},
        "annotations": {
            "summary": f"Bank {bank_code} charge errors above 5%",
            "circuit_breaker_callback": callback,
        },
        "startsAt": rfc3339(starts_at),
        "endsAt": rfc3339(ends_at),
        "generatorURL": "http://prometheus.example.org:9090/graph",
    }
    answer = httpx.post(f"{alertmanager}/api/v2/alerts", json=[alert], timeout=5)
    assert answer.status_code == 200, answer.text


def test_a_real_alertmanager_opens_then_closes_the_banks_breaker(redis_url, key_prefix, tmp_path):
    binary = shutil.which("alertmanager") or shutil.which("prometheus-alertmanager")
    if binary is None:
        pytest.fail(
            "no Alertmanager binary on the PATH: `make test` installs it "
            "(scripts/ensure-test-tools), or apt-get install prometheus-alertmanager",
            pytrace=False,
        )
    with router_and_service(redis_url, key_prefix, tmp_path) as (router, service):
        config = tmp_path / "alertmanager.yml"
        config.write_text(ALERTMANAGER_YML.format(router=router, token=INBOUND_TOKEN))
        port = free_port()
        alertmanager = f"http://127.0.0.1:{port}"
        args = [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # one instance, no gossip port
        ]
        with process(args, {}, log_path=tmp_path / "alertmanager.log"):
            wait_http(f"{alertmanager}/-/ready")
            callback = f"{service}/breaker/callback"
            active = datetime.now(UTC) - timedelta(minutes=1)
            later = datetime.now(UTC) + timedelta(minutes=5)
            post_to_alertmanager(alertmanager, "0001", callback, active, ends_at=later)
            wait_for(
                lambda: charge_status(service, "0001") == 503,
                timeout=20,
                what="Alertmanager's firing webhook to open bank 0001",
            )
            assert charge_status(service, "0002") == 201
            post_to_alertmanager(alertmanager, "0001", callback, active, ends_at=datetime.now(UTC))
            wait_for(
                lambda: breaker_state(service, "0001") == "closed",
                timeout=20,
                what="Alertmanager's resolved webhook to close bank 0001",
            )
