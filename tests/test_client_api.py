"""breaker_client's public surface, its import footprint, key names and argument checks."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import breaker_client
import fakeredis
import pytest
import redis as redis_lib
from breaker_client import Breakers

from router.keys import DEFAULT_BREAKER_PREFIX, BreakerKeys, RouterKeys

ROOT = Path(__file__).resolve().parent.parent


def test_public_names_are_pinned() -> None:
    assert sorted(breaker_client.__all__) == [
        "BreakerError",
        "BreakerOpen",
        "BreakerState",
        "BreakerStoreUnavailable",
        "Breakers",
        "CallbackEndpoint",
        "CallbackEvent",
        "CallbackResponse",
        "EnrichmentInfo",
        "Event",
        "FailMode",
        "Group",
        "GroupStatus",
        "HistoryEntry",
        "InvalidCallbackBody",
        "InvalidSignature",
        "Monitor",
        "MonitorState",
        "Scope",
        "SignatureVerifier",
        "State",
        "WriteResult",
        "apply_callback",
        "callback_asgi_app",
        "callback_blueprint",
        "callback_wsgi_app",
        "parse_callback_body",
        "process_callback",
        "sign_headers",
        "tag_value",
        "verify_callback",
        "verify_signature",
    ]
    for name in breaker_client.__all__:
        assert hasattr(breaker_client, name), name


def test_errors_form_one_tree() -> None:
    for name in (
        "BreakerOpen",
        "BreakerStoreUnavailable",
        "InvalidSignature",
        "InvalidCallbackBody",
    ):
        assert issubclass(getattr(breaker_client, name), breaker_client.BreakerError)


def test_import_needs_only_redis() -> None:
    """Every third-party import except redis fails in this interpreter, and the import works."""
    code = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("redis", "breaker_client"):
                    return None
                if top.startswith("__editable__") or top == "_distutils_hack":
                    return None  # how pip's editable install finds the package
                raise ImportError(f"blocked for this test: {name}")
        sys.meta_path.insert(0, Block())
        import breaker_client
        from breaker_client import Breakers, callback_blueprint, verify_callback
        assert "flask" not in sys.modules and "standardwebhooks" not in sys.modules
        print("imported")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "imported"


def test_import_with_flask_set_to_none() -> None:
    code = "import sys; sys.modules['flask'] = None; import breaker_client; print('ok')"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr


def test_breaker_keys_use_one_format() -> None:
    keys = BreakerKeys()
    assert keys.prefix == DEFAULT_BREAKER_PREFIX == "breakers"
    assert keys.index == "breakers:index"
    assert keys.channel == "breakers:changes"
    assert keys.record("bank-charge:0001") == "breakers:state:bank-charge:0001"
    assert keys.history("bank-charge") == "breakers:history:bank-charge"
    assert keys.delivery_seen("d-1") == "breakers:seen:d-1"
    assert keys.record_prefix == "breakers:state:"
    assert BreakerKeys.member("bank-charge", None) == "bank-charge"
    assert BreakerKeys.member("bank-charge", "a:b") == "bank-charge:a:b"
    assert BreakerKeys.split_member("bank-charge:a:b") == ("bank-charge", "a:b")
    assert BreakerKeys.split_member("bank-charge") == ("bank-charge", None)
    assert RouterKeys().stream == "br:deliveries"  # untouched


def test_rejects_a_client_without_decoded_responses(redis_url: str) -> None:
    client = redis_lib.Redis.from_url(redis_url)
    try:
        with pytest.raises(ValueError, match="decode_responses=True"):
            Breakers(client, sync=False)
    finally:
        client.close()


@pytest.mark.parametrize(
    ("name", "key"),
    [("bank:charge", None), ("", None), ("bank charge", None), ("bank-charge", "")],
)
def test_rejects_bad_breaker_names_and_keys(name: str, key: str | None) -> None:
    breakers = Breakers(fakeredis.FakeRedis(decode_responses=True), sync=False)
    with pytest.raises(ValueError, match="breaker"):
        breakers.open(name, key, reason="x")


def test_rejects_bad_arguments() -> None:
    breakers = Breakers(fakeredis.FakeRedis(decode_responses=True), sync=False)
    with pytest.raises(ValueError, match="version"):
        breakers.open("bank-charge", reason="x", version="1700000000000")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="by"):
        breakers.force_open("bank-charge", reason="x", by="")
    with pytest.raises(ValueError, match="expires_in"):
        breakers.force_open("bank-charge", reason="x", by="ana", expires_in=0)
    with pytest.raises(ValueError, match="fail_mode"):
        Breakers(fakeredis.FakeRedis(decode_responses=True), fail_mode="open", sync=False)  # type: ignore[arg-type]


def test_scripts_run_on_fakeredis_lua() -> None:
    """`router dev` may run on fakeredis: the same Lua must work there."""
    now = [1_700_000_000.0]
    breakers = Breakers(
        fakeredis.FakeRedis(decode_responses=True), sync=False, clock=lambda: now[0]
    )
    assert breakers.open("bank-charge", "0001", reason="alert", version=1_700_000_000_123).changed
    assert breakers.open("bank-charge", "0001", reason="old", version=1).outcome == "stale"
    assert breakers.force_open("bank-charge", reason="maint", by="ana", expires_in=10).forced
    results = breakers.apply_snapshot(
        "bank-charge", {"0001": "OK", "0002": "Alert"}, reason="snap", version=1_700_000_000_200
    )
    assert [(r.key, r.new_state) for r in results] == [("0001", "recovering"), ("0002", "open")]
    now[0] += 11
    assert breakers.clear_override("bank-charge", reason="done", by="ana").outcome == "unchanged"
    assert breakers.refresh() == 3
    assert breakers.is_open("bank-charge", "0002")
    assert breakers.state("bank-charge", "0001").version == 1_700_000_000_200
    assert breakers.history("bank-charge")[0].action == "override_expired"


def test_router_client_is_the_name_design_gives_the_same_modules() -> None:
    code = textwrap.dedent(
        """
        import breaker_client, breaker_client.flask, breaker_client.errors
        from router.client import Breakers, BreakerOpen
        import router.client.flask
        from router.client.errors import BreakerError
        assert Breakers is breaker_client.Breakers and BreakerOpen is breaker_client.BreakerOpen
        assert router.client is breaker_client
        assert router.client.flask is breaker_client.flask
        assert BreakerError is breaker_client.errors.BreakerError
        print("same")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "same"
