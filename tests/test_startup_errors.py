"""A user's mistake at start-up is one line per problem, every problem at once, no traceback.

The web (gunicorn, as the Procfile runs it), the worker and the CLI, each as a real process.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from router.config import settings_for
from router.errors import ConfigError
from tests.conftest import free_port
from tests.support import ROOT, SIGNING_SECRET

START_TIMEOUT_S = 30


def clean_env(**env: str) -> dict[str, str]:
    """The test's environment without any router setting, plus `env`."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REDIS_URL", "ROUTER_", "DD_", "SLACK_", "BREAKERS_"))
    }
    return {**base, **env}


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        env=clean_env(**env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
    )


def web(**env: str) -> subprocess.CompletedProcess[str]:
    port = str(free_port())
    args = [sys.executable, "-m", "gunicorn", "--config", "python:router.gunicorn_conf"]
    args += ["--bind", f"127.0.0.1:{port}", "--no-control-socket", "router.app:create_app()"]
    return run(args, **env)


def worker(**env: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "router", "worker"], **env)


def lines(text: str) -> list[str]:
    return text.strip().splitlines()


def web_problems(stderr: str) -> list[str]:
    """The web's lines after gunicorn's own "Starting gunicorn", which the check follows."""
    found = lines(stderr)
    assert "Starting gunicorn" in found[0], found
    return found[1:]


def test_web_without_a_token_says_so_in_one_line_before_any_worker_boots():
    result = web(REDIS_URL="redis://127.0.0.1:6379/0")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = web_problems(result.stderr)
    assert line.startswith("router web: configuration error: ROUTER_INBOUND_TOKEN is not set")
    assert "openssl rand -hex 32" in line and "ROUTER_INBOUND_AUTH=none" in line


def test_web_reports_every_missing_or_malformed_setting_at_once():
    result = web(ROUTER_RETRY_SCHEDULE="5s,soon", ROUTER_INBOUND_AUTH="off")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    found = web_problems(result.stderr)
    assert len(found) == 4, found
    assert all(line.startswith("router web: configuration error: ") for line in found)
    text = "\n".join(found)
    assert "ROUTER_RETRY_SCHEDULE: expected a duration" in text
    assert "ROUTER_INBOUND_AUTH: expected 'token' or 'none', got 'off'" in text
    assert "REDIS_URL is not set: point it at the Redis the router uses, e.g. redis://" in text
    assert "ROUTER_INBOUND_TOKEN is not set" in text


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:6379/0", "unknown scheme http://"),
        ("127.0.0.1:6379", "unknown scheme (none)"),
    ],
)
def test_worker_with_a_malformed_redis_url_names_it_with_an_example(url, problem):
    result = worker(
        REDIS_URL=url,
        ROUTER_SIGNING_SECRET=SIGNING_SECRET,
        ROUTER_CALLBACK_ALLOW="http://127.0.0.1/",
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = lines(result.stderr)
    assert line.startswith(f"router: configuration error: REDIS_URL: {problem}, got {url!r}")
    assert "expected a URL such as redis://localhost:6379/0" in line


def test_worker_names_each_missing_secret_and_setting_at_once():
    result = worker(REDIS_URL="redis://127.0.0.1:6379/0")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    found = lines(result.stderr)
    assert [line.split(":")[2].split()[0] for line in found] == [
        "ROUTER_SIGNING_SECRET",
        "ROUTER_CALLBACK_ALLOW",
    ]
    assert "`router secret`" in found[0] and "whsec_" in found[0]
    assert "https://bank-charge.internal/breaker/" in found[1]


def test_a_malformed_secret_is_reported_once_not_also_as_missing():
    with pytest.raises(ConfigError) as caught:
        settings_for(
            {"REDIS_URL": "redis://x/0", "ROUTER_SIGNING_SECRET": "hunter2"}, "redis", "worker"
        )
    problems = caught.value.problems
    assert [p.split()[0] for p in problems] == ["ROUTER_SIGNING_SECRET:", "ROUTER_CALLBACK_ALLOW"]
    assert "hunter2" not in str(caught.value)


def test_an_unreadable_secret_file_is_reported_once():
    with pytest.raises(ConfigError) as caught:
        settings_for(
            {
                "REDIS_URL": "redis://x/0",
                "ROUTER_SIGNING_SECRET_FILE": "/nonexistent/secret",
                "ROUTER_CALLBACK_ALLOW": "http://127.0.0.1/",
            },
            "worker",
        )
    [problem] = caught.value.problems
    assert problem.startswith("ROUTER_SIGNING_SECRET_FILE: cannot read /nonexistent/secret")


def test_redis_url_credentials_are_masked_in_the_message():
    with pytest.raises(ConfigError) as caught:
        settings_for({"REDIS_URL": "http://user:s3cret@redis.internal:6379/0"})
    assert "s3cret" not in str(caught.value)
    assert "'http://user:***@redis.internal:6379/0'" in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "rediss://:pw@redis.internal:6380/1",
        "unix:///run/redis.sock?db=2",
        "redis+sentinel://sentinel-1:26379,sentinel-2:26379/mymaster/0",
        "redis+cluster://node-1:7000,node-2:7001",
    ],
)
def test_good_redis_urls_pass(url):
    assert settings_for({"REDIS_URL": url}, "redis").redis_url == url


def test_cli_with_redis_unreachable_for_breakers_is_one_line():
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = run([sys.executable, "-m", "router", "breakers", "list"], REDIS_URL=url)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = lines(result.stderr)
    assert line.startswith("router: breaker store unavailable while trying to read all breakers")
    assert f"127.0.0.1:{url.split(':')[2].split('/')[0]}" in line
    assert "check REDIS_URL or --redis-url, e.g. redis://localhost:6379/0" in line


def test_cli_with_a_malformed_breakers_redis_url_is_one_line():
    result = run(
        [sys.executable, "-m", "router", "breakers", "list", "--redis-url", "localhost:6379"]
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = lines(result.stderr)
    assert line.startswith("router: configuration error: REDIS_URL: unknown scheme (none)")
