"""Fault scenarios judged by the example service's breakers: out-of-order events, a lost recovery.

The callback is `services_example` (`POST /breaker/callback`, breaker `bank-charge` keyed by
the group's `bank_code`), its breakers in the run's Redis with no recovery ramp; what a user
notices is `POST /charges` answering 201 (closed) or 503 (open) for each bank.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from bench.fault_scenarios import (
    MONITOR_ID,
    Payloads,
    Result,
    Run,
    bank_code,
    bank_scope,
    router,
    settle_timeout,
    unique_prefix,
)
from bench.fault_storm import Account, RouterRecords, Storm, account
from bench.fault_system import System
from router.queue import now_ms
from tests.support import wait_for

BREAKER = "bank-charge"
# Datadog's group timestamps are whole seconds: a recovery must come a second after the alert
# for its time to be later than the alert's.
DATADOG_CLOCK_S = 1.1
RECONCILE_INTERVAL_S = 2.0
# A monitor read is shared for 5 s (router.enrich.engine.MONITOR_CACHE_TTL_S).
MONITOR_CACHE_TTL_S = 5.0


def banks(run: Run) -> int:
    """Breakers per run: enough to see a pattern, each one checked."""
    return 20 if run.quick else min(200, run.notifications // 10)


def breaker_states(service_url: str) -> dict[str, str]:
    """`bank-charge` key -> state, as the service's `GET /breakers` lists them."""
    listed = httpx.get(f"{service_url}/breakers", timeout=10).json()["breakers"]
    return {b["key"]: b["state"] for b in listed if b["name"] == BREAKER}


def charge_answers(service_url: str, keys: int) -> dict[str, int]:
    """What a charge through each bank gets: 201 when its breaker lets it, 503 when open."""
    with httpx.Client(timeout=10) as http:
        return {
            bank_code(i): http.post(
                f"{service_url}/charges", json={"bank_code": bank_code(i), "amount": 100}
            ).status_code
            for i in range(keys)
        }


def eventually(predicate: Callable[[], bool], *, timeout_s: float) -> bool:
    """Poll until `predicate()` holds or `timeout_s` passes; the caller reports which."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def service_system(run: Run, **settings: str) -> System:
    return System(run.workdir, prefix=unique_prefix(), callback_allow="", **settings)


def start_service(system: System) -> str:
    service = system.start_service(f"{system.prefix}:breakers")
    system.callback_allow = f"{service}/breaker/"
    return service


def send_and_settle(system: System, run: Run, batch: list[dict[str, Any]]) -> Account:
    """Send `batch`; wait until the router recorded each delivery as delivered or dead."""
    storm = Storm(system.web_url, run.rate)
    started = time.monotonic()
    storm.run(batch)
    records = RouterRecords(system.queue(), lambda: set(storm.accepted_ids))
    return account(storm, records, system.queue(), started=started, timeout_s=settle_timeout(run))


# -- events arriving out of order ----------------------------------------------------------


def out_of_order(run: Run) -> Result:
    """Each bank gets an alert and a recovery, the later event delivered first.

    Even banks: the recovery (newer) arrives, then the alert (older): must end closed.
    Odd banks: the alert (newer) arrives, then the recovery (older): must end open."""
    keys = banks(run)
    older, newer = now_ms() - 60_000, now_ms() - 30_000
    result = Result("out-of-order", [])
    with service_system(run) as system:
        service = start_service(system)
        router(system)
        payloads = Payloads(f"{service}/breaker/callback")
        for wave, (even, odd, when) in enumerate(
            (("Recovered", "Triggered", newer), ("Triggered", "Recovered", older)), start=1
        ):
            batch = [
                payloads.one(
                    transition=even if i % 2 == 0 else odd, scope=bank_scope(i), date_ms=when
                )
                for i in range(keys)
            ]
            # Each wave is delivered in full before the next is sent: the arrival order is
            # the wrong one for certain, not by chance.
            totals = send_and_settle(system, run, batch)
            result.accounts.append((f"wave {wave} ({'newer' if wave == 1 else 'older'})", totals))
        expected = {bank_code(i): "closed" if i % 2 == 0 else "open" for i in range(keys)}
        eventually(lambda: breaker_states(service) == expected, timeout_s=10)
        states = breaker_states(service)
        charges = charge_answers(service, keys)
    wrong = sorted(k for k, state in expected.items() if states.get(k) != state)
    wrong_charges = sorted(
        k for k, status in charges.items() if status != (201 if expected[k] == "closed" else 503)
    )
    result.notes.append(
        f"{keys} breakers: final states {dict(Counter(states.values()))}; charges "
        f"{dict(Counter(charges.values()))}; wrong: {wrong or 'none'}"
    )
    result.check("no breaker ends in the wrong state", not wrong)
    result.check("charges answer 201 where closed and 503 where open", not wrong_charges)
    return result


# -- a recovery dropped: the reconciler repairs it -----------------------------------------


def dropped_recovery(run: Run) -> Result:
    """Alerts open every bank's breaker; the vendor recovers but no recovery notification ever
    arrives. The reconciler reads the monitor, sees every group OK, and closes them."""
    keys = banks(run)
    monitor = MONITOR_ID + 300
    result = Result("dropped-recovery", [])
    with service_system(run, ROUTER_RECONCILE_INTERVAL=f"{RECONCILE_INTERVAL_S:g}s") as system:
        stub = system.start_stub()
        service = start_service(system)
        callback = f"{service}/breaker/callback"
        stub.define_monitor(
            monitor,
            name="Bank charge API errors",
            groups={bank_scope(i): "Alert" for i in range(keys)},
            message=f"Bank API errors.\ncircuit-breaker-callback: {callback}\n@webhook-router",
        )
        router(system)
        batch = Payloads(callback).make(keys, monitor_id=lambda _: monitor)
        totals = send_and_settle(system, run, batch)
        result.accounts.append(("alerts", totals))
        wait_for(
            lambda: (
                set(breaker_states(service).values()) == {"open"}
                and len(breaker_states(service)) == keys
            ),
            timeout=10,
            what="every breaker open",
        )
        opened = charge_answers(service, keys)
        time.sleep(DATADOG_CLOCK_S)
        # The vendor recovers; Datadog's recovery notifications are lost on the way.
        stub.update_groups(monitor, {bank_scope(i): "OK" for i in range(keys)})
        recovered = time.monotonic()
        bound = 3 * RECONCILE_INTERVAL_S + MONITOR_CACHE_TTL_S + 10
        eventually(lambda: set(breaker_states(service).values()) == {"closed"}, timeout_s=bound)
        closed_after = time.monotonic() - recovered
        states = breaker_states(service)
        charges = charge_answers(service, keys)
        reconciles = [
            d
            for d in system.queue().recent(1000)
            if d.notification.source == "reconciler" and d.status == "delivered"
        ]
    result.notes.append(
        f"{keys} breakers opened by alerts (charges {dict(Counter(opened.values()))}); no "
        f"recovery sent; after the stub said OK: {dict(Counter(states.values()))} in "
        f"{closed_after:.1f} s (reconcile interval {RECONCILE_INTERVAL_S:g} s), by "
        f"{len(reconciles)} reconcile deliveries; charges now {dict(Counter(charges.values()))}"
    )
    result.check("every charge refused while the alerts stood", set(opened.values()) == {503})
    result.check(
        f"every breaker closed by the reconciler within {bound:.0f} s",
        set(states.values()) == {"closed"} and bool(reconciles),
    )
    result.check("charges go through again", set(charges.values()) == {201})
    return result
