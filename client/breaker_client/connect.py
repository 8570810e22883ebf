"""One place that turns a `REDIS_URL` into a redis-py client: one server, Sentinel or Cluster.

    redis://[[user]:password@]host[:port][/db]       one server (rediss:// with TLS)
    unix://[[user]:password@]/path/to/redis.sock[?db=N]
    redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]
    redis+cluster://[[user]:password@]host:port[,host:port...]

Sentinel: the addresses are the sentinels'; the client asks them for the master of
`service_name` and asks again when a connection fails or the server says it became a replica,
so a failover costs the callers one failed command, not a restart. The credentials are the
master's; `?sentinel_password=...` authenticates to sentinels that have their own. Cluster: the
addresses are any reachable nodes, the client learns the rest from them. A cluster has only
database 0, and every key that one script touches must hash to one slot: `hash_tagged` makes a
key prefix do that. The router builds its clients here too, so both read `REDIS_URL` alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast
from urllib.parse import parse_qs, unquote, urlsplit

import redis
import redis.cluster
import redis.exceptions
import redis.sentinel

from breaker_client.errors import BreakerError

__all__ = [
    "RedisTarget",
    "RedisUrlError",
    "connect",
    "decodes_responses",
    "hash_tagged",
    "is_cluster",
    "parse_redis_url",
    "reset_after_fork",
]

Kind = Literal["server", "sentinel", "cluster"]

SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"
_SERVER_SCHEMES = ("redis", "rediss", "unix")
# What a person most likely meant, shown with every malformed URL.
EXAMPLES = (
    "redis://localhost:6379/0, "
    "redis+sentinel://sentinel-1:26379,sentinel-2:26379/mymaster/0 or "
    "redis+cluster://node-1:7000,node-2:7001"
)
DEFAULT_SENTINEL_PORT = 26379
DEFAULT_CLUSTER_PORT = 6379
# Query parameters the Sentinel and Cluster forms understand (the server forms: redis-py's).
_SENTINEL_OPTIONS = frozenset({"sentinel_password", "sentinel_username"})


class RedisUrlError(BreakerError, ValueError):
    """`REDIS_URL` is malformed; the message says what was wrong and shows good examples."""


@dataclass(frozen=True)
class RedisTarget:
    """A parsed `REDIS_URL` (the server forms keep the URL whole for redis-py to read)."""

    kind: Kind
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    service_name: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None

    @property
    def is_cluster(self) -> bool:
        return self.kind == "cluster"


def _redacted(url: str) -> str:
    """The URL with its password masked, for error messages and logs."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hosts = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{hosts}"


def _fail(url: str, problem: str) -> RedisUrlError:
    return RedisUrlError(
        f"REDIS_URL: {problem}, got {_redacted(url)!r}; expected a URL such as {EXAMPLES}"
    )


def _nodes(url: str, netloc: str, default_port: int) -> tuple[tuple[str, int], ...]:
    hosts = netloc.rpartition("@")[2]
    nodes = []
    for part in hosts.split(","):
        address = part.strip()
        if address.startswith("["):  # an IPv6 address: [::1] or [::1]:26379
            host, _bracket, rest = address[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else (rest or str(default_port))
        else:
            host, colon, port_text = address.rpartition(":")
            if not colon:
                host, port_text = port_text, str(default_port)
        if not host:
            raise _fail(url, f"the address {part.strip()!r} has no host")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise _fail(url, f"the address {part.strip()!r} has no valid port")
        nodes.append((host, int(port_text)))
    return tuple(nodes)


def _credentials(netloc: str) -> tuple[str | None, str | None]:
    userinfo, at, _hosts = netloc.rpartition("@")
    if not at:
        return None, None
    user, _colon, password = userinfo.partition(":")
    return unquote(user) or None, unquote(password) or None


def _db(url: str, text: str) -> int:
    if not text.isdigit():
        raise _fail(url, f"the database must be a number, not {text!r}")
    return int(text)


def parse_redis_url(url: str) -> RedisTarget:
    """Check `url` and say what it names; raises RedisUrlError naming what is wrong."""
    url = url.strip()
    scheme, sep, _rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in (*_SERVER_SCHEMES, SENTINEL_SCHEME, CLUSTER_SCHEME):
        raise _fail(url, f"unknown scheme {scheme + '://' if sep else '(none)'}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise _fail(url, str(exc)) from exc
    if scheme in _SERVER_SCHEMES:
        return _server(url, scheme, parts.netloc, parts.path)
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - (_SENTINEL_OPTIONS if scheme == SENTINEL_SCHEME else set()))
    if unknown:
        raise _fail(url, f"unknown option {unknown[0]!r}")
    username, password = _credentials(parts.netloc)
    path = [segment for segment in parts.path.split("/") if segment]
    if scheme == CLUSTER_SCHEME:
        if path and path != ["0"]:
            raise _fail(url, "a cluster has only database 0, so the URL takes no path")
        return RedisTarget(
            "cluster",
            url,
            _nodes(url, parts.netloc, DEFAULT_CLUSTER_PORT),
            username=username,
            password=password,
        )
    if not path or len(path) > 2:
        raise _fail(url, "a Sentinel URL names the master's service after the addresses")
    options = {name: values[-1] for name, values in query.items()}
    return RedisTarget(
        "sentinel",
        url,
        _nodes(url, parts.netloc, DEFAULT_SENTINEL_PORT),
        service_name=unquote(path[0]),
        db=_db(url, path[1]) if len(path) == 2 else 0,
        username=username,
        password=password,
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None,
    )


def _server(url: str, scheme: str, netloc: str, path: str) -> RedisTarget:
    if scheme == "unix":
        if not path:
            raise _fail(url, "a unix:// URL needs the socket's path")
        return RedisTarget("server", url)
    hosts = netloc.rpartition("@")[2]
    if "," in hosts:
        raise _fail(url, f"{scheme}:// names one server; for several use redis+sentinel://")
    if hosts:
        _nodes(url, netloc, DEFAULT_CLUSTER_PORT)
    segment = path.strip("/")
    if segment:
        _db(url, segment)
    return RedisTarget("server", url)


def hash_tagged(prefix: str) -> str:
    """`prefix` as a Redis Cluster hash tag (`br` -> `{br}`), unless it already holds one.

    Every key `<prefix>:...` then hashes to the slot of the tag, so one node holds them all and
    a script may touch any of them. Only Cluster clients use this: key names on one server or
    behind Sentinel stay as they always were, so existing data keeps its names.
    """
    start = prefix.find("{")
    end = prefix.find("}", start + 1) if start >= 0 else -1
    if start >= 0 and end > start + 1:
        return prefix
    return f"{{{prefix}}}"


def decodes_responses(client: redis.Redis) -> bool:
    """Whether `client` (a plain, Sentinel or Cluster client) returns str rather than bytes."""
    if isinstance(client, redis.cluster.RedisCluster):
        kwargs = client.get_connection_kwargs()
    else:
        kwargs = client.connection_pool.connection_kwargs
    return bool(kwargs.get("decode_responses"))


def is_cluster(client: redis.Redis) -> bool:
    return isinstance(client, redis.cluster.RedisCluster)


def reset_after_fork(client: redis.Redis) -> None:
    """In a forked child: new sockets from now on (the parent's stay the parent's)."""
    if isinstance(client, redis.cluster.RedisCluster):
        pools = [
            n.redis_connection.connection_pool for n in client.get_nodes() if n.redis_connection
        ]
    else:
        pools = [client.connection_pool]
    for pool in pools:
        pool.reset()


def connect(url: str, **options: Any) -> redis.Redis:
    """A client for `url` (any form above) with redis-py connection `options` for every node.

    A Cluster client is typed as `redis.Redis`: it serves the same commands, scripts and
    pipelines (one slot each), so callers keep one type.
    """
    target = parse_redis_url(url)
    if target.kind == "server":
        return redis.Redis.from_url(target.url, **options)
    auth: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.kind == "cluster":
        nodes = [
            redis.cluster.ClusterNode(host, port)  # type: ignore[no-untyped-call]
            for host, port in target.nodes
        ]
        # It retries timeouts itself, around its redirects and slot-map refreshes.
        options.pop("retry_on_timeout", None)
        try:
            cluster = redis.cluster.RedisCluster(startup_nodes=nodes, **auth, **options)
        except redis.exceptions.RedisClusterException as exc:
            # It reads the slot map at once; callers handle a Redis that is down as RedisError.
            raise redis.ConnectionError(f"REDIS_URL: no cluster node answered: {exc}") from exc
        return cast(redis.Redis, cluster)
    timeouts = {k: v for k, v in options.items() if k.startswith("socket_")}
    sentinels = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(target.nodes),
        sentinel_kwargs={
            **timeouts,
            "username": target.sentinel_username,
            "password": target.sentinel_password,
        },
    )
    assert target.service_name is not None
    master = sentinels.master_for(  # type: ignore[no-untyped-call]
        target.service_name, db=target.db, **auth, **options
    )
    return cast(redis.Redis, master)
