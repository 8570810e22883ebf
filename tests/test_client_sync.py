"""Keeping every process's snapshot fresh: the change channel, resyncs, forks, Redis outages."""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis as redis_lib
from breaker_client import BreakerOpen, Breakers, BreakerStoreUnavailable

from router.keys import BreakerKeys
from tests.conftest import free_port

MakeBreakers = Callable[..., Breakers]


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.005) -> bool:
    """Poll `predicate` until it holds or `timeout` s pass; returns whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


@pytest.fixture
def make_breakers(redis_url: str, key_prefix: str) -> Iterator[MakeBreakers]:
    made: list[Breakers] = []

    def make(url: str = redis_url, **options: Any) -> Breakers:
        options.setdefault("prefix", key_prefix)
        breakers = Breakers.from_url(url, **options)
        made.append(breakers)
        return breakers

    yield make
    for breakers in made:
        breakers.stop()


class RedisServer:
    """A throw-away redis-server on its own port that a test may kill and restart."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis_lib.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            assert wait_until(lambda: self._pings(client), 5.0), "redis-server did not start"
        finally:
            client.close()

    @staticmethod
    def _pings(client: redis_lib.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis_lib.RedisError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.process = None


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.kill()


def test_a_change_reaches_another_process_quickly(make_breakers: MakeBreakers) -> None:
    writer = make_breakers(sync=False)
    # A long resync interval: only the change channel can deliver within the wait.
    reader = make_breakers(resync_interval=300)
    assert reader.stats()["loaded"]
    started = time.monotonic()
    writer.open("bank-charge", "0001", reason="alert")
    assert wait_until(lambda: reader.is_open("bank-charge", "0001"), 2.0)
    assert time.monotonic() - started < 2.0
    writer.force_close("bank-charge", "0001", reason="false alarm", by="ana")
    assert wait_until(lambda: not reader.is_open("bank-charge", "0001"), 2.0)
    assert reader.stats()["messages"] >= 2


def test_a_lost_message_is_repaired_by_the_periodic_resync(
    make_breakers: MakeBreakers, redis: redis_lib.Redis, key_prefix: str
) -> None:
    reader = make_breakers(resync_interval=0.3)
    keys = BreakerKeys(key_prefix)
    # Written as a script would, but with no PUBLISH: the message is "lost".
    redis.hset(keys.record("bank-charge:0007"), mapping={"state": "open", "reason": "x", "rev": 1})
    redis.sadd(keys.index, "bank-charge:0007")
    assert wait_until(lambda: reader.is_open("bank-charge", "0007"), 3.0)
    assert reader.stats()["messages"] == 0


def test_is_open_does_no_redis_io(make_breakers: MakeBreakers) -> None:
    b = make_breakers(sync=False, ramp_window=60)
    b.open("bank-charge", "0001", reason="a")
    b.open("bank-charge", "0002", reason="a")
    b.close("bank-charge", "0002", reason="ramp")
    b.force_open("acme", reason="m", by="ana", expires_in=60)
    b.refresh()

    def no_io(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"is_open touched Redis: {args}")

    b._store.client.execute_command = no_io  # type: ignore[method-assign]
    for name, key in [("bank-charge", "0001"), ("bank-charge", "0002"), ("acme", "x"), ("z", None)]:
        for _ in range(100):
            b.is_open(name, key)
    assert b.is_open("bank-charge", "0001") and b.is_open("acme", "x")
    with pytest.raises(BreakerOpen):
        b.check("bank-charge", "0001")


def test_forked_child_runs_its_own_subscription(make_breakers: MakeBreakers) -> None:
    # Long resyncs: only a live subscription can deliver changes within the waits below.
    parent = make_breakers(resync_interval=300)
    writer = make_breakers(sync=False)
    assert not parent.is_open("bank-charge", "0001")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        code = 1
        try:
            os.close(read_end)
            saw = wait_until(lambda: parent.is_open("bank-charge", "0001"), 10.0)
            stats = parent.stats()
            report = {"saw": saw, "pid": stats["pid"], "running": stats["sync_running"]}
            os.write(write_end, json.dumps(report).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        writer.open("bank-charge", "0001", reason="alert after the fork")
        ready, _, _ = select.select([read_end], [], [], 15.0)
        assert ready, "the child did not report within 15 s"
        report = json.loads(os.read(read_end, 4096).decode())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and os.waitpid(pid, os.WNOHANG) == (0, 0):
            time.sleep(0.01)
        pid = 0
    finally:
        os.close(read_end)
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert report == {"saw": True, "pid": report["pid"], "running": True}
    assert report["pid"] != os.getpid()
    # The child's exit closed its copies only: the parent's subscription still works.
    assert wait_until(lambda: parent.is_open("bank-charge", "0001"), 2.0)
    writer.close("bank-charge", "0001", reason="recovered", ramp=False)
    assert wait_until(lambda: not parent.is_open("bank-charge", "0001"), 2.0)
    assert parent.stats()["reconnects"] == 0


def test_redis_outage_and_return(
    make_breakers: MakeBreakers, own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    reader = make_breakers(own_redis.url, resync_interval=300)
    reader.open("bank-charge", "0001", reason="alert")
    assert reader.is_open("bank-charge", "0001")

    own_redis.kill()
    assert wait_until(lambda: not reader.stats()["connected"], 5.0)
    # The snapshot keeps answering.
    assert reader.is_open("bank-charge", "0001")
    assert not reader.is_open("bank-charge", "0002")
    # Writes fail fast and clearly, so a callback answers 503 and the router retries.
    started = time.monotonic()
    with pytest.raises(BreakerStoreUnavailable, match="close breaker bank-charge:0001"):
        reader.close("bank-charge", "0001", reason="recovered")
    with pytest.raises(BreakerStoreUnavailable):
        reader.state("bank-charge", "0001")
    assert time.monotonic() - started < 1.0

    # A process that never loaded a snapshot answers per fail mode, and says so once.
    caplog.set_level(logging.WARNING, logger="breaker_client.breakers")
    allow = make_breakers(own_redis.url, fail_mode="allow", startup_wait=1.0)
    deny = make_breakers(own_redis.url, fail_mode="deny", startup_wait=1.0)
    assert not allow.stats()["loaded"]
    assert [allow.is_open("bank-charge", "0001") for _ in range(3)] == [False] * 3
    assert [deny.is_open("bank-charge", "0001") for _ in range(2)] == [True] * 2
    with pytest.raises(BreakerOpen, match="no breaker snapshot loaded"):
        deny.check("bank-charge", "0001")
    assert allow.stats()["fail_mode_answers"] == 3
    assert deny.stats()["fail_mode_answers"] == 3  # check() counts too
    notices = [r for r in caplog.records if "no snapshot loaded" in r.getMessage()]
    assert len(notices) == 2  # one per process, not one per call

    # Redis comes back empty on the same port: everyone reconnects and resyncs.
    own_redis.start()
    assert wait_until(lambda: not reader.is_open("bank-charge", "0001"), 10.0), (
        "the reader did not resync after Redis came back"
    )
    # The resync answers before the change channel is subscribed again, which marks it connected.
    assert wait_until(lambda: reader.stats()["connected"], 5.0)
    assert reader.stats()["reconnects"] == 1
    assert wait_until(lambda: allow.stats()["loaded"], 10.0)
    reader.open("bank-charge", "0003", reason="alert after the outage")
    assert wait_until(lambda: allow.is_open("bank-charge", "0003"), 2.0)
    assert wait_until(lambda: deny.stats()["loaded"], 10.0)
    assert not deny.is_open("bank-charge", "0001")


def test_stats_describe_the_snapshot(make_breakers: MakeBreakers) -> None:
    b = make_breakers()
    b.open("bank-charge", "0001", reason="a")
    b.open("bank-charge", "0002", reason="a")
    b.close("bank-charge", "0002", reason="ok", ramp=False)
    stats = b.stats()
    assert stats["loaded"] and stats["connected"] and stats["sync_running"]
    assert (stats["breakers"], stats["breakers_not_closed"]) == (2, 1)
    assert stats["resyncs"] >= 1 and stats["fail_mode"] == "allow"
    assert stats["fail_mode_answers"] == 0 and stats["pid"] == os.getpid()
    b.stop()
    assert not b.stats()["sync_running"]
    assert b.is_open("bank-charge", "0001")  # a stopped handle keeps its last snapshot


def test_a_newer_version_alone_is_not_broadcast(make_breakers: MakeBreakers) -> None:
    writer = make_breakers(sync=False)
    reader = make_breakers(resync_interval=300)
    writer.open("bank-charge", "0001", reason="alert", version=1)
    assert wait_until(lambda: reader.stats()["messages"] == 1, 2.0)
    # A reconcile restating the same truth with a newer version: nothing for readers.
    assert writer.open("bank-charge", "0001", reason="still", version=2).outcome == "unchanged"
    assert writer.state("bank-charge", "0001").version == 2
    writer.open("bank-charge", "0002", reason="alert", version=3)
    assert wait_until(lambda: reader.is_open("bank-charge", "0002"), 2.0)
    assert reader.stats()["messages"] == 2


def test_readers_in_many_threads_while_the_snapshot_changes(make_breakers: MakeBreakers) -> None:
    writer = make_breakers(sync=False)
    reader = make_breakers(resync_interval=0.05)  # resyncs swap the whole map under readers
    errors: list[BaseException] = []
    stop = threading.Event()

    def hammer() -> None:
        try:
            while not stop.is_set():
                for _ in range(200):
                    for code in ("0001", "0002", "0003", None):
                        reader.is_open("bank-charge", code)
                time.sleep(0)  # let the writer and the sync thread have the GIL too
        except BaseException as exc:  # any error in a reader fails the test
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for i in range(30):
            if i % 2:
                writer.close("bank-charge", f"000{i % 3 + 1}", reason=f"c{i}", ramp=False)
            else:
                writer.open("bank-charge", f"000{i % 3 + 1}", reason=f"o{i}")
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
    assert not errors
    expected = {code: writer.state("bank-charge", code).open for code in ("0001", "0002", "0003")}
    assert wait_until(
        lambda: {c: reader.is_open("bank-charge", c) for c in expected} == expected, 2.0
    )
