"""The real processes a fault run starts, each on 127.0.0.1 and each stopped by its pid.

Its own `redis-server --appendonly yes` in a temporary directory (so a restart keeps what was
acknowledged), gunicorn serving the router web, `router worker` processes that can be killed
and replaced, and, when a scenario needs them, the stub Datadog API and the example service.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, suppress
from pathlib import Path
from types import TracebackType

import redis

from router.datadog_stub import StubClient
from router.devserver import web_command
from router.keys import RouterKeys
from router.queue import DeliveryQueue
from tests.conftest import free_port
from tests.support import ROOT, router_command, router_env, wait_for, wait_http

# Every wait in a fault run is bounded; a process that does not come up within this is broken.
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class Child:
    """One child process with its output in a log file; stopped by pid (TERM, then KILL)."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], logs: Path) -> None:
        self.name = name
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / f"{name}-{time.time_ns()}.log"
        with self.log_path.open("wb") as log_file:
            self.proc = subprocess.Popen(
                args,
                env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no handler runs, whatever it held stays claimed in Redis."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=STOP_TIMEOUT_S)

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT_S)


class RedisServer:
    """A `redis-server` with append-only persistence in `workdir`, restartable on its port."""

    def __init__(self, workdir: Path, logs: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not on the PATH: run scripts/ensure-redis first")
        self.binary, self.workdir, self.logs = binary, workdir, logs
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.child: Child | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.workdir), "--save", "", "--appendonly", "yes",
        ]  # fmt: skip
        self.child = Child("redis", args, {}, self.logs)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        wait_for(lambda: _pings(client), timeout=START_TIMEOUT_S, what=f"redis on {self.port}")
        client.close()

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM: Redis writes out its append-only file and exits. SIGKILL: it exits at
        once; what it appended before each reply is in the file (fsync'd each second), so
        only a machine crash, not a process crash, can lose the last second."""
        if self.child is not None:
            if kill:
                self.child.kill()
            else:
                self.child.stop()
            self.child = None


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class System(AbstractContextManager["System"]):
    """Redis, the router web and workers (and optionally the stub and the example service)."""

    def __init__(self, workdir: Path, *, prefix: str, callback_allow: str, **settings: str) -> None:
        self.logs = workdir / "logs"
        self.redis_server = RedisServer(workdir / "redis", self.logs)
        self.prefix = prefix
        self.callback_allow = callback_allow
        self.settings = settings
        self.workers: list[Child] = []
        self.others: list[Child] = []
        self.web_url = ""
        self.stub: StubClient | None = None
        self.service_url = ""

    @property
    def env(self) -> dict[str, str]:
        quiet = {"ROUTER_CALLBACK_ALLOW": self.callback_allow, "ROUTER_LOG_LEVEL": "WARNING"}
        return router_env(self.redis_server.url, self.prefix, **(quiet | self.settings))

    def __enter__(self) -> System:
        self.redis_server.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for child in [*self.workers, *self.others]:
            with suppress(Exception):
                child.stop()
        self.redis_server.stop()

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_server.url, decode_responses=True)

    def queue(self) -> DeliveryQueue:
        return DeliveryQueue(self.redis(), RouterKeys(self.prefix), retention_s=3600)

    # -- processes -------------------------------------------------------------------------

    def start_web(self) -> str:
        port = free_port()
        self.others.append(Child("web", web_command(port), self.env, self.logs))
        self.web_url = f"http://127.0.0.1:{port}"
        wait_http(f"{self.web_url}/healthz", timeout=START_TIMEOUT_S)
        return self.web_url

    def start_worker(self, **extra: str) -> Child:
        env = self.env | extra
        worker = Child(f"worker-{len(self.workers)}", router_command("worker"), env, self.logs)
        self.workers.append(worker)
        return worker

    def live_workers(self) -> list[Child]:
        return [w for w in self.workers if w.alive()]

    def wait_workers_ready(self, count: int) -> None:
        """Until `count` workers have sent a heartbeat (started and reading the queue)."""
        client, keys = self.redis(), RouterKeys(self.prefix)
        wait_for(
            lambda: client.hlen(keys.worker_heartbeats) >= count,
            timeout=START_TIMEOUT_S,
            what=f"{count} worker heartbeats",
        )

    def start_stub(self) -> StubClient:
        port = free_port()
        args = [sys.executable, "-m", "router.datadog_stub", "--port", str(port)]
        self.others.append(Child("stub", args, {}, self.logs))
        self.stub = StubClient(f"http://127.0.0.1:{port}")
        self.stub.wait_ready(START_TIMEOUT_S)
        self.settings |= {"DD_API_HOST": self.stub.url, "DD_API_KEY": "k", "DD_APP_KEY": "a"}
        return self.stub

    def start_service(self, breakers_prefix: str) -> str:
        """The example bank-charge service, its breakers in this Redis, no recovery ramp."""
        port = free_port()
        env = {
            "PORT": str(port),
            "REDIS_URL": self.redis_server.url,
            "ROUTER_SIGNING_SECRET": self.env["ROUTER_SIGNING_SECRET"],
            "BREAKERS_PREFIX": breakers_prefix,
            # A recovery closes at once, so the final state is closed or open, nothing between.
            "BREAKER_RAMP_WINDOW": "0",
        }
        self.others.append(
            Child("service", [sys.executable, "-m", "services_example"], env, self.logs)
        )
        self.service_url = f"http://127.0.0.1:{port}"
        wait_http(f"{self.service_url}/healthz", timeout=START_TIMEOUT_S)
        return self.service_url
