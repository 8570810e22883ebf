"""What ROUTER_REDIS_WAIT_REPLICAS costs an enqueue: the enqueue script alone (the baseline)
against the script plus `WAIT 1` on the same connection, on one master with one replica.

Starts its own master and replica (redis-server on free loopback ports, files in a temporary
directory, stopped by pid), so the figures are not disturbed by the shared Redis; the two runs
alternate in rounds, so both see the same machine load.

    PYTHONPATH=. .venv/bin/python bench/redis_wait.py [--enqueues 1000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import redis
from _common import latency_line, percentile

from router.demo import datadog_payload
from router.keys import RouterKeys
from router.parsing.datadog import parse_datadog_webhook
from router.queue import DeliveryQueue

CALLBACK = "https://bank-charge.internal/breaker/callback"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_server(port: int, work: Path, *extra: str) -> Iterator[None]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on the PATH (apt-get install redis-server)")
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(work)]
    args += ["--save", "", "--appendonly", "no", *extra]
    with (work / f"redis-{port}.log").open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        client = redis.Redis(port=port, socket_connect_timeout=0.2)
        for _ in range(100):
            try:
                if client.ping():
                    break
            except redis.RedisError:
                time.sleep(0.05)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def enqueue_ms(queue: DeliveryQueue, count: int, first_event: int) -> list[float]:
    timings = []
    for n in range(count):
        now_ms = int(time.time() * 1000)
        payload = datadog_payload(
            CALLBACK, event_id=str(first_event + n), monitor_id="155844758", date_ms=now_ms
        )
        notification = parse_datadog_webhook(
            payload, keyword="circuit-breaker-callback", received_at_ms=now_ms
        )
        start = time.perf_counter()
        queue.enqueue(notification)
        timings.append((time.perf_counter() - start) * 1000)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--enqueues", type=int, default=1000, help="per run and round")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    master, replica = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        stack.enter_context(redis_server(master, Path(tmp)))
        stack.enter_context(
            redis_server(replica, Path(tmp), "--replicaof", "127.0.0.1", str(master))
        )
        client = redis.Redis(port=master, decode_responses=True)
        while client.info("replication").get("slave0", {}).get("state") != "online":
            time.sleep(0.05)
        keys = RouterKeys("bench-wait")
        plain = DeliveryQueue(client, keys, retention_s=3600)
        waiting = DeliveryQueue(client, keys, retention_s=3600, wait_replicas=1, wait_timeout_s=1)
        info = client.info("server")
        print(f"redis-server {info['redis_version']}, master and one replica on loopback TCP")
        results: dict[str, list[float]] = {"enqueue (baseline)": [], "enqueue + WAIT 1": []}
        event = 10_000_000
        for _ in range(args.rounds):
            for name, queue in (("enqueue (baseline)", plain), ("enqueue + WAIT 1", waiting)):
                results[name] += enqueue_ms(queue, args.enqueues, event)
                event += args.enqueues
        for name, values in results.items():
            print(latency_line(f"{name} ({len(values)} runs)", values))
        base, wait = results["enqueue (baseline)"], results["enqueue + WAIT 1"]
        print(
            f"ratio WAIT/baseline: p50 {percentile(wait, 0.5) / percentile(base, 0.5):.2f}x, "
            f"p99 {percentile(wait, 0.99) / percentile(base, 0.99):.2f}x"
        )


if __name__ == "__main__":
    main()
