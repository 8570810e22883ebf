"""REDIS_URL forms (one server, Sentinel, Cluster), their errors, the Cluster hash tags, and
ROUTER_REDIS_WAIT_REPLICAS refusing a 202 that no replica confirmed."""

from __future__ import annotations

import pytest
import redis.cluster
import redis.sentinel
from breaker_client import Breakers
from breaker_client.connect import (
    RedisUrlError,
    connect,
    hash_tagged,
    parse_redis_url,
)

from router.app import create_app
from router.config import Settings
from router.errors import ConfigError
from router.redis_conn import connect as router_connect
from tests.conftest import free_port
from tests.payloads import custom_payload
from tests.support import INBOUND_TOKEN, router_env

AUTH = {"Authorization": f"Bearer {INBOUND_TOKEN}"}


def test_a_sentinel_url_names_every_sentinel_the_service_and_the_db():
    target = parse_redis_url(
        "redis+sentinel://:s3cret@sentinel-1:26379,sentinel-2:26380,[::1]/mymaster/2"
        "?sentinel_password=other"
    )
    assert target.kind == "sentinel"
    assert target.nodes == (("sentinel-1", 26379), ("sentinel-2", 26380), ("::1", 26379))
    assert (target.service_name, target.db) == ("mymaster", 2)
    assert (target.password, target.sentinel_password) == ("s3cret", "other")


def test_a_cluster_url_names_its_startup_nodes():
    target = parse_redis_url("redis+cluster://user:pw@node-1:7000,node-2")
    assert target.is_cluster
    assert target.nodes == (("node-1", 7000), ("node-2", 6379))
    assert (target.username, target.password) == ("user", "pw")


@pytest.mark.parametrize(
    "url",
    ["redis://localhost:6379/0", "rediss://:pw@cache.internal:6380/1", "unix:///run/redis.sock"],
)
def test_one_server_urls_stay_what_redis_py_reads(url):
    assert parse_redis_url(url).kind == "server"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://localhost:6379", "unknown scheme http://"),
        ("localhost:6379", "unknown scheme"),
        ("redis+sentinel://:pw@sentinel-1:26379", "names the master's service"),
        ("redis+sentinel://sentinel-1:26379/mymaster/zero", "database must be a number"),
        ("redis+sentinel://sentinel-1:port/mymaster", "no valid port"),
        ("redis+sentinel://sentinel-1:26379,/mymaster", "has no host"),
        ("redis+sentinel://s:26379/mymaster?sentinel_pasword=x", "unknown option"),
        ("redis+cluster://node-1:7000/3", "only database 0"),
        ("redis://:pw@a:6379,b:6379/0", "for several use redis+sentinel"),
        ("redis://localhost:6379/zero", "database must be a number"),
        ("unix://", "socket's path"),
    ],
)
def test_a_malformed_url_says_what_is_wrong_with_examples_and_no_password(url, problem):
    with pytest.raises(RedisUrlError) as caught:
        parse_redis_url(url)
    message = str(caught.value)
    assert message.startswith("REDIS_URL: ") and problem in message
    assert "redis+sentinel://sentinel-1:26379,sentinel-2:26379/mymaster/0" in message
    assert ":pw@" not in message


def test_the_router_reports_a_malformed_url_as_a_config_error_at_start_up():
    with pytest.raises(ConfigError, match=r"REDIS_URL: .*names the master's service"):
        Settings.from_env({"REDIS_URL": "redis+sentinel://127.0.0.1:26379"})
    with pytest.raises(ConfigError, match="REDIS_URL: unknown scheme"):
        router_connect("memcached://127.0.0.1:11211")


def test_connect_builds_a_sentinel_or_cluster_client_without_touching_the_network():
    sentinel = connect("redis+sentinel://127.0.0.1:1/mymaster/3", decode_responses=True)
    pool = sentinel.connection_pool
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
    assert pool.service_name == "mymaster" and pool.connection_kwargs["db"] == 3
    # A cluster client reads the topology at once: nothing listens, so it says it cannot.
    with pytest.raises(redis.RedisError):
        connect("redis+cluster://127.0.0.1:1", socket_connect_timeout=0.2)


def test_a_cluster_url_puts_each_prefix_in_one_hash_slot_and_others_keep_their_names():
    cluster = Settings.from_env({"REDIS_URL": "redis+cluster://127.0.0.1:7000"})
    assert (cluster.key_prefix, cluster.breakers_prefix) == ("{br}", "{breakers}")
    tagged = Settings.from_env(
        {"REDIS_URL": "redis+cluster://127.0.0.1:7000", "ROUTER_KEY_PREFIX": "team-{a}"}
    )
    assert tagged.key_prefix == "team-{a}"
    for url in ("redis://127.0.0.1:6379/0", "redis+sentinel://127.0.0.1:26379/mymaster"):
        plain = Settings.from_env({"REDIS_URL": url})
        assert (plain.key_prefix, plain.breakers_prefix) == ("br", "breakers")
    # An empty tag `{}` hashes the whole key name, so it is no tag at all.
    assert hash_tagged("a{}b") == "{a{}b}"


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"ROUTER_REDIS_WAIT_REPLICAS": "one"}, "expected a whole number >= 0"),
        ({"ROUTER_REDIS_WAIT_REPLICAS": "-1"}, "expected a whole number >= 0"),
        ({"ROUTER_REDIS_WAIT_TIMEOUT": "soon"}, "ROUTER_REDIS_WAIT_TIMEOUT"),
    ],
)
def test_a_bad_wait_setting_stops_start_up_naming_it(env, problem):
    with pytest.raises(ConfigError, match=problem):
        Settings.from_env(env)


def test_an_enqueue_no_replica_confirms_is_a_503_and_the_retry_is_not_lost(
    redis_url, key_prefix, redis
):
    # The suite's Redis has no replica: WAIT 1 can never be satisfied.
    app = create_app(
        router_env(
            redis_url,
            key_prefix,
            ROUTER_REDIS_WAIT_REPLICAS="1",
            ROUTER_REDIS_WAIT_TIMEOUT="50ms",
        )
    )
    answer = app.test_client().post(
        "/webhooks/datadog", json=custom_payload("http://127.0.0.1:9/cb"), headers=AUTH
    )
    assert answer.status_code == 503
    assert "0 of 1 replicas (ROUTER_REDIS_WAIT_REPLICAS)" in answer.get_json()["error"]
    assert answer.headers["Retry-After"]
    # Stored anyway (at least once): the sender's retry finds it and is not a second delivery.
    assert redis.xlen(f"{key_prefix}:deliveries") == 1
    # And /readyz says why before any sender tries: no replica is connected at all.
    ready = app.test_client().get("/readyz")
    assert ready.status_code == 503
    assert (
        "only 0 replica(s) connected, ROUTER_REDIS_WAIT_REPLICAS needs 1"
        in (ready.get_json()["checks"]["redis"])
    )


def test_a_client_starts_while_no_sentinel_answers_and_answers_per_fail_mode():
    url = f"redis+sentinel://127.0.0.1:{free_port()}/mymaster"
    with Breakers.from_url(url, fail_mode="deny", startup_wait=0.5) as breakers:
        assert breakers.is_open("bank-charge", "0001")  # deny: nothing loaded yet
        assert breakers.stats()["connected"] is False
    with pytest.raises(redis.ConnectionError, match="REDIS_URL: no cluster node answered"):
        Breakers.from_url(f"redis+cluster://127.0.0.1:{free_port()}", sync=False)
