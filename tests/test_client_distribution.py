"""`breaker-client` installed alone in a fresh virtualenv runs a service's callback and is_open.

The one test of the distribution as a service gets it: `pip install` of `client/` (not
editable, from a copy, so the repository is left untouched), whose only dependency is redis.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.client_support import SECRET, signed

ROOT = Path(__file__).resolve().parent.parent
# Building the wheel and fetching redis from the package index: seconds normally, bounded.
PIP_TIMEOUT_S = 300
# What a service must not get by installing the client.
ROUTER_ONLY = {"flask", "gunicorn", "datadog-api-client", "httpx", "standardwebhooks"}

SERVICE = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from importlib.metadata import distributions
    import breaker_client
    from breaker_client import Breakers, CallbackEndpoint, apply_callback

    request = json.load(sys.stdin)
    breakers = Breakers.from_url(os.environ["REDIS_URL"], prefix=os.environ["PREFIX"])
    endpoint = CallbackEndpoint(
        breakers,
        os.environ["ROUTER_SIGNING_SECRET"],
        lambda event: apply_callback(breakers, event, "bank-charge", tag="bank_code"),
    )
    plain = endpoint(request["headers"], request["body"].encode())
    # The same delivery again, as an asyncio service would hand it over: a duplicate.
    again = asyncio.run(endpoint.handle_async(request["headers"], request["body"].encode()))
    print(json.dumps({
        "module": breaker_client.__file__,
        "distributions": sorted(d.metadata["Name"].lower() for d in distributions()),
        "status": plain.status,
        "again": again.body,
        "is_open": breakers.is_open("bank-charge", "0001"),
        "other_key_open": breakers.is_open("bank-charge", "0002"),
    }))
    breakers.stop()
    """
)


# pytest's 60 s default is for tests that need no package index; the pip runs are bounded.
@pytest.mark.timeout(PIP_TIMEOUT_S + 120)
def test_the_client_installed_alone_applies_a_callback(
    tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    source = tmp_path / "client"
    shutil.copytree(
        ROOT / "client", source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    installed = subprocess.run(
        [*pip, str(source)], capture_output=True, text=True, timeout=PIP_TIMEOUT_S
    )
    assert installed.returncode == 0, installed.stderr

    body, headers = signed(delivery_id="d-venv")
    request = json.dumps({"headers": headers, "body": body.decode()})
    service = tmp_path / "service.py"
    service.write_text(SERVICE)
    env = {
        "REDIS_URL": redis_url,
        "PREFIX": key_prefix,
        "ROUTER_SIGNING_SECRET": SECRET,
        "PATH": "/usr/bin:/bin",
    }
    ran = subprocess.run(
        [str(python), str(service)],
        input=request,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,  # not the repository: only the installed copy can be imported
        env=env,
    )
    assert ran.returncode == 0, ran.stderr
    seen = json.loads(ran.stdout)
    assert seen["module"].startswith(str(venv)), seen["module"]
    assert "breaker-client" in seen["distributions"] and "redis" in seen["distributions"]
    assert ROUTER_ONLY.isdisjoint(seen["distributions"]), seen["distributions"]
    assert seen["status"] == 200
    assert seen["again"] == {"duplicate": True, "webhook_id": "d-venv"}
    assert seen["is_open"] is True and seen["other_key_open"] is False
