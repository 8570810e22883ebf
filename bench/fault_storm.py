"""The sender side of a fault run (Datadog's webhook, retrying a 5xx) and the final account.

`Storm` POSTs notifications at a steady rate from a thread pool, and retries each answer that
is not 202 the way a webhook sender does (a 503 while Redis is down, a refused connection),
until a deadline. `account` waits until every accepted delivery has been received or
dead-lettered, then counts: delivered, duplicated, dead-lettered and lost.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.fault_receiver import CallbackEndpoint
from router.queue import Delivery, DeliveryQueue
from tests.support import INBOUND_TOKEN

# A sender keeps retrying a notification that was not accepted for this long (Datadog retries
# a failed webhook for a while too); past it, the notification counts as refused, not sent.
SEND_DEADLINE_S = 60.0
RESEND_AFTER_S = 0.25
SENDER_THREADS = 16
# Datadog gives up on a webhook request after 15 s (see router.config); so does this sender.
SENDER_TIMEOUT_S = 15.0
# A refused connection, a timeout: no HTTP status, counted under this key.
NO_ANSWER = 0


@dataclass
class Storm:
    """Notifications POSTed to `/webhooks/datadog` at `rate` per second; answers counted."""

    web_url: str
    rate: float
    answers: Counter[int] = field(default_factory=Counter)
    accepted_ids: set[str] = field(default_factory=set)
    accepted_at: dict[str, float] = field(default_factory=dict)
    # (monotonic time, status) of every answer, to tell what was answered during a fault.
    answer_log: list[tuple[float, int]] = field(default_factory=list)
    sent: int = 0
    accepted: int = 0  # notifications answered 202 (each names its deliveries)
    refused: int = 0  # notifications given up on at the sender's deadline
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(
        self,
        payloads: Sequence[dict[str, Any]],
        *,
        during: Callable[[], None] | None = None,
    ) -> None:
        """Send every payload; `during` runs on its own thread meanwhile (the fault)."""
        failures: list[BaseException] = []

        def inject() -> None:
            try:
                if during is not None:
                    during()
            except BaseException as exc:  # re-raised on the storm's thread below
                failures.append(exc)

        fault = threading.Thread(target=inject, name="fault")
        fault.start()
        started = time.monotonic()
        with (
            httpx.Client(
                timeout=SENDER_TIMEOUT_S, limits=httpx.Limits(max_connections=SENDER_THREADS)
            ) as http,
            ThreadPoolExecutor(SENDER_THREADS) as pool,
        ):
            for index, payload in enumerate(payloads):
                time.sleep(max(0.0, started + index / self.rate - time.monotonic()))
                with self._lock:
                    self.sent += 1
                pool.submit(self._send, http, payload)
        fault.join()
        if failures:
            raise RuntimeError("the fault injection failed") from failures[0]

    def _send(self, http: httpx.Client, payload: dict[str, Any]) -> None:
        headers = {"Authorization": f"Bearer {INBOUND_TOKEN}"}
        deadline = time.monotonic() + SEND_DEADLINE_S
        accepted = False
        while not accepted and time.monotonic() < deadline:
            try:
                response = http.post(
                    f"{self.web_url}/webhooks/datadog", json=payload, headers=headers
                )
                status = response.status_code
            except httpx.HTTPError:
                status = NO_ANSWER
            with self._lock:
                self.answers[status] += 1
                self.answer_log.append((time.monotonic(), status))
            if status == 202:
                accepted = True
                now = time.time()
                with self._lock:
                    self.accepted += 1
                    for item in response.json()["deliveries"]:
                        self.accepted_ids.add(item["id"])
                        self.accepted_at.setdefault(item["id"], now)
            elif status in (400, 401, 413, 415, 422):
                break  # the sender's own mistake: retrying cannot help
            else:
                time.sleep(RESEND_AFTER_S)
        if not accepted:
            with self._lock:
                self.refused += 1

    def answers_between(self, start: float, end: float) -> Counter[int]:
        with self._lock:
            return Counter(status for at, status in self.answer_log if start <= at <= end)

    def server_errors(self) -> dict[int, int]:
        return {status: n for status, n in sorted(self.answers.items()) if status >= 500}


@dataclass
class Account:
    """What happened to every notification of a run; `lost` must be 0."""

    sent: int
    accepted: int
    delivered: int
    duplicated: int
    dead: int
    lost: int
    server_errors: dict[int, int]
    bad_signatures: int
    seconds: float
    # What the router's records say of the lost ones (status, or "no record"): where to look.
    lost_states: dict[str, int] = field(default_factory=dict)

    def line(self, name: str) -> str:
        errors = ", ".join(f"{s}: {n}" for s, n in self.server_errors.items()) or "none"
        return (
            f"{name:<18} sent {self.sent:>6}  accepted {self.accepted:>6}  "
            f"delivered {self.delivered:>6}  duplicated {self.duplicated:>4}  "
            f"dead-lettered {self.dead:>5}  lost {self.lost}  5xx answers: {errors}  "
            f"({self.seconds:.1f} s)"
        ) + (f"  lost records: {self.lost_states}" if self.lost_states else "")


def _state(queue: DeliveryQueue, delivery_id: str) -> str:
    delivery = queue.load(delivery_id)
    return "no record" if delivery is None else delivery.status


def dead_ids(queue: DeliveryQueue) -> set[str]:
    """Deliveries in the dead-letter stream now (a replay takes one out)."""
    return {d.delivery_id for d in queue.dead_letters(limit=1_000_000)}


@dataclass
class RouterRecords:
    """What reached a callback the harness cannot watch (the example service), as the router
    recorded it: deliveries answered 2xx, and 2xx answers beyond the first for one id."""

    queue: DeliveryQueue
    ids: Callable[[], set[str]]
    bad_signatures: int = 0

    def _records(self) -> list[Delivery]:
        loaded = (self.queue.load(delivery_id) for delivery_id in sorted(self.ids()))
        return [d for d in loaded if d is not None]

    def delivered_ids(self) -> set[str]:
        return {d.id for d in self._records() if d.status == "delivered"}

    def duplicates(self) -> int:
        return sum(
            max(0, sum(a.get("outcome") == "delivered" for a in d.attempts) - 1)
            for d in self._records()
        )


def account(
    storm: Storm,
    endpoint: CallbackEndpoint | RouterRecords,
    queue: DeliveryQueue,
    *,
    started: float,
    timeout_s: float,
) -> Account:
    """Wait (bounded) until every accepted delivery was received or dead-lettered; count."""
    deadline = time.monotonic() + timeout_s
    while True:
        delivered, dead = endpoint.delivered_ids(), dead_ids(queue)
        missing = storm.accepted_ids - delivered - dead
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return Account(
        sent=storm.sent,
        accepted=len(storm.accepted_ids),
        delivered=len(storm.accepted_ids & delivered),
        duplicated=endpoint.duplicates(),
        dead=len(storm.accepted_ids & dead),
        lost=len(missing),
        lost_states=dict(Counter(_state(queue, delivery_id) for delivery_id in missing)),
        server_errors=storm.server_errors(),
        bad_signatures=endpoint.bad_signatures,
        seconds=time.monotonic() - started,
    )
