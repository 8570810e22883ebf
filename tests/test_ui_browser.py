"""The dashboard in headless Chromium against real processes: the router web under gunicorn, a
worker, the example service applying callbacks to its breakers, and a callback receiver."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis as redis_lib
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser import ChromiumMissing, chromium
from tests.conftest import free_port
from tests.dashboard_support import ADMIN_TOKEN
from tests.support import (
    SIGNING_SECRET,
    Receiver,
    process,
    router_command,
    router_env,
    running_receiver,
    wait_for,
    wait_http,
)
from tests.test_processes import post_alert, web

# Each wait is bounded: processes answer in milliseconds, a retry schedule of 100 ms.
WAIT_S = 20


@dataclass
class System:
    base: str
    service: str
    receiver: Receiver
    redis: redis_lib.Redis


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    try:
        with chromium() as driver:
            yield driver
    except ChromiumMissing as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="module")
def system(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    logs = tmp_path_factory.mktemp("ui-browser")
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    service_port = free_port()
    service = f"http://127.0.0.1:{service_port}"
    with running_receiver() as receiver:
        env = router_env(
            redis_url,
            prefix,
            ROUTER_CALLBACK_ALLOW=f"{receiver.url},{service}",
            ROUTER_ADMIN_TOKEN=ADMIN_TOKEN,
            BREAKERS_PREFIX=f"{prefix}:breakers",
        )
        service_env = {
            "REDIS_URL": redis_url,
            "ROUTER_SIGNING_SECRET": SIGNING_SECRET,
            "BREAKERS_PREFIX": f"{prefix}:breakers",
            "PORT": str(service_port),
        }
        with (
            process(
                [sys.executable, "-m", "services_example"],
                service_env,
                log_path=logs / "service.log",
            ),  # fmt: skip
            web(env, Path(logs)) as base,
            process(router_command("worker"), env, log_path=logs / "worker.log"),
        ):
            wait_http(f"{service}/healthz")
            yield System(base, service, receiver, client)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def show(driver: WebDriver, url: str, css: str, *, what: str) -> None:
    """Load `url` until an element matching `css` is on it (bounded)."""

    def present() -> bool:
        driver.get(url)
        return bool(driver.find_elements(By.CSS_SELECTOR, css))

    wait_for(present, timeout=WAIT_S, interval=0.2, what=what)


def text(driver: WebDriver, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def shows(driver: WebDriver, css: str, expected: str, *, timeout: float = 10.0) -> None:
    """Wait (bounded) until the element at `css` holds `expected`: a click's page may still load."""

    def holds() -> bool:
        try:
            return expected in text(driver, css)
        except (NoSuchElementException, StaleElementReferenceException):
            return False

    wait_for(holds, timeout=timeout, what=f"{expected!r} in {css}")


def test_an_alert_opens_a_breaker_that_the_dashboard_lists_with_its_history(browser, system):
    browser.delete_all_cookies()
    sent = post_alert(system.base, f"{system.service}/breaker/callback", event_id="8001")
    assert sent.status_code == 202, sent.text
    card = '.breaker-card[data-member="bank-charge:0001"]'
    show(browser, f"{system.base}/ui", card, what="the open breaker on the overview")
    shown = text(browser, card)
    assert "OPEN" in shown and "bank-charge" in shown and "0001" in shown
    assert "monitor 155844758" in shown  # who opened it: the monitor, event and delivery
    browser.find_element(By.CSS_SELECTOR, f"{card} a.breaker-name").click()
    shows(browser, "h1", "OPEN")
    history = text(browser, "table.history tbody")
    assert "closed → OPEN" in history and "open" in history
    assert browser.find_elements(By.CSS_SELECTOR, "svg.timeline rect.seg-open")
    shows(browser, ".panel", "Sign in")  # read-only until someone signs in


def test_a_dead_letter_is_refused_without_the_token_then_replayed_and_delivered(browser, system):
    browser.delete_all_cookies()
    system.receiver.script = [410]  # a permanent answer: dead-lettered at once, then 200s
    sent = post_alert(system.base, f"{system.receiver.url}/cb", event_id="8002")
    [queued] = sent.json()["deliveries"]
    row = f'a[href="/ui/deliveries/{queued["id"]}"]'
    show(browser, f"{system.base}/ui/dead-letters", row, what="the dead letter on its page")

    # Not signed in: the action is refused and nothing changes.
    browser.find_element(By.CSS_SELECTOR, "[data-testid=replay]").click()
    shows(browser, "h1", "Sign in first")
    shows(browser, "[data-testid=refused]", "read-only")
    api = httpx.get(f"{system.base}/api/deliveries/{queued['id']}", timeout=5).json()
    assert api["status"] == "dead"

    # A wrong token is refused; the right one signs in and comes back to the delivery.
    browser.find_element(By.LINK_TEXT, "Sign in").click()
    sign_in(browser, "Alice Operator", "not-the-token")
    shows(browser, "[data-testid=refused]", "not the router's ROUTER_ADMIN_TOKEN")
    sign_in(browser, "Alice Operator", ADMIN_TOKEN)
    shows(browser, ".flash", "Signed in as Alice Operator")
    assert browser.current_url.endswith(f"/ui/deliveries/{queued['id']}")

    browser.find_element(By.CSS_SELECTOR, "[data-testid=replay]").click()
    shows(browser, ".flash", "Replayed")
    show(browser, browser.current_url, "h1 .status-delivered", what="the replay to be delivered")
    attempts = text(browser, "table.list tbody")
    assert "HTTP 410" in attempts and "HTTP 200" in attempts
    shows(browser, "ul.audit", "Alice Operator replay")
    assert len(system.receiver.requests) == 2


def sign_in(driver: WebDriver, name: str, token: str) -> None:
    field = driver.find_element(By.NAME, "name")
    field.clear()
    field.send_keys(name)
    driver.find_element(By.NAME, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form.stack button").click()
