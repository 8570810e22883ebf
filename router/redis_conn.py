"""Redis connections with bounded waits: a stalled Redis must never hang a request or worker.

`REDIS_URL` may name one server, a Sentinel-watched master or a Cluster; the client library's
`breaker_client.connect` reads every form, so the router and the services agree on them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
import redis.cluster
import redis.exceptions
from breaker_client.connect import RedisTarget, RedisUrlError, hash_tagged, parse_redis_url
from breaker_client.connect import connect as connect_url

from router.errors import ConfigError

# A sender retries on our 503, so answering fast beats waiting long on a sick Redis.
CONNECT_TIMEOUT_S = 2.0
# Longer than the worker's blocking read (see router.worker.READ_BLOCK_MS).
SOCKET_TIMEOUT_S = 5.0


def connect(url: str) -> redis.Redis:
    try:
        return connect_url(
            url,
            decode_responses=True,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=SOCKET_TIMEOUT_S,
            health_check_interval=30,
            # Callers decide about retries (tenacity on enqueue, the worker loop's backoff).
            retry_on_timeout=False,
        )
    except RedisUrlError as exc:
        raise ConfigError(str(exc)) from exc


def redis_target(url: str) -> RedisTarget:
    """What `REDIS_URL` names; a malformed one is a ConfigError with good examples."""
    try:
        return parse_redis_url(url)
    except RedisUrlError as exc:
        raise ConfigError(str(exc)) from exc


def key_prefixes(url: str | None, router_prefix: str, breakers_prefix: str) -> tuple[str, str]:
    """The router's and the breakers' key prefixes: each a hash tag when `url` is a Cluster
    (every script touches several keys, which must then share one slot); unchanged otherwise,
    so the keys of an existing single server or Sentinel deployment keep their names."""
    if url and redis_target(url).is_cluster:
        return hash_tagged(router_prefix), hash_tagged(breakers_prefix)
    return router_prefix, breakers_prefix


def wait_replicas(text: str | None) -> int:
    """ROUTER_REDIS_WAIT_REPLICAS: how many replicas must confirm an enqueue before its 202."""
    if not text:
        return 0
    if not text.strip().isdigit():
        raise ConfigError(f"ROUTER_REDIS_WAIT_REPLICAS: expected a whole number >= 0, got {text!r}")
    return int(text)


# What a plain client on a cluster node meets when the slot moved or the node went away.
_TOPOLOGY_CHANGED = (
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.ConnectionError,
)


@contextmanager
def on_the_node_of(client: redis.Redis, key: str) -> Iterator[redis.Redis]:
    """`client`, or for a Cluster the plain client of the master that holds `key`'s slot.

    `WAIT` counts the replicas holding the writes of the connection it runs on, so a write and
    its `WAIT` must share one connection to that master; a cluster client would send `WAIT` to
    every master. When the slot has moved (a failover), the slot map is read again and a
    ConnectionError raised, which callers already retry.
    """
    if not isinstance(client, redis.cluster.RedisCluster):
        yield client
        return
    node = client.get_node_from_key(key)
    try:
        yield client.get_redis_connection(node)
    except _TOPOLOGY_CHANGED as exc:
        client.nodes_manager.initialize()
        raise redis.ConnectionError(f"the cluster moved {key!r} from {node.name}: {exc}") from exc


def missing_replicas(client: redis.Redis, key: str, wanted: int) -> str | None:
    """Why no enqueue can be confirmed now (fewer replicas of `key`'s master connected than
    ROUTER_REDIS_WAIT_REPLICAS asks for), or None when enough are."""
    if not wanted:
        return None
    with on_the_node_of(client, key) as node:
        info = node.info("replication")
    connected = int(info.get("connected_slaves", 0))
    if connected >= wanted:
        return None
    return (
        f"only {connected} replica(s) connected, ROUTER_REDIS_WAIT_REPLICAS needs {wanted}: "
        "every enqueue answers 503"
    )
