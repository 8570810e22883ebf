"""The `router` command: secrets, message lint, and dead letters against a real Redis."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis as redis_lib
from breaker_client import Breakers
from click.testing import CliRunner, Result
from standardwebhooks.webhooks import Webhook

from router.cli import cli
from router.config import Settings
from router.keys import RouterKeys
from router.model import Notification
from router.queue import DeliveryQueue
from tests.conftest import free_port
from tests.support import ROOT, router_env

CALLBACK = "https://bank-charge.internal/breaker/callback"
MESSAGE = f"""Charges failing for {{{{bank_code.name}}}}
{{{{#is_alert}}}}circuit-breaker-callback: {CALLBACK}{{{{/is_alert}}}}
{{{{#is_recovery}}}}circuit-breaker-callback: {CALLBACK}{{{{/is_recovery}}}}
@webhook-breaker-router
"""
NO_CALLBACK_MESSAGE = "Disk is full on {{host.name}} @webhook-breaker-router\n"
EXPECTED_LINT = {
    "alert": CALLBACK,
    "warning": "-",
    "warning_to_alert": CALLBACK,
    "alert_to_warning": "-",
    "alert_recovery": CALLBACK,
    "warning_recovery": CALLBACK,
    "no_data": "-",
    "no_data_recovery": CALLBACK,
    "renotify": CALLBACK,
}


def invoke(env: dict[str, str], *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, input=input, prog_name="router")


@pytest.fixture
def env(redis_url: str, key_prefix: str) -> dict[str, str]:
    return router_env(redis_url, key_prefix)


@pytest.fixture
def queue(redis: redis_lib.Redis, key_prefix: str) -> DeliveryQueue:
    dlq = DeliveryQueue(redis, RouterKeys(key_prefix), retention_s=60)
    dlq.ensure_group()
    return dlq


def notification(url: str, monitor_id: str = "12345") -> Notification:
    return Notification(
        source="datadog",
        dedup_key=f"datadog:{monitor_id}:{url}:alert",
        transition="alert",
        datadog_transition="Triggered",
        renotification=False,
        title="[Triggered] Bank 0001 charges failing",
        message=f"circuit-breaker-callback: {url}",
        callback_urls=(url,),
        received_at_ms=1_700_000_000_000,
        event_id="7001",
        monitor_id=monitor_id,
        scope="bank_code:0001",
    )


def queued(queue: DeliveryQueue, url: str, monitor_id: str = "12345") -> str:
    [enqueued] = queue.enqueue(notification(url, monitor_id))
    return enqueued.delivery_id


def dead(
    queue: DeliveryQueue, url: str, reason: str, *, statuses: tuple[int, ...] = (503, 410)
) -> str:
    """A delivery that failed once per status and was dead-lettered with `reason`."""
    delivery_id = queued(queue, url)
    [claim] = queue.read("cli-test", count=1, block_ms=10)
    assert claim.delivery_id == delivery_id
    delivery = queue.load(delivery_id)
    assert delivery is not None
    attempts = [
        {
            "n": n,
            "trigger": "first" if n == 1 else "retry",
            "at_ms": 1_700_000_000_000 + n,
            "duration_ms": 12 * n,
            "status": status,
            "error": f"HTTP {status}",
            "outcome": "retry" if status >= 500 else "permanent",
            "response": json.dumps({"status": status}),
        }
        for n, status in enumerate(statuses, start=1)
    ]
    # The attempts as the worker would have recorded them, one settle each.
    queue.redis.hset(
        queue.keys.delivery(delivery_id),
        mapping={"attempts": json.dumps(attempts), "attempt_count": len(attempts)},
    )
    queue.dead_letter(claim, delivery, reason)
    return delivery_id


# -- secret and lint-message ---------------------------------------------------------------


def test_secret_prints_a_signing_secret_that_settings_and_webhooks_accept():
    first = invoke({}, "secret")
    second = invoke({}, "secret")
    assert first.exit_code == 0 and second.exit_code == 0
    value = first.output.strip()
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", value), value
    assert len(base64.b64decode(value.removeprefix("whsec_"))) == 32
    assert Settings.from_env({"ROUTER_SIGNING_SECRET": value}).signing_secret == value
    Webhook(value)  # the library services verify with takes it too
    assert second.output.strip() != value


def lint_rows(output: str) -> dict[str, str]:
    rows = {}
    for line in output.splitlines():
        if line.startswith("note: "):
            continue
        transition, _, urls = line.partition("  ")
        rows[transition] = urls.strip()
    return rows


def test_lint_message_file_shows_what_each_transition_yields(tmp_path: Path):
    path = tmp_path / "message.txt"
    path.write_text(MESSAGE)
    result = invoke({}, "lint-message", str(path))
    assert result.exit_code == 0, result.output
    assert lint_rows(result.stdout) == EXPECTED_LINT
    assert result.stderr == ""


def test_lint_message_reads_stdin():
    result = invoke({}, "lint-message", "-", input=MESSAGE)
    assert result.exit_code == 0, result.output
    assert lint_rows(result.stdout) == EXPECTED_LINT


def test_lint_message_exits_1_when_no_transition_has_a_callback_line():
    result = invoke({}, "lint-message", "-", input=NO_CALLBACK_MESSAGE)
    assert result.exit_code == 1
    assert set(lint_rows(result.stdout).values()) == {"-"}
    assert len(lint_rows(result.stdout)) == len(EXPECTED_LINT)
    assert result.stderr == (
        'problem: no "circuit-breaker-callback:" line: no transition would call any service\n'
    )


def test_lint_message_uses_the_configured_keyword():
    message = "{{#is_alert}}breaker-hook: https://svc.internal/cb{{/is_alert}} @webhook-r\n"
    default = invoke({}, "lint-message", "-", input=message)
    configured = invoke(
        {"ROUTER_CALLBACK_KEYWORD": "breaker-hook"}, "lint-message", "-", input=message
    )
    assert default.exit_code == 1
    assert configured.exit_code == 0, configured.output
    assert lint_rows(configured.stdout)["alert"] == "https://svc.internal/cb"


OTHER_CALLBACK = "https://ledger.internal/breaker/callback"
TWO_SERVICES = (
    MESSAGE + f"{{{{#is_alert}}}}circuit-breaker-callback: {OTHER_CALLBACK}{{{{/is_alert}}}}\n"
)


def test_lint_message_warns_about_urls_outside_router_callback_allow():
    env = {"ROUTER_CALLBACK_ALLOW": "https://bank-charge.internal/breaker/"}
    result = invoke(env, "lint-message", "-", input=TWO_SERVICES)
    assert result.exit_code == 0, result.output  # a warning, not a problem
    outside = [line for line in result.stderr.splitlines() if "ROUTER_CALLBACK_ALLOW" in line]
    assert outside == [
        f"warning: callback URL {OTHER_CALLBACK} is not under any ROUTER_CALLBACK_ALLOW prefix "
        "(https://bank-charge.internal/breaker/): the workers dead-letter it without calling it"
    ]
    assert CALLBACK not in result.stderr


def test_lint_message_json_carries_the_allow_warning_and_the_option_overrides_the_env():
    env = {"ROUTER_CALLBACK_ALLOW": "https://bank-charge.internal/"}
    result = invoke(
        env, "lint-message", "-", "--json", "--allow", "https://ledger.internal/", input=MESSAGE
    )
    report = json.loads(result.stdout)
    assert [w for w in report["warnings"] if "ROUTER_CALLBACK_ALLOW" in w] == [
        f"callback URL {CALLBACK} is not under any ROUTER_CALLBACK_ALLOW prefix "
        "(https://ledger.internal/): the workers dead-letter it without calling it"
    ]


def test_lint_message_says_when_router_callback_allow_is_not_set():
    result = invoke({}, "lint-message", "-", input=MESSAGE)
    assert result.exit_code == 0, result.output
    assert "note: ROUTER_CALLBACK_ALLOW is not set here" in result.stdout
    assert "ROUTER_CALLBACK_ALLOW" not in result.stderr


def test_lint_message_refuses_a_malformed_allow_list():
    result = invoke({"ROUTER_CALLBACK_ALLOW": "ftp://x"}, "lint-message", "-", input=MESSAGE)
    assert result.exit_code == 2  # a usage error, not a traceback
    assert "ROUTER_CALLBACK_ALLOW: each entry must be an http(s) URL prefix" in result.stderr


@pytest.mark.parametrize(
    ("message", "ok", "exit_code"), [(MESSAGE, True, 0), (NO_CALLBACK_MESSAGE, False, 1)]
)
def test_lint_message_json(message, ok, exit_code):
    result = invoke({}, "lint-message", "--json", "-", input=message)
    assert result.exit_code == exit_code
    report = json.loads(result.stdout)
    assert report["ok"] is ok
    assert report["keyword"] == "circuit-breaker-callback"
    by_transition = {t["transition"]: t["callback_urls"] for t in report["transitions"]}
    expected = {k: ([v] if v != "-" and ok else []) for k, v in EXPECTED_LINT.items()}
    assert by_transition == expected
    assert bool(report["problems"]) is not ok


def test_lint_message_names_the_reconcile_interval_for_an_alert_without_recovery():
    message = f"{{{{#is_alert}}}}circuit-breaker-callback: {CALLBACK}{{{{/is_alert}}}} @webhook-x"
    result = invoke({"ROUTER_RECONCILE_INTERVAL": "5m"}, "lint-message", "-", input=message)
    assert result.exit_code == 0  # a warning: the reconciler closes it eventually
    assert "within about 2 x ROUTER_RECONCILE_INTERVAL (10m)" in result.stderr
    assert f"note: {CALLBACK}: on no_data" in result.stdout
    bad = invoke({}, "lint-message", "-", "--reconcile-interval", "often", input=message)
    assert bad.exit_code == 2 and "ROUTER_RECONCILE_INTERVAL: expected a duration" in bad.stderr


def test_lint_message_of_a_missing_file_is_a_usage_error(tmp_path: Path):
    result = invoke({}, "lint-message", str(tmp_path / "nope.txt"))
    assert result.exit_code == 2
    assert "No such file or directory" in result.stderr


# -- dlq list ------------------------------------------------------------------------------


def test_dlq_list_when_nothing_is_dead(env, queue):
    queued(queue, "http://127.0.0.1:9/alive")
    text = invoke(env, "dlq", "list")
    assert (text.exit_code, text.stdout) == (0, "No dead deliveries.\n")
    as_json = invoke(env, "dlq", "list", "--json")
    assert as_json.exit_code == 0
    assert json.loads(as_json.stdout) == {"total": 0, "dead_letters": []}


def test_dlq_list_shows_dead_deliveries_newest_first(env, queue):
    older = dead(queue, "http://127.0.0.1:9/a", "permanent failure: HTTP 410")
    newer = dead(queue, "http://127.0.0.1:9/b", "gave up after 2 attempts; last: HTTP 503")

    result = invoke(env, "dlq", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith(f"{newer}  ")
    assert "alert" in lines[0]
    assert "monitor 12345" in lines[0]
    assert "attempts 2" in lines[0]
    assert lines[0].endswith("http://127.0.0.1:9/b")
    assert lines[1] == "    gave up after 2 attempts; last: HTTP 503"
    assert lines[2].startswith(f"{older}  ") and lines[2].endswith("http://127.0.0.1:9/a")
    assert lines[3] == "    permanent failure: HTTP 410"


def test_dlq_list_json(env, queue):
    older = dead(queue, "http://127.0.0.1:9/a", "permanent failure: HTTP 410")
    newer = dead(queue, "http://127.0.0.1:9/b", "gave up", statuses=(503, 503, 503))
    result = invoke(env, "dlq", "list", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["total"] == 2
    rows = data["dead_letters"]
    assert [row["id"] for row in rows] == [newer, older]
    assert rows[0] == {
        "id": newer,
        "dead_at": rows[0]["dead_at"],
        "url": "http://127.0.0.1:9/b",
        "attempts": 3,
        "monitor_id": "12345",
        "transition": "alert",
        "reason": "gave up",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", rows[0]["dead_at"])
    assert (rows[1]["attempts"], rows[1]["reason"]) == (2, "permanent failure: HTTP 410")


def test_dlq_list_limit_says_how_many_more(env, queue):
    for n in range(3):
        dead(queue, f"http://127.0.0.1:9/{n}", f"reason {n}")
    result = invoke(env, "dlq", "list", "--limit", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "(2 more; use --limit)"
    assert result.stdout.count("    reason ") == 1
    data = json.loads(invoke(env, "dlq", "list", "--limit", "2", "--json").stdout)
    assert (data["total"], len(data["dead_letters"])) == (3, 2)


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_dlq_list_a_limit_below_one_is_a_usage_error(env, queue, limit):
    dead(queue, "http://127.0.0.1:9/a", "x")
    result = invoke(env, "dlq", "list", "--limit", limit)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.exit_code == 2
    assert "--limit" in result.stderr


# -- dlq show ------------------------------------------------------------------------------


def test_dlq_show_text(env, queue):
    delivery_id = dead(queue, "http://127.0.0.1:9/a", "permanent failure: HTTP 410")
    result = invoke(env, "dlq", "show", delivery_id)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"delivery   {delivery_id}  (dead)"
    assert "url        http://127.0.0.1:9/a" in lines
    assert "reason     permanent failure: HTTP 410" in lines
    assert "transition alert (Triggered)" in lines
    assert "monitor    12345   event 7001" in lines
    assert "title      [Triggered] Bank 0001 charges failing" in lines
    assert "scope      bank_code:0001" in lines
    assert "attempts   2" in lines
    attempt_lines = [line for line in lines if line.startswith("  #")]
    assert len(attempt_lines) == 2
    assert attempt_lines[0].startswith("  #1 ")
    assert "first" in attempt_lines[0] and "503" in attempt_lines[0]
    assert attempt_lines[0].endswith("(12 ms)")
    assert "permanent" in attempt_lines[1] and attempt_lines[1].endswith("(24 ms)")
    assert "       HTTP 410" in lines


def test_dlq_show_json_has_the_attempts(env, queue):
    delivery_id = dead(queue, "http://127.0.0.1:9/a", "permanent failure: HTTP 410")
    result = invoke(env, "dlq", "show", "--json", delivery_id)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["id"] == delivery_id
    assert data["status"] == "dead"
    assert data["reason"] == "permanent failure: HTTP 410"
    assert data["url"] == "http://127.0.0.1:9/a"
    assert [(a["n"], a["status"], a["outcome"]) for a in data["attempts"]] == [
        (1, 503, "retry"),
        (2, 410, "permanent"),
    ]
    assert data["notification"]["monitor_id"] == "12345"
    assert data["notification"]["callback_urls"] == ["http://127.0.0.1:9/a"]


def test_dlq_show_of_an_unknown_id_is_a_usage_error(env, queue):
    result = invoke(env, "dlq", "show", "dlv_doesnotexist")
    assert result.exit_code == 2
    assert "no delivery dlv_doesnotexist" in result.stderr
    assert "router dlq list" in result.stderr
    assert result.stdout == ""


# -- dlq replay ----------------------------------------------------------------------------


def test_dlq_replay_queues_the_delivery_again(env, queue, redis):
    delivery_id = dead(queue, "http://127.0.0.1:9/a", "permanent failure: HTTP 410")
    assert queue.dead_count() == 1

    result = invoke(env, "dlq", "replay", delivery_id)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"replayed {delivery_id}\n"
    delivery = queue.load(delivery_id)
    assert delivery is not None
    assert (delivery.status, delivery.replays, delivery.reason) == ("queued", 1, None)
    assert len(delivery.attempts) == 2  # the history is kept
    assert queue.dead_count() == 0
    assert [claim.delivery_id for claim in queue.read("cli-test", 10, 10)] == [delivery_id]
    assert json.loads(invoke(env, "dlq", "list", "--json").stdout)["total"] == 0


def test_dlq_replay_all(env, queue):
    ids = {dead(queue, f"http://127.0.0.1:9/{n}", "x") for n in range(2)}
    result = invoke(env, "dlq", "replay", "--all")
    assert result.exit_code == 0, result.output
    assert {line.removeprefix("replayed ") for line in result.stdout.splitlines()} == ids
    assert queue.dead_count() == 0


@pytest.mark.parametrize("state", ["queued", "unknown"])
def test_dlq_replay_of_a_delivery_that_is_not_dead_exits_1(env, queue, state):
    dead_id = dead(queue, "http://127.0.0.1:9/dead", "x")
    other = queued(queue, "http://127.0.0.1:9/alive") if state == "queued" else "dlv_nope"
    result = invoke(env, "dlq", "replay", other, dead_id)
    assert result.exit_code == 1
    assert result.stderr == f"not replayed {other}: it is {state}, not dead\n"
    assert result.stdout == f"replayed {dead_id}\n"  # the others are still replayed


# -- dlq purge -----------------------------------------------------------------------------


def test_dlq_purge_ids(env, queue, redis, key_prefix):
    gone = dead(queue, "http://127.0.0.1:9/a", "x")
    kept = dead(queue, "http://127.0.0.1:9/b", "y")
    result = invoke(env, "dlq", "purge", gone)
    assert result.exit_code == 0, result.output
    assert result.stdout == "purged 1 of 1\n"
    assert queue.load(gone) is None
    assert redis.exists(RouterKeys(key_prefix).delivery(gone)) == 0
    assert [letter.delivery_id for letter in queue.dead_letters()] == [kept]


def test_dlq_purge_of_a_delivery_that_is_not_dead_exits_1(env, queue):
    alive = queued(queue, "http://127.0.0.1:9/alive")
    result = invoke(env, "dlq", "purge", alive, "dlv_nope")
    assert result.exit_code == 1
    assert result.stdout == "purged 0 of 2\n"
    assert queue.load(alive) is not None


@pytest.mark.parametrize(("answer", "purged"), [("n\n", False), ("y\n", True)])
def test_dlq_purge_all_asks_first(env, queue, answer, purged):
    for n in range(2):
        dead(queue, f"http://127.0.0.1:9/{n}", "x")
    result = invoke(env, "dlq", "purge", "--all", input=answer)
    assert "Delete 2 dead deliveries for good? [y/N]" in result.output
    if purged:
        assert result.exit_code == 0, result.output
        assert "purged 2 of 2" in result.stdout
        assert queue.dead_count() == 0
    else:
        assert result.exit_code == 1
        assert "Aborted!" in result.stderr
        assert queue.dead_count() == 2


def test_dlq_purge_all_yes_does_not_ask(env, queue):
    for n in range(3):
        dead(queue, f"http://127.0.0.1:9/{n}", "x")
    result = invoke(env, "dlq", "purge", "--all", "--yes")
    assert result.exit_code == 0, result.output
    assert result.stdout == "purged 3 of 3\n"
    assert "Delete" not in result.output
    assert queue.dead_count() == 0


@pytest.mark.parametrize("command", ["replay", "purge"])
@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (("dlv_a", "--all"), "give delivery ids or --all, not both"),
        ((), "give one or more delivery ids, or --all"),
    ],
)
def test_dlq_selection_mistakes_are_usage_errors(env, queue, command, args, hint):
    letter = dead(queue, "http://127.0.0.1:9/a", "x")
    result = invoke(env, "dlq", command, *args)
    assert result.exit_code == 2
    assert f"Error: {hint}" in result.stderr
    assert f"router dlq {command}" in result.stderr  # the usage line
    assert queue.load(letter) is not None and queue.dead_count() == 1


# -- router.cli.main: configuration problems are one line, not a traceback -----------------


def run_main(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REDIS_URL", "ROUTER_", "DD_", "SLACK_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "router", *args],
        env={**base, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_main_without_redis_url_is_a_one_line_configuration_error():
    result = run_main("dlq", "list")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("router: configuration error: REDIS_URL is not set")
    assert result.stdout == ""


def test_main_with_a_bad_setting_names_the_variable():
    result = run_main("dlq", "list", REDIS_URL="redis://127.0.0.1:1/0", ROUTER_INBOUND_AUTH="off")
    assert result.returncode == 2
    assert result.stderr == (
        "router: configuration error: ROUTER_INBOUND_AUTH: expected 'token' or 'none', got 'off'\n"
    )


def test_main_with_redis_unreachable_says_where_it_looked():
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = run_main("dlq", "list", REDIS_URL=url)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"router: cannot reach Redis at {url}: ")
    assert len(result.stderr.strip().splitlines()) == 1


# -- router breakers ----------------------------------------------------------------------


def _breakers_env(redis_url: str, key_prefix: str) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "BREAKERS_PREFIX": key_prefix}


def test_breakers_open_for_a_while_then_list_history_and_clear(redis_url, key_prefix):
    runner = CliRunner()
    env = _breakers_env(redis_url, key_prefix)
    opened = runner.invoke(
        cli,
        [
            *("breakers", "open", "bank-charge", "0001", "--reason", "bank maintenance"),
            *("--for", "30m", "--create"),
        ],
        env=env,
    )
    assert opened.exit_code == 0, opened.output
    assert opened.output.strip() == "bank-charge 0001: closed -> forced_open for 30m"

    listed = runner.invoke(cli, ["breakers", "list", "--json"], env=env)
    [state] = json.loads(listed.output)
    assert (state["name"], state["key"], state["state"]) == ("bank-charge", "0001", "forced_open")
    assert state["reason"] == "bank maintenance" and state["expires_at_ms"] is not None

    text = runner.invoke(cli, ["breakers", "list"], env=env).output
    assert "bank-charge 0001" in text and "forced open" in text and "bank maintenance" in text

    history = runner.invoke(cli, ["breakers", "history", "bank-charge", "0001"], env=env).output
    assert "force_open" in history and "bank maintenance" in history

    cleared = runner.invoke(cli, ["breakers", "clear", "bank-charge", "0001"], env=env)
    assert cleared.output.strip() == "bank-charge 0001: forced_open -> closed"


def test_breakers_close_a_whole_vendor(redis_url, key_prefix):
    runner = CliRunner()
    env = _breakers_env(redis_url, key_prefix)
    result = runner.invoke(
        cli, ["breakers", "close", "fx-quotes", "--reason", "false alarm", "--create"], env=env
    )
    assert result.exit_code == 0, result.output
    assert "until `router breakers clear`" in result.output


def test_breakers_open_of_an_unknown_name_asks_for_create_and_a_new_key_warns(
    redis_url, key_prefix
):
    runner = CliRunner()
    env = _breakers_env(redis_url, key_prefix)
    # A fresh system: nothing to misspell, so DESIGN's plain `breakers open` works, with a note.
    first = ["breakers", "open", "bank-charge", "0001", "--reason", "maintenance"]
    done = runner.invoke(cli, first, env=env)
    assert done.exit_code == 0, done.output
    assert "bank-charge 0001 is a new breaker (no breaker has been written yet" in done.stderr
    assert "pass --create to say so" in done.stderr
    assert (
        Breakers.from_url(redis_url, prefix=key_prefix, sync=False)
        .state("bank-charge", "0001")
        .state
        == "forced_open"
    )

    # A name nothing has written while others exist: a typo, refused, and nothing written.
    typo = runner.invoke(cli, ["breakers", "close", "bank-chrage", "--reason", "x"], env=env)
    assert typo.exit_code == 2
    assert "no breaker bank-chrage (known breakers: bank-charge)" in typo.stderr
    assert "pass --create to create it" in typo.stderr
    listed = runner.invoke(cli, ["breakers", "list", "--json"], env=env)
    assert "bank-chrage" not in listed.stdout
    assert (
        runner.invoke(
            cli, ["breakers", "close", "bank-chrage", "--reason", "x", "--create"], env=env
        ).exit_code
        == 0
    )

    # A new key of a known name goes ahead, naming the keys it has.
    other = runner.invoke(
        cli, ["breakers", "open", "bank-charge", "0002", "--reason", "m"], env=env
    )
    assert other.exit_code == 0
    assert "bank-charge 0002 is a new breaker (bank-charge has keys 0001)" in other.stderr
    # Clearing what does not exist has nothing to clear, and writes nothing.
    cleared = runner.invoke(cli, ["breakers", "clear", "bank-charge", "0003"], env=env)
    assert cleared.exit_code == 2 and "nothing to clear" in cleared.output
    states = json.loads(runner.invoke(cli, ["breakers", "list", "--json"], env=env).stdout)
    assert sorted((state["name"], state["key"]) for state in states) == [
        ("bank-charge", "0001"),
        ("bank-charge", "0002"),
        ("bank-chrage", None),
    ]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["breakers", "open", "bank-charge"], "--reason"),
        (["breakers", "open", "bad:name", "--reason", "x"], "breaker name"),
        (["breakers", "open", "bank-charge", "--reason", "x", "--for", "soon"], "--for"),
    ],
)
def test_breakers_mistakes_are_usage_errors(redis_url, key_prefix, args, expected):
    result = CliRunner().invoke(cli, args, env=_breakers_env(redis_url, key_prefix))
    assert result.exit_code == 2
    assert expected in result.output
