"""What the attempt deadline costs, and what it buys: one callback attempt, with and without it.

Against a callback receiver in this process on 127.0.0.1:
- cost: signed POSTs to a fast receiver through `CallbackSender` (one event loop owned by the
  sender, each attempt under a deadline) from 1 and from 8 threads, against the same POST
  through a plain `httpx.Client` (per-read timeouts only, what the sender did before);
- what it buys: an endpoint trickling its answer one byte every `--interval` seconds, under a
  1 s timeout, through both.

    .venv/bin/python bench/delivery_attempt.py [--attempts 500] [--interval 0.1]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
from _common import latency_line

from router.delivery import CallbackSender
from tests.support import SIGNING_SECRET, running_receiver, trickling_receiver

PAYLOAD = {"delivery_id": "dlv_bench", "transition": "alert", "monitor": {"id": 1}}
TIMEOUT_S = 1.0
# For the cost runs: the receiver's small listen backlog drops SYNs under 8 threads, and a
# resent SYN takes 1 s; a long timeout measures that instead of failing on it.
COST_TIMEOUT_S = 10.0


def timed(attempt: Callable[[], object], attempts: int, threads: int) -> list[float]:
    def one(_: int) -> float:
        started = time.perf_counter()
        attempt()
        return (time.perf_counter() - started) * 1000

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(attempts)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--attempts", type=int, default=500)
    parser.add_argument("--interval", type=float, default=0.1)
    args = parser.parse_args()
    body = json.dumps(PAYLOAD, separators=(",", ":")).encode()
    sender = CallbackSender(SIGNING_SECRET, timeout_s=TIMEOUT_S)
    plain = httpx.Client(timeout=TIMEOUT_S, follow_redirects=False, trust_env=False)
    cost_sender = CallbackSender(SIGNING_SECRET, timeout_s=COST_TIMEOUT_S)
    cost_plain = httpx.Client(timeout=COST_TIMEOUT_S, follow_redirects=False, trust_env=False)
    try:
        with running_receiver() as receiver:
            url = receiver.url + "/cb"
            headers = sender.signed_headers("dlv_bench", body.decode())
            for threads in (1, 8):
                plain_ms = timed(
                    lambda: cost_plain.post(url, content=body, headers=headers),
                    args.attempts,
                    threads,
                )
                sender_ms = timed(
                    lambda: cost_sender.send("dlv_bench", url, PAYLOAD), args.attempts, threads
                )
                print(latency_line(f"plain httpx.Client, {threads} thread(s)", plain_ms))
                print(latency_line(f"CallbackSender, {threads} thread(s)", sender_ms))
        for mode in ("headers", "body"):
            with trickling_receiver([mode, mode], interval_s=args.interval) as slow:
                url = slow.url + "/cb"
                started = time.perf_counter()
                result = sender.send("dlv_bench", url, PAYLOAD)
                sender_s = time.perf_counter() - started
                started = time.perf_counter()
                try:
                    plain.post(url, content=body, headers=headers).read()
                    plain_outcome = "answer complete"
                except httpx.HTTPError as exc:
                    plain_outcome = repr(exc)
                plain_s = time.perf_counter() - started
            print(
                f"trickled {mode:<7} every {args.interval}s, {TIMEOUT_S}s timeout: "
                f"CallbackSender {sender_s:5.2f} s ({result.error}); "
                f"plain httpx.Client {plain_s:5.2f} s ({plain_outcome})"
            )
    finally:
        for closable in (sender, plain, cost_sender, cost_plain):
            closable.close()


if __name__ == "__main__":
    main()
