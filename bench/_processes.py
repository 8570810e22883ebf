"""Processes the load benchmarks start and watch: a redis-server of their own, CPU and memory.

Linux only (/proc), like the machines these run on.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from tests.conftest import free_port
from tests.support import process, wait_for

REDIS_START_TIMEOUT_S = 10.0


@contextmanager
def appending_redis(data_dir: Path) -> Iterator[str]:
    """A redis-server on a free port appending to its log every second (`appendfsync
    everysec`, the usual production setting) in `data_dir`; its URL; stopped by pid."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on the PATH (apt-get install redis-server)")
    port = free_port()
    args = [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
        "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
    ]  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    with process(args, {}, log_path=data_dir / "redis.log"):
        client = redis.Redis.from_url(url)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(answers, timeout=REDIS_START_TIMEOUT_S, what=f"redis-server on {port}")
        yield url


def children(pid: int) -> list[int]:
    """Pids whose parent is `pid` (gunicorn's workers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU the processes have used so far."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def memory_mb(pid: int) -> tuple[float, float]:
    """(resident now, peak resident) of a process, in MB."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(value.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]
