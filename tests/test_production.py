"""docs/production.md's steps, each run: the Procfile's web twice on one host, the start-up
check of Redis, the variables and metrics it names, and the README's service snippet."""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis as redis_lib
from breaker_client import sign_headers
from flask.testing import FlaskClient

from router.callback_body import build_callback_body
from router.redis_check import WARNING_MARK, durability_warnings
from tests.conftest import free_port
from tests.payloads import custom_payload
from tests.support import (
    INBOUND_TOKEN,
    ROOT,
    SIGNING_SECRET,
    process,
    router_env,
    wait_for,
    wait_http,
)
from tests.test_client_callback import enrichment, notification

GUIDE = (ROOT / "docs" / "production.md").read_text()
README = (ROOT / "README.md").read_text()
OTHER_SECRET = "whsec_c2VjcmV0LW9mLXNvbWVvbmUtZWxzZQ=="


@contextmanager
def redis_server(tmp_path: Path, *args: str) -> Iterator[str]:
    """A redis-server of the test's own, as production would not run it (`args`)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not on the PATH (apt-get install redis-server)", pytrace=False)
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", *args]
    with process(command, {}, log_path=tmp_path / f"redis-{port}.log"):
        client = redis_lib.Redis(port=port, socket_connect_timeout=0.2)
        wait_for(lambda: _pings(client), timeout=10, what=f"redis-server on {port}")
        yield f"redis://127.0.0.1:{port}/0"


def _pings(client: redis_lib.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis_lib.RedisError:
        return False


def procfile_command(kind: str) -> str:
    [line] = [
        line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith(kind)
    ]
    return line.split(":", 1)[1].strip()


def test_two_procfile_web_processes_on_one_host(
    tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    # As the Procfile runs it: its own shell expands $PORT and WEB_CONCURRENCY.
    # `exec`: the shell becomes gunicorn, so stopping the process by pid stops gunicorn.
    command = "exec " + procfile_command("web").replace(
        "gunicorn ", f"{sys.executable} -m gunicorn ", 1
    )
    home = tmp_path / "home"  # where gunicorn would put its per-user control socket
    home.mkdir()
    ports = [free_port(), free_port()]
    env = router_env(redis_url, key_prefix, HOME=str(home), WEB_CONCURRENCY="1")
    with (
        process(["sh", "-c", command], {**env, "PORT": str(ports[0])}, log_path=tmp_path / "a"),
        process(["sh", "-c", command], {**env, "PORT": str(ports[1])}, log_path=tmp_path / "b"),
    ):
        for port in ports:
            wait_http(f"http://127.0.0.1:{port}/healthz", timeout=30)
        assert not (home / ".gunicorn").exists(), "a control socket two web processes share"
        for port, log in zip(ports, ("a", "b"), strict=True):
            assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
            text = (tmp_path / log).read_text()
            assert len(re.findall(r"Booting worker with pid", text)) == 1  # WEB_CONCURRENCY=1
    assert "--no-control-socket" in procfile_command("web")
    assert procfile_command("web") in GUIDE and procfile_command("web") in README


def test_web_and_worker_warn_about_a_redis_that_would_lose_work(
    tmp_path: Path, key_prefix: str
) -> None:
    with redis_server(tmp_path, "--appendonly", "no", "--maxmemory-policy", "allkeys-lru") as url:
        env = router_env(url, key_prefix)
        port = free_port()
        web = [sys.executable, "-m", "gunicorn", "--config", "python:router.gunicorn_conf"]
        web += ["--bind", f"127.0.0.1:{port}", "--no-control-socket", "router.app:create_app()"]
        worker = [sys.executable, "-m", "router", "worker"]
        with (
            process(web, env, log_path=tmp_path / "web.log"),
            process(worker, env, log_path=tmp_path / "worker.log"),
        ):
            wait_http(f"http://127.0.0.1:{port}/healthz", timeout=30)
            for log in ("web.log", "worker.log"):
                wait_for(
                    lambda log=log: "maxmemory-policy" in (tmp_path / log).read_text(),
                    timeout=30,
                    what=f"the start-up check in {log}",
                )
                lines = [
                    line
                    for line in (tmp_path / log).read_text().splitlines()
                    if WARNING_MARK in line
                ]
                assert len(lines) == 2, lines
                assert " WARNING router.redis_check " in lines[0]
                assert (
                    "Redis runs with appendonly no: a restart loses every queued delivery"
                    in (lines[0])
                )
                assert "maxmemory-policy allkeys-lru" in lines[1] and "noeviction" in lines[1]


def test_a_redis_that_keeps_its_work_gets_no_warning(tmp_path: Path) -> None:
    args = ("--appendonly", "yes", "--dir", str(tmp_path), "--maxmemory-policy", "noeviction")
    with redis_server(tmp_path, *args) as url:
        assert durability_warnings(redis_lib.Redis.from_url(url)) == []


def test_a_redis_refusing_config_is_said_not_checked(tmp_path: Path) -> None:
    # Managed Redis services rename or disable CONFIG.
    with redis_server(tmp_path, "--rename-command", "CONFIG", "") as url:
        [warning] = durability_warnings(redis_lib.Redis.from_url(url))
    assert warning.startswith("could not check Redis persistence and eviction (CONFIG GET refused")
    assert "appendonly yes and maxmemory-policy noeviction" in warning


def variables_the_router_reads() -> set[str]:
    sources = [ROOT / "router" / "config.py", ROOT / "router" / "redis_conn.py"]
    text = "\n".join(path.read_text() for path in sources)
    found = set(re.findall(r'"((?:ROUTER|DD|REDIS|SLACK|BREAKERS)_[A-Z0-9_]+)"', text))
    return {name for name in found if not name.endswith("_FILE")}


def test_the_guide_lists_every_variable_the_router_reads() -> None:
    variables = variables_the_router_reads()
    assert {"REDIS_URL", "ROUTER_INBOUND_TOKEN", "ROUTER_SIGNING_SECRET"} <= variables
    missing = sorted(v for v in variables if f"`{v}`" not in GUIDE and f"`{v}`" not in README)
    assert missing == [], "settings neither docs/production.md nor the README names"
    for name in ("PORT", "WEB_CONCURRENCY"):
        assert f"`{name}`" in GUIDE


def test_the_metrics_to_alert_on_exist(client: FlaskClient) -> None:
    alerts = GUIDE[GUIDE.index("## 10. What to alert on") : GUIDE.index("## Backed by")]
    named = set(re.findall(r"breaker_router_[a-z_]+", alerts))
    assert len(named) >= 7
    exposed = client.get("/metrics").get_data(as_text=True)
    # The last success is absent before the first cycle (the guide's alert covers absent()).
    missing = sorted(
        n
        for n in named
        if n not in exposed and n != "breaker_router_reconcile_last_success_timestamp_seconds"
    )
    assert missing == []
    assert "breaker_router_reconcile_last_success_timestamp_seconds" in (
        (ROOT / "docs" / "operations.md").read_text()
    )


def readme_service_snippet() -> str:
    marker = README.index("<!-- readme-service:")
    start = README.index("```python\n", marker) + len("```python\n")
    return README[start : README.index("```", start)]


def test_the_readme_service_snippet_runs_and_accepts_two_secrets(tmp_path: Path) -> None:
    snippet = tmp_path / "service.py"
    snippet.write_text(readme_service_snippet())
    body = json.dumps(
        build_callback_body("dlv_readme", notification(), enrichment(("0001", "Alert")))
    ).encode()
    # Run as a service would: its own process, the environment the snippet reads.
    check = f"""
import json, sys
sys.path.insert(0, {str(tmp_path)!r})
import service
client = service.app.test_client()
body = {body!r}
for n, secret in enumerate(({SIGNING_SECRET!r}, {OTHER_SECRET!r})):
    headers = json.loads(sys.argv[n + 1])
    print(client.post("/breaker/callback", data=body, headers=headers).status_code)
service.breakers.refresh()
try:
    service.charge("0001", 100)
except service.VendorUnavailable as exc:
    print("refused", exc)
print(service.charge("0002", 100))
"""
    headers = [
        json.dumps(sign_headers(body, secret, webhook_id=f"dlv_readme_{n}"))
        for n, secret in enumerate((SIGNING_SECRET, OTHER_SECRET))
    ]
    with redis_server(tmp_path) as url:
        result = subprocess.run(
            [sys.executable, "-c", check, *headers],
            env={
                **os.environ,
                "REDIS_URL": url,
                "ROUTER_SIGNING_SECRET": f"{OTHER_SECRET},{SIGNING_SECRET}",
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "200",
        "200",
        "refused 0001",
        "{'bank_code': '0002', 'amount': 100}",
    ]
    assert "pip install ./client" in README and (ROOT / "client" / "pyproject.toml").exists()


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for router.example.com and 127.0.0.1, and its key."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "router.example.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("router.example.com"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "router.pem", tmp_path / "router.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def guide_nginx_block() -> str:
    start = GUIDE.index("```nginx\n") + len("```nginx\n")
    return GUIDE[start : GUIDE.index("```", start)]


def test_the_guides_nginx_config_serves_the_webhooks_over_https_and_nothing_else(
    tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if nginx is None:
        pytest.fail("nginx is not installed (scripts/ensure-test-tools installs it)", pytrace=False)
    cert, key = self_signed(tmp_path)
    web_port, https_port = free_port(), free_port()
    server = (
        guide_nginx_block()
        .replace("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;")
        .replace("127.0.0.1:8000;", f"127.0.0.1:{web_port};")
        .replace("127.0.0.1:8010;", f"127.0.0.1:{web_port};")
        .replace("/etc/ssl/router.example.com.pem", str(cert))
        .replace("/etc/ssl/router.example.com.key", str(key))
    )
    # What a distribution's nginx.conf around conf.d/ provides, in the test's directory.
    user = "user root;\n" if os.getuid() == 0 else ""
    (tmp_path / "nginx.conf").write_text(
        f"{user}daemon off;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        "events {}\n"
        f"http {{\naccess_log off;\nclient_body_temp_path {tmp_path}/body;\n"
        f"proxy_temp_path {tmp_path}/proxy;\n{server}\n}}\n"
    )
    web = [sys.executable, "-m", "gunicorn", "--config", "python:router.gunicorn_conf"]
    web += ["--bind", f"127.0.0.1:{web_port}", "--no-control-socket", "router.app:create_app()"]
    proxy = [
        nginx,
        "-p",
        str(tmp_path),
        "-e",
        f"{tmp_path}/error.log",
        "-c",
        f"{tmp_path}/nginx.conf",
    ]
    env = router_env(redis_url, key_prefix)
    with (
        process(web, env, log_path=tmp_path / "web.log"),
        process(proxy, {}, log_path=tmp_path / "nginx.log"),
    ):
        wait_http(f"http://127.0.0.1:{web_port}/healthz", timeout=30)
        base = f"https://127.0.0.1:{https_port}"
        trust = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(verify=trust, timeout=10) as https:
            wait_for(lambda: _answers(https, f"{base}/healthz"), timeout=15, what="nginx")
            payload = custom_payload("http://127.0.0.1:9/breaker/callback")
            accepted = https.post(
                f"{base}/webhooks/datadog",
                json=payload,
                headers={"Authorization": f"Bearer {INBOUND_TOKEN}"},
            )
            assert accepted.status_code == 202, accepted.text
            assert accepted.json()["status"] == "queued"
            refused = https.post(f"{base}/webhooks/datadog", json=payload)
            assert refused.status_code == 401  # the token is checked behind the proxy too
            for private in ("/ui", "/metrics", "/api/health", "/readyz"):
                assert https.get(f"{base}{private}").status_code == 403


def _answers(client: httpx.Client, url: str) -> bool:
    try:
        client.get(url)
    except httpx.HTTPError:
        return False
    return True
