"""Helpers shared by the benchmarks: the Redis they use, unique key prefixes, percentiles,
writing or reading children in processes of their own."""

from __future__ import annotations

import multiprocessing
import os
import platform
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

import redis

# Every benchmark talks to this Redis; only loopback is ever used.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
ROOT = Path(__file__).resolve().parent.parent

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def redis_url() -> str:
    return os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL)


def unique_prefix() -> str:
    """A key prefix no other run uses (`bench-<hex>`), so runs can share one Redis."""
    return f"bench-{uuid.uuid4().hex[:10]}"


def delete_prefixed(client: redis.Redis, *prefixes: str) -> int:
    """Delete every key under each `<prefix>:`; returns how many were deleted."""
    deleted = 0
    for prefix in prefixes:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            deleted += int(client.delete(*keys))
    return deleted


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]) of a non-empty sample."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of an empty sample")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency_line(name: str, values_ms: list[float], width: int = 46) -> str:
    return (
        f"{name:<{width}} p50 {percentile(values_ms, 0.5):8.3f} ms   "
        f"p99 {percentile(values_ms, 0.99):8.3f} ms   max {max(values_ms):8.3f} ms"
    )


def environment_line(client: redis.Redis) -> str:
    """Python, CPU count and Redis version: enough to tell runs on different machines apart."""
    info = client.info("server")
    return (
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"redis-server {info['redis_version']} at {redis_url()} (loopback TCP)"
    )


@contextmanager
def child(
    target: Callable[..., None],
    *args: object,
    ready_timeout: float = 15.0,
    stop_timeout: float = 5.0,
) -> Iterator[Connection]:
    """Start `target(conn, *args)` in a spawned process and wait until it sends "ready";
    yields our end of the pipe. Afterwards it is told "stop" and stopped by pid."""
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    proc: BaseProcess = ctx.Process(target=target, args=(theirs, *args), daemon=True)
    proc.start()
    try:
        if not ours.poll(ready_timeout):
            raise TimeoutError(f"{target.__name__} did not get ready")
        ready = ours.recv()
        if ready != "ready":
            raise RuntimeError(f"{target.__name__}: {ready}")
        yield ours
    finally:
        with suppress(OSError):  # the child may already be gone
            ours.send("stop")
        proc.join(stop_timeout)
        if proc.is_alive():
            proc.terminate()
            proc.join(stop_timeout)
        if proc.is_alive():
            proc.kill()
            proc.join(stop_timeout)
