"""Real Redis topologies for tests: a master with a replica watched by sentinels, and a small
Cluster. Every process runs on a free 127.0.0.1 port in a tmp dir and is stopped by pid."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from breaker_client import BreakerStoreUnavailable
from flask.testing import FlaskClient

from tests.conftest import free_port
from tests.support import INBOUND_TOKEN, process, wait_for

AUTH = {"Authorization": f"Bearer {INBOUND_TOKEN}"}
# The sender keeps retrying a 503 this long, as Datadog retries a failed webhook.
SENDER_PATIENCE_S = 30.0
SERVICE = "mymaster"
# A sentinel notices a dead master after this long; tests force failovers, so keep it short.
DOWN_AFTER_MS = 1000


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not on the PATH: `make test` installs it (scripts/ensure-test-tools), "
            "or apt-get install redis-server redis-tools",
            pytrace=False,
        )
    return path


def answers(client: redis_lib.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis_lib.RedisError:
        return False


def raw(port: int) -> redis_lib.Redis:
    return redis_lib.Redis(
        port=port, socket_connect_timeout=0.5, socket_timeout=5, decode_responses=True
    )


@contextmanager
def redis_process(port: int, work: Path, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """One redis-server on `port`, its files in `work`; ready when it answers PING."""
    work.mkdir(parents=True, exist_ok=True)
    args = [binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1"]
    args += ["--dir", str(work), "--save", "", "--appendonly", "no", *extra]
    with process(args, {}, log_path=work / "redis.log") as proc:
        client = raw(port)
        wait_for(lambda: answers(client), timeout=10, what=f"redis-server on {port}")
        yield proc


@dataclass
class SentinelSet:
    """A master, one replica and the sentinels watching them; `url` is the REDIS_URL."""

    ports: list[int]  # of the data servers, master first at start
    sentinel_ports: list[int]
    servers: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}"

    def sentinel(self) -> redis_lib.Redis:
        return raw(self.sentinel_ports[0])

    def master_port(self) -> int:
        _host, port = self.sentinel().sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def in_sync(self) -> bool:
        """Every replica is online and has every write the master has."""
        info: dict[str, Any] = raw(self.master_port()).info("replication")
        replicas = [info.get(f"slave{n}") for n in range(len(self.ports) - 1)]
        return info.get("role") == "master" and all(
            isinstance(replica, dict)
            and replica.get("state") == "online"
            and int(replica.get("offset", -1)) == int(info["master_repl_offset"])
            for replica in replicas
        )

    def failover(self) -> int:
        """Have the sentinels promote the replica; returns the new master's port once every
        sentinel names it, the new master accepts writes and the old one follows it."""
        old = self.master_port()
        self.sentinel().execute_command("SENTINEL", "FAILOVER", SERVICE)
        wait_for(
            lambda: all(
                int(raw(p).sentinel_get_master_addr_by_name(SERVICE)[1]) != old
                for p in self.sentinel_ports
            ),
            timeout=20,
            what="every sentinel to name the new master",
        )
        new = self.master_port()
        wait_for(lambda: raw(new).info("replication")["role"] == "master", timeout=10)
        return new

    def replicas_known(self) -> bool:
        wanted = len(self.ports) - 1
        return all(
            len(raw(port).execute_command("SENTINEL", "REPLICAS", SERVICE)) == wanted
            for port in self.sentinel_ports
        )


@contextmanager
def sentinel_set(tmp_path: Path, *, replicas: int = 2, sentinels: int = 2) -> Iterator[SentinelSet]:
    """Two replicas by default: a failover promotes one and repoints the other at once, so a
    `WAIT 1` is satisfied again within a second (the old master rejoins only ~10 s later,
    when a sentinel's next INFO to it finds it still claiming to be a master)."""
    master = free_port()
    replica_ports = [free_port() for _ in range(replicas)]
    sentinel_ports = [free_port() for _ in range(sentinels)]
    topology = SentinelSet([master, *replica_ports], sentinel_ports)
    with ExitStack() as stack:
        topology.servers[master] = stack.enter_context(
            redis_process(master, tmp_path / f"redis-{master}")
        )
        for replica in replica_ports:
            topology.servers[replica] = stack.enter_context(
                redis_process(
                    replica, tmp_path / f"redis-{replica}", "--replicaof", "127.0.0.1", str(master)
                )
            )
        for port in sentinel_ports:
            work = tmp_path / f"sentinel-{port}"
            work.mkdir()
            config = work / "sentinel.conf"  # a sentinel rewrites its own config: its own copy
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {work}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {master} 1\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
            )
            args = [binary("redis-server"), str(config), "--sentinel"]
            stack.enter_context(process(args, {}, log_path=work / "sentinel.log"))
            client = raw(port)
            wait_for(lambda client=client: answers(client), timeout=10, what=f"sentinel {port}")
        wait_for(topology.in_sync, timeout=20, what="the replica to sync with the master")
        wait_for(topology.replicas_known, timeout=20, what="the sentinels to see the replica")
        yield topology


@dataclass
class Cluster:
    ports: list[int]
    servers: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]},127.0.0.1:{self.ports[1]}"

    def shard_of(self, key: str) -> list[int]:
        """The ports of the master that holds `key`'s slot, then of its replicas."""
        slot = int(raw(self.ports[0]).execute_command("CLUSTER", "KEYSLOT", key))
        for start, end, *nodes in raw(self.ports[0]).execute_command("CLUSTER", "SLOTS"):
            if int(start) <= slot <= int(end):
                return [int(node[1]) for node in nodes]
        raise AssertionError(f"no node holds slot {slot}")

    def node_of(self, key: str) -> int:
        """The port of the master that holds `key`'s slot."""
        return self.shard_of(key)[0]

    def failover(self, key: str) -> int:
        """A manual CLUSTER FAILOVER of `key`'s shard (the replica takes over once it has every
        write); returns the new master's port once every node agrees."""
        old, replica = self.shard_of(key)[:2]
        raw(replica).execute_command("CLUSTER", "FAILOVER")

        def switched() -> bool:
            try:
                return all(
                    _shard_seen_by(port, key)[0] == replica for port in self.ports if port != old
                )
            except redis_lib.RedisError:
                return False

        wait_for(switched, timeout=20, what=f"the cluster to make {replica} the master")
        return replica


def _shard_seen_by(port: int, key: str) -> list[int]:
    return Cluster([port, port]).shard_of(key)


@contextmanager
def cluster(tmp_path: Path, *, masters: int = 3, replicas: int = 0) -> Iterator[Cluster]:
    ports = [free_port() for _ in range(masters * (1 + replicas))]
    servers: dict[int, subprocess.Popen[bytes]] = {}
    with ExitStack() as stack:
        for port in ports:
            work = tmp_path / f"cluster-{port}"
            cluster_mode = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            # Its own free bus port: the default (port + 10000) may be taken or out of range.
            cluster_mode += ["--cluster-port", str(free_port()), "--cluster-node-timeout", "2000"]
            servers[port] = stack.enter_context(redis_process(port, work, *cluster_mode))
        nodes = [f"127.0.0.1:{port}" for port in ports]
        create = [binary("redis-cli"), "--cluster", "create", *nodes, "--cluster-yes"]
        created = subprocess.run(
            [*create, "--cluster-replicas", str(replicas)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert created.returncode == 0, created.stdout + created.stderr

        def ready() -> bool:
            if not all(
                "cluster_state:ok" in raw(p).execute_command("CLUSTER", "INFO") for p in ports
            ):
                return False
            shards = raw(ports[0]).execute_command("CLUSTER", "SLOTS")
            return all(len(shard) - 3 == replicas for shard in shards)

        wait_for(ready, timeout=30, what="every cluster node to report cluster_state:ok")
        yield Cluster(ports, servers)


def send_until_accepted(client: FlaskClient, payload: dict, refused: list[int]) -> list[str]:
    """POST until the router answers 202; returns the delivery ids it acknowledged."""
    answers: list[int] = []

    def accepted() -> list[str] | None:
        answer = client.post("/webhooks/datadog", json=payload, headers=AUTH)
        answers.append(answer.status_code)
        if answer.status_code == 202:
            return [d["id"] for d in answer.get_json()["deliveries"]]
        assert answer.status_code == 503, answer.get_data(as_text=True)
        refused.append(answer.status_code)
        return None

    return wait_for(accepted, timeout=SENDER_PATIENCE_S, interval=0.1, what=f"a 202 ({answers})")


def write_until_done(write: object) -> None:
    """Call a breaker write until Redis takes it: the first after a failover may meet a
    connection the old master dropped (BreakerStoreUnavailable), as a callback retry would."""

    def attempt() -> bool:
        try:
            write()  # type: ignore[operator]
        except BreakerStoreUnavailable:
            return False
        return True

    wait_for(attempt, timeout=15, interval=0.1, what="a breaker write after the failover")
