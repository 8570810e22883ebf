"""Screenshots of every dashboard page into docs/ui-*.png, taken in headless Chromium from a whole
system (Redis, Datadog API stub, router web and worker, example service) fed realistic data.

    PYTHONPATH=. .venv/bin/python scripts/screenshots.py [--out docs]

Needs chromium and chromedriver (scripts/ensure-chromium) and, for Redis, a redis-server on
the PATH or fakeredis. Everything it starts is stopped by pid when it ends.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from router.demo import datadog_payload
from router.devserver import embedded_redis, http_ok, new_signing_secret, spawned, wait_until
from router.devserver import web_command as router_web_command
from tests.browser import chromium

TOKEN = "screenshot-inbound-token"
ADMIN = "screenshot-admin-token"
OPERATOR = "Dana (on call)"
BANK_MONITOR = "1001"
GROUPS = {code: f"bank_code:{code},env:prod" for code in ("0001", "0002", "0003")}
# Tall enough for the overview; a longer page is cut here rather than shrunk to unreadable.
MAX_HEIGHT = 2600
WIDTH = 1400


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Seeder:
    """Plays Datadog and an operator: notifications to the router, overrides through the API."""

    def __init__(self, base: str, stub: str, service: str, dead_port: int) -> None:
        self.base, self.stub, self.service, self.dead_port = base, stub, service, dead_port
        self.http = httpx.Client(timeout=10)
        self.event = int(time.time() * 1000) * 1000

    def monitor(self, monitor_id: str, name: str, groups: dict[str, str], callback: str) -> None:
        # The message names the callback, or the reconciler stops reconciling it (rightly).
        message = f"{name}\ncircuit-breaker-callback: {callback}\n@webhook-breaker-router"
        spec = {"id": monitor_id, "name": name, "message": message, "groups": groups}
        self.http.post(
            f"{self.stub}/stub/monitors", json={**spec, "tags": ["team:payments"]}
        ).raise_for_status()

    def notify(
        self, monitor_id: str, name: str, transition: str, scope: str, callback: str
    ) -> None:
        self.event += 1
        payload = datadog_payload(
            callback,
            event_id=str(self.event),
            transition=transition,
            monitor_id=monitor_id,
            scope=scope,
            date_ms=int(time.time() * 1000),
        )
        word = "Recovered" if transition == "Recovered" else "Triggered"
        payload["title"] = f"[{word} on {{{scope}}}] {name}"
        response = self.http.post(
            f"{self.base}/webhooks/datadog",
            json=payload,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        response.raise_for_status()

    def bank(self, transition: str, states: dict[str, str], code: str) -> None:
        name = "Bank charge API errors"
        self.http.post(
            f"{self.stub}/stub/monitors/{BANK_MONITOR}/groups",
            json={GROUPS[c]: s for c, s in states.items()},
        ).raise_for_status()
        self.notify(
            BANK_MONITOR, name, transition, GROUPS[code], f"{self.service}/breaker/callback"
        )

    def act(self, path: str, body: dict[str, Any]) -> None:
        response = self.http.post(
            f"{self.base}/api/{path}",
            json={"by": OPERATOR, **body},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        response.raise_for_status()

    def breaker_state(self, key: str) -> str:
        rows = self.http.get(f"{self.base}/api/breakers?breaker=bank-charge:{key}").json()
        return str(rows["breakers"][0]["state"]) if rows["breakers"] else "none"

    def run(self) -> None:
        bank_callback = f"{self.service}/breaker/callback"
        self.monitor(
            BANK_MONITOR, "Bank charge API errors", dict.fromkeys(GROUPS.values(), "OK"),
            bank_callback,
        )  # fmt: skip
        everything_ok = dict.fromkeys(GROUPS, "OK")
        # Bank 0001 fails, recovers, fails again: a history worth drawing.
        self.bank("Triggered", {**everything_ok, "0001": "Alert"}, "0001")
        wait_until(lambda: self.breaker_state("0001") == "open", "bank-charge 0001 to open")
        time.sleep(2)
        self.bank("Recovered", everything_ok, "0001")
        wait_until(lambda: self.breaker_state("0001") == "recovering", "0001 to ramp")
        time.sleep(3)
        self.bank("Triggered", {**everything_ok, "0001": "Alert"}, "0001")
        wait_until(lambda: self.breaker_state("0001") == "open", "0001 to open again")
        # Bank 0002 alerted and is now ramping back.
        self.bank("Triggered", {**everything_ok, "0001": "Alert", "0002": "Alert"}, "0002")
        wait_until(lambda: self.breaker_state("0002") == "open", "0002 to open")
        time.sleep(1)
        self.bank("Recovered", {**everything_ok, "0001": "Alert"}, "0002")
        wait_until(lambda: self.breaker_state("0002") == "recovering", "0002 to ramp")
        # People steering: the FX vendor held open, a false alarm held closed.
        self.act(
            "breakers/fx-quotes/force-open",
            {"reason": "FX vendor maintenance window, ticket INC-4821", "expires_in": "2h"},
        )
        self.act(
            "breakers/bank-charge/force-close",
            {"key": "0003", "reason": "false alarm: the monitor's threshold is being fixed"},
        )
        # A callback that answers 404 (dead at once) and one whose service is down (retrying).
        cards = f"{self.service}/breaker/cards/callback"
        self.monitor("2002", "Card issuer timeouts", {"issuer:visa": "Alert"}, cards)
        self.notify("2002", "Card issuer timeouts", "Triggered", "issuer:visa", cards)
        payouts = f"http://127.0.0.1:{self.dead_port}/breaker/callback"
        self.monitor("3003", "Payout latency", {"region:eu": "Alert"}, payouts)
        self.notify("3003", "Payout latency", "Triggered", "region:eu", payouts)

        def settled() -> bool:
            dead = self.http.get(f"{self.base}/api/dead-letters").json()["dead_letters"]
            retrying = self.http.get(f"{self.base}/api/deliveries?status=retrying").json()
            return bool(dead) and bool(retrying["deliveries"])

        wait_until(settled, "a dead letter and a retrying delivery")


def shoot(driver: WebDriver, url: str, path: Path) -> None:
    """The whole page (up to MAX_HEIGHT), not just what a window shows."""
    metrics = {"width": WIDTH, "height": 900, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    driver.get(url)
    layout = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    height = int(layout["cssContentSize"]["height"])
    metrics["height"] = min(max(height, 600), MAX_HEIGHT)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    driver.save_screenshot(str(path))
    print(f"wrote {path} ({height} px of page)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs"))
    out = parser.parse_args().out
    python = sys.executable
    with ExitStack() as stack:
        redis_url = stack.enter_context(embedded_redis(stack))
        web, service, stub, dead = (free_port() for _ in range(4))
        base, service_url = f"http://127.0.0.1:{web}", f"http://127.0.0.1:{service}"
        env = {
            "REDIS_URL": redis_url,
            "ROUTER_INBOUND_TOKEN": TOKEN,
            "ROUTER_ADMIN_TOKEN": ADMIN,
            "ROUTER_SIGNING_SECRET": new_signing_secret(),
            "ROUTER_CALLBACK_ALLOW": f"{service_url}/,http://127.0.0.1:{dead}/",
            "ROUTER_RETRY_SCHEDULE": "1s,20m,1h",
            "ROUTER_RECONCILE_INTERVAL": "3s",
            "DD_API_HOST": f"http://127.0.0.1:{stub}",
            "DD_API_KEY": "screenshot-api-key",
            "DD_APP_KEY": "screenshot-app-key",
            "LOG_LEVEL": "WARNING",
        }
        stack.enter_context(
            spawned("stub", [python, "-m", "router.datadog_stub", "--port", str(stub)], env)
        )
        service_env = {**env, "PORT": str(service), "BREAKER_RAMP_WINDOW": "900"}
        stack.enter_context(spawned("service", [python, "-m", "services_example"], service_env))
        stack.enter_context(spawned("web", router_web_command(web), env))
        stack.enter_context(spawned("worker", [python, "-m", "router", "worker"], env))
        wait_until(http_ok(f"{env['DD_API_HOST']}/stub/health"), "the Datadog API stub")
        wait_until(http_ok(f"{base}/readyz"), "the router web")
        wait_until(http_ok(f"{service_url}/healthz"), "the example service")
        Seeder(base, env["DD_API_HOST"], service_url, dead).run()
        time.sleep(4)  # a reconcile cycle and a heartbeat carrying Datadog's health
        driver = stack.enter_context(chromium())
        out.mkdir(parents=True, exist_ok=True)
        shoot(driver, f"{base}/ui/login", out / "ui-login.png")
        driver.find_element(By.NAME, "name").send_keys(OPERATOR)
        driver.find_element(By.NAME, "token").send_keys(ADMIN)
        driver.find_element(By.CSS_SELECTOR, "form.stack button").click()
        dead_id = httpx.get(f"{base}/api/dead-letters").json()["dead_letters"][0]["id"]
        pages = {
            "overview": "/ui",
            "breakers": "/ui/breakers",
            "breaker": "/ui/breakers/bank-charge?key=0001",
            "deliveries": "/ui/deliveries",
            "delivery": f"/ui/deliveries/{dead_id}",
            "dead-letters": "/ui/dead-letters",
            "purge": f"/ui/dead-letters/{dead_id}/purge",
            "monitors": "/ui/monitors",
            "health": "/ui/health",
        }
        for name, path in pages.items():
            shoot(driver, f"{base}{path}", out / f"ui-{name}.png")


if __name__ == "__main__":
    main()
