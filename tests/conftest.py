"""Shared fixtures: a real Redis server, isolated key prefixes, free loopback ports."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest
import redis as redis_lib
from flask import Flask
from flask.testing import FlaskClient

# The suite needs a real Redis; `.ci/run` starts one when none answers.
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis_lib.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis_lib.RedisError as exc:
        pytest.fail(
            f"no Redis answers at {TEST_REDIS_URL} ({exc}); start one with "
            "`redis-server --port 6379 --save '' --daemonize yes` or set TEST_REDIS_URL",
            pytrace=False,
        )
    finally:
        client.close()
    return TEST_REDIS_URL


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis_lib.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis(redis_url: str, key_prefix: str) -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def app(redis_url: str, key_prefix: str) -> Flask:
    """The router web app on the test Redis and prefix (override `app` for other settings)."""
    from router.app import create_app
    from tests.support import router_env

    return create_app(router_env(redis_url, key_prefix))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
