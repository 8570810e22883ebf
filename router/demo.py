"""`router demo`: an alert, then a recovery, for a sample monitor, against `router dev`.

It plays Datadog: defines the monitor in the Datadog API stub, posts the notifications to
the router as Datadog's webhook would, and shows the example service's breaker for bank
0001 opening, refusing charges, ramping back and closing.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import click
import httpx

DEMO_MONITOR_ID = "1001"
DEMO_MONITOR_NAME = "Bank charge API errors"
DEMO_GROUPS = ("bank_code:0001,env:prod", "bank_code:0002,env:prod")
WAIT_S = 10.0
# Where `router dev` puts its parts when the ports are free.
DEFAULT_ROUTER = "http://127.0.0.1:8000"
DEFAULT_SERVICE = "http://127.0.0.1:8001"
DEFAULT_STUB = "http://127.0.0.1:8002"


def datadog_payload(
    callback_url: str,
    *,
    event_id: str,
    transition: str = "Triggered",
    monitor_id: str = DEMO_MONITOR_ID,
    scope: str = DEMO_GROUPS[0],
    date_ms: int,
) -> dict[str, Any]:
    """The README's recommended webhook payload as Datadog renders it: every value a string."""
    title_word = {"Recovered": "Recovered", "Warn": "Warn"}.get(transition, "Triggered")
    return {
        "id": event_id,
        "alert_id": monitor_id,
        "alert_transition": transition,
        "alert_type": {"Triggered": "error", "Warn": "warning"}.get(transition, "success"),
        "alert_cycle_key": f"{monitor_id}00000",
        "alert_scope": scope,
        "title": f"[{title_word} on {{{scope}}}] {DEMO_MONITOR_NAME}",
        "body": (
            "%%%\nBank charge API error rate is high.\n\n"
            f"circuit-breaker-callback: {callback_url}\n\n"
            "@webhook-breaker-router\n\n"
            f"[[Monitor Status](https://app.datadoghq.com/monitors/{monitor_id}"
            "?group=bank_code%3A0001)]\n%%%"
        ),
        "date": str(date_ms),
        "tags": f"{scope},monitor,team:payments",
        "link": f"https://app.datadoghq.com/event/event?id={event_id}",
        "org_id": "11023",
        "event_type": "query_alert_monitor",
    }


# What `router send-example` sends: the demo monitor's alert or recovery for bank 0001.
EXAMPLE_TRANSITIONS = {"alert": "Triggered", "recovery": "Recovered"}
EXAMPLE_GROUP_STATES = {"alert": "Alert", "recovery": "OK"}


def example_payload(kind: str, callback_url: str, *, now_ms: int) -> dict[str, Any]:
    """`docs/examples/<kind>.json` as of `now_ms`: a fresh event id and the current date, so a
    breaker that holds a newer event (the demo's, an earlier example's) does not ignore it."""
    return datadog_payload(
        callback_url,
        # Unique even for two sends in one millisecond: the router drops a repeated event id.
        event_id=str(now_ms * 1000 + secrets.randbelow(1000)),
        transition=EXAMPLE_TRANSITIONS[kind],
        date_ms=now_ms,
    )


class Demo:
    def __init__(self, router: str, service: str, stub: str, token: str) -> None:
        self.router, self.service, self.stub, self.token = router, service, stub, token
        self.http = httpx.Client(timeout=10)

    def tell_stub(self, path: str, body: dict[str, Any]) -> bool:
        """Set the stub Datadog API's monitor state (its control API); False if it is absent."""
        try:
            return self.http.post(f"{self.stub}{path}", json=body).status_code < 300
        except httpx.HTTPError:
            return False

    def breaker(self, key: str) -> dict[str, Any] | None:
        listed = self.http.get(f"{self.service}/breakers").json()["breakers"]
        return next((b for b in listed if b["name"] == "bank-charge" and b["key"] == key), None)

    def wait_for_state(self, key: str, states: tuple[str, ...], timeout: float) -> float:
        started = time.monotonic()
        while True:
            current = self.breaker(key)
            if current and current["state"] in states:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                shown = current["state"] if current else "not written"
                raise click.ClickException(
                    f"bank-charge {key} is still {shown} after {timeout:.0f}s; "
                    "see the router and service output of `router dev`"
                )
            time.sleep(0.01)

    def notify(self, transition: str, groups: dict[str, str]) -> None:
        if not self.tell_stub(f"/stub/monitors/{DEMO_MONITOR_ID}/groups", groups):
            click.echo("   (no Datadog API stub: the delivery goes out unenriched)")
        now_ms = int(time.time() * 1000)
        payload = datadog_payload(
            f"{self.service}/breaker/callback",
            event_id=str(now_ms * 1000),
            transition=transition,
            date_ms=now_ms,
        )
        self.post(payload)

    def post(self, payload: dict[str, Any]) -> None:
        response = self.http.post(
            f"{self.router}/webhooks/datadog",
            json=payload,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        if response.status_code != 202:
            raise click.ClickException(f"router answered {response.status_code}: {response.text}")
        for delivery in response.json()["deliveries"]:
            click.echo(f"   router: 202, queued {delivery['id']} -> {delivery['url']}")

    def charge(self, bank_code: str) -> None:
        response = self.http.post(
            f"{self.service}/charges", json={"bank_code": bank_code, "amount": 100}
        )
        detail = response.json().get("error") or f"charged ({response.json().get('charge_id')})"
        click.echo(f"   POST /charges bank {bank_code} -> {response.status_code} {detail}")

    def run(self) -> None:
        monitor = {
            "id": DEMO_MONITOR_ID,
            "name": DEMO_MONITOR_NAME,
            "tags": ["team:payments", "service:bank-charge"],
            "groups": dict.fromkeys(DEMO_GROUPS, "OK"),
        }
        if not self.tell_stub("/stub/monitors", monitor):
            click.echo("No Datadog API stub answers; continuing without enrichment.")
        before = self.breaker("0001")
        if before and before["state"] != "closed":
            click.echo(
                f"bank-charge 0001 is already {before['state']} (an earlier alert?): the timing "
                "below says when the router's new alert was applied, not a change of state."
            )
        click.secho("1. Bank 0001's API starts failing: the monitor alerts", bold=True)
        self.notify("Triggered", {DEMO_GROUPS[0]: "Alert", DEMO_GROUPS[1]: "OK"})
        took = self.wait_for_state("0001", ("open",), WAIT_S)
        state = self.breaker("0001") or {}
        click.echo(f"   service: bank-charge 0001 open {took * 1000:.0f} ms after the alert")
        click.echo(f"            reason: {state.get('reason')}")
        self.charge("0001")
        self.charge("0002")

        click.secho("2. Bank 0001 recovers: the monitor recovers", bold=True)
        self.notify("Recovered", dict.fromkeys(DEMO_GROUPS, "OK"))
        self.wait_for_state("0001", ("recovering", "closed"), WAIT_S)
        state = self.breaker("0001") or {}
        if state.get("state") == "recovering":
            share = state.get("ramp_share") or 0
            ends_in = max(0.0, ((state.get("ramp_ends_at_ms") or 0) / 1000) - time.time())
            click.echo(
                f"   service: bank-charge 0001 recovering, {share:.0%} of calls let through, "
                f"closing fully in {ends_in:.0f}s"
            )
            self.charge("0001")
            click.echo("   waiting for the ramp to finish…")
            self.wait_for_state("0001", ("closed",), ends_in + WAIT_S)
        click.echo("   service: bank-charge 0001 closed")
        self.charge("0001")
        click.secho(
            "Done. With REDIS_URL as `router dev` printed it, `router breakers list` and "
            "`router breakers history bank-charge 0001` show the same from Redis.",
            bold=True,
        )


def dev_options(command: Any) -> Any:
    """Where `router dev`'s parts listen (its defaults), for the commands that talk to them."""
    for option in reversed(
        [
            click.option("--router", default=DEFAULT_ROUTER, show_default=True),
            click.option("--service", default=DEFAULT_SERVICE, show_default=True),
            click.option("--stub", default=DEFAULT_STUB, show_default=True),
            click.option(
                "--token", envvar="ROUTER_INBOUND_TOKEN", default="dev-token", show_default=True
            ),
        ]
    ):
        command = option(command)
    return command


def _no_dev(exc: httpx.HTTPError) -> click.ClickException:
    return click.ClickException(f"{exc}; is `router dev` (make dev) running in another terminal?")


@click.command()
@dev_options
def demo(router: str, service: str, stub: str, token: str) -> None:
    """Fire an alert and a recovery at `router dev` and show the example breaker follow."""
    try:
        Demo(router.rstrip("/"), service.rstrip("/"), stub.rstrip("/"), token).run()
    except httpx.HTTPError as exc:
        raise _no_dev(exc) from exc


@click.command("send-example")
@click.argument("kind", type=click.Choice(sorted(EXAMPLE_TRANSITIONS)))
@dev_options
@click.option(
    "--print",
    "print_only",
    is_flag=True,
    help="Print the payload (for curl -d @-) instead of sending it.",
)
def send_example(
    kind: str, router: str, service: str, stub: str, token: str, print_only: bool
) -> None:
    """Send docs/examples/KIND.json to `router dev` as of now: bank 0001 alerts or recovers.

    The files carry a fixed date, which a breaker holding a newer event ignores; this sends
    the same payload with the current time and a fresh event id."""
    payload = example_payload(kind, f"{service.rstrip('/')}/breaker/callback", now_ms=_now_ms())
    if print_only:
        click.echo(json.dumps(payload, indent=2))
        return
    sender = Demo(router.rstrip("/"), service.rstrip("/"), stub.rstrip("/"), token)
    try:
        # The stub plays Datadog's truth, which the reconciler compares with what was sent.
        groups = {DEMO_GROUPS[0]: EXAMPLE_GROUP_STATES[kind]}
        sender.tell_stub(f"/stub/monitors/{DEMO_MONITOR_ID}/groups", groups)
        sender.post(payload)
    except httpx.HTTPError as exc:
        raise _no_dev(exc) from exc


def _now_ms() -> int:
    return int(time.time() * 1000)
