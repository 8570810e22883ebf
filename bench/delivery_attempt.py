"""What the attempt deadline costs, and what it buys: one callback attempt, three ways.

- plain: a signed POST through a plain `httpx.Client` (per-operation timeouts only, what the
  sender did before the attempt deadline);
- async: `CallbackSender` as of ASYNC_SENDER_COMMIT (attempts on an `httpx.AsyncClient` in
  an event loop the sender owns, callers waiting on futures), loaded from git;
- sync deadline: today's `CallbackSender` (a sync `httpx.Client` whose network backend clamps
  every socket operation to what is left of the attempt's deadline).

Cost: signed POSTs to a fast receiver in a child process (so this process's CPU is the
sender's alone: callers, event loop, lookup threads), from 1 and from 8 threads, in rounds
that interleave the three; CPU per attempt is `time.process_time()` over a round. What it
buys: an endpoint trickling its answer one byte every `--interval` seconds, under a 1 s
timeout, through each.

    PYTHONPATH=. .venv/bin/python bench/delivery_attempt.py [--attempts 500] [--rounds 3]
                                                            [--interval 0.1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
from _common import ROOT, percentile

from router.delivery import CallbackSender
from tests.support import SIGNING_SECRET, trickling_receiver

PAYLOAD = {"delivery_id": "dlv_bench", "transition": "alert", "monitor": {"id": 1}}
TIMEOUT_S = 1.0
# For the cost runs: long enough that a slow moment on a shared machine is measured, not failed.
COST_TIMEOUT_S = 10.0
# The last commit whose CallbackSender ran attempts on its own event loop.
ASYNC_SENDER_COMMIT = "d56a0e7f1d3db3d2490b58e2b123422ea50f6cbc"
# A receiver in its own process; a deep listen backlog, so 8 callers' SYNs are not dropped
# (a resent SYN costs 1 s and would measure the kernel, not the sender).
RECEIVER_SCRIPT = """
import sys
from http.server import ThreadingHTTPServer
ThreadingHTTPServer.request_queue_size = 128
from tests.support import running_receiver
with running_receiver() as receiver:
    print(receiver.url, flush=True)
    sys.stdin.read()
"""
WARMUP_ATTEMPTS = 20

Sender = Callable[[str, str, dict[str, Any]], object]


def load_async_sender_class() -> type[Any] | None:
    """`CallbackSender` from ASYNC_SENDER_COMMIT, or None outside a git checkout."""
    try:
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{ASYNC_SENDER_COMMIT}:router/delivery.py"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    module = types.ModuleType("async_delivery")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, "async_delivery.py", "exec"), module.__dict__)
    return module.CallbackSender  # type: ignore[no-any-return]


class PlainSender:
    """What the sender did before the deadline: sign, then one POST with per-read timeouts."""

    def __init__(self, timeout_s: float) -> None:
        self._signer = CallbackSender(SIGNING_SECRET, timeout_s=timeout_s)  # only signs
        self._client = httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False)

    def send(self, delivery_id: str, url: str, payload: dict[str, Any]) -> str:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        headers = self._signer.signed_headers(delivery_id, body)
        try:
            response = self._client.post(url, content=body.encode(), headers=headers)
        except httpx.HTTPError as exc:
            return repr(exc)
        return f"HTTP {response.status_code}, answer complete"

    def close(self) -> None:
        self._signer.close()
        self._client.close()


@contextmanager
def receiver_process() -> Iterator[str]:
    """The URL of a fast callback receiver in a child process, stopped by pid at the end."""
    child = subprocess.Popen(
        [sys.executable, "-c", RECEIVER_SCRIPT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    try:
        assert child.stdout is not None
        url = child.stdout.readline().strip()
        if not url:
            raise RuntimeError("the receiver process did not start")
        yield url
    finally:
        if child.stdin is not None:
            child.stdin.close()  # its signal to stop
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=5)


def timed(send: Sender, url: str, attempts: int, threads: int) -> tuple[list[float], float, float]:
    """Latencies (ms), CPU seconds of this process and wall seconds for `attempts` sends."""

    def one(_: int) -> float:
        started = time.perf_counter()
        send("dlv_bench", url, PAYLOAD)
        return (time.perf_counter() - started) * 1000

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(threads)))  # the pool's threads exist before the clock starts
        cpu, wall = time.process_time(), time.perf_counter()
        latencies = list(pool.map(one, range(attempts)))
        return latencies, time.process_time() - cpu, time.perf_counter() - wall


def cost_line(name: str, rounds: list[tuple[list[float], float, float]], attempts: int) -> str:
    cpu_ms = [cpu / attempts * 1000 for _, cpu, _ in rounds]
    rates = [attempts / wall for _, _, wall in rounds]
    latencies = [value for round_latencies, _, _ in rounds for value in round_latencies]
    return (
        f"{name:<44} CPU {statistics.median(cpu_ms):5.3f} ms/attempt "
        f"({min(cpu_ms):5.3f}-{max(cpu_ms):5.3f})  {statistics.median(rates):6.0f} attempts/s  "
        f"p50 {percentile(latencies, 0.5):7.3f} ms  p99 {percentile(latencies, 0.99):7.3f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--attempts", type=int, default=500, help="per client, thread count, round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--interval", type=float, default=0.1)
    args = parser.parse_args()
    async_class = load_async_sender_class()
    factories: dict[str, Callable[[float], Any]] = {
        "plain httpx.Client": PlainSender,
        "async sender": (lambda t: async_class(SIGNING_SECRET, timeout_s=t))
        if async_class
        else None,
        "sync deadline sender": lambda t: CallbackSender(SIGNING_SECRET, timeout_s=t),
    }
    factories = {name: make for name, make in factories.items() if make is not None}
    if async_class is None:
        print(f"async sender skipped: git cannot show {ASYNC_SENDER_COMMIT[:7]} here")
    with receiver_process() as ip_url:
        port = ip_url.rsplit(":", 1)[1]
        urls = {"127.0.0.1": ip_url + "/cb", "localhost": f"http://localhost:{port}/cb"}
        for threads, host in ((1, "127.0.0.1"), (8, "127.0.0.1"), (1, "localhost")):
            senders = {name: make(COST_TIMEOUT_S) for name, make in factories.items()}
            results: dict[str, list[tuple[list[float], float, float]]] = {n: [] for n in senders}
            try:
                for sender in senders.values():
                    timed(sender.send, urls[host], WARMUP_ATTEMPTS, threads)
                for _ in range(args.rounds):
                    for name, sender in senders.items():
                        results[name].append(timed(sender.send, urls[host], args.attempts, threads))
            finally:
                for sender in senders.values():
                    sender.close()
            for name, rounds in results.items():
                print(cost_line(f"{name}, {threads} thread(s), {host}", rounds, args.attempts))
    for mode in ("headers", "body"):
        for name, make in factories.items():
            sender = make(TIMEOUT_S)
            try:
                with trickling_receiver([mode], interval_s=args.interval) as slow:
                    started = time.perf_counter()
                    outcome = sender.send("dlv_bench", slow.url + "/cb", PAYLOAD)
                    took = time.perf_counter() - started
            finally:
                sender.close()
            said = outcome if isinstance(outcome, str) else outcome.error
            print(
                f"trickled {mode:<7} every {args.interval}s, {TIMEOUT_S}s timeout: "
                f"{name:<21} {took:5.2f} s ({said})"
            )


if __name__ == "__main__":
    main()
