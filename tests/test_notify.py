"""Slack notifications against a real HTTP stub of the incoming webhook and a real Redis."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import redis as redis_lib
from redis.backoff import NoBackoff
from redis.retry import Retry

from router.config import Settings
from router.datadog_stub.harness import StubServer
from router.errors import ConfigError
from router.keys import RouterKeys
from router.notify import (
    Alert,
    FoldBook,
    NullNotifier,
    SlackNotifier,
    alert_sink,
    build_notifier,
    datadog_app_url,
    render,
)
from router.queue import now_ms
from router.worker import Worker
from tests.conftest import free_port
from tests.support import Receiver, router_env, running_receiver, wait_for
from tests.test_worker import enqueue, running_worker

WINDOW_S = 600.0
T0 = 1_795_350_000.0


class Clock:
    """Wall time the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@contextmanager
def notifier(
    redis: redis_lib.Redis, key_prefix: str, url: str, clock: Clock, **kwargs: Any
) -> Iterator[tuple[SlackNotifier, list[float]]]:
    sleeps: list[float] = []
    folds = FoldBook(redis, RouterKeys(key_prefix), window_s=WINDOW_S)
    kwargs.setdefault("sleep", sleeps.append)
    slack = SlackNotifier(f"{url}/services/T0/B0/x", folds, clock=clock, rng=lambda: 0.5, **kwargs)
    try:
        yield slack, sleeps
    finally:
        slack.close()


@dataclass
class SlackSetup:
    stub: Receiver
    notifier: SlackNotifier
    sleeps: list[float]
    clock: Clock


@pytest.fixture
def slack_setup(redis: redis_lib.Redis, key_prefix: str) -> Iterator[SlackSetup]:
    """A Slack stub and a notifier posting to it, on a clock the test moves, never sleeping."""
    clock = Clock()
    with (
        running_receiver() as stub,
        notifier(redis, key_prefix, stub.url, clock) as (slack, sleeps),
    ):
        yield SlackSetup(stub, slack, sleeps, clock)


def dead_letter(reason: str = "gave up after 8 attempts; last: HTTP 503", n: int = 1) -> Alert:
    return Alert(
        kind="dead_letter",
        severity="critical",
        title="Dead letter: bank-charge errors",
        text=f"delivery {n} was not delivered: {reason}",
        reason=reason,
        callback_url="https://bank-charge.internal/breaker/callback",
        monitor_id="155844758",
        event_id=f"74111122334455{n:05d}",
        command=f"router dlq replay dlv_{n}",
        summary_command="router dlq list",
    )


def attachment(received: Any) -> dict[str, Any]:
    return received.json()["attachments"][0]


def test_twenty_identical_dead_letters_are_one_message_and_one_summary(slack_setup):
    clock = slack_setup.clock
    slack, slack_stub = slack_setup.notifier, slack_setup.stub
    for n in range(1, 21):
        slack.notify(dead_letter(n=n))
        clock.now += 1
    wait_for(lambda: slack.counts["sent"] == 1, what="the first dead letter in Slack")
    assert slack.counts["folded"] == 19
    [first] = slack_stub.requests
    message = attachment(first)
    assert message["color"] == "#d0021b"
    assert message["title"].startswith("CRITICAL: Dead letter")
    values = {f["title"]: f["value"] for f in message["fields"]}
    assert values["Monitor"] == "<https://app.datadoghq.com/monitors/155844758|155844758>"
    assert "event/event?id=7411112233445500001" in values["Event"]
    assert values["Callback"] == "https://bank-charge.internal/breaker/callback"
    assert values["Run"] == "`router dlq replay dlv_1`"

    clock.now = T0 + WINDOW_S + 1
    slack.flush_due()
    wait_for(lambda: len(slack_stub.requests) == 2, what="the summary")
    summary = attachment(slack_stub.requests[1])
    assert "19 more times" in summary["title"]
    # First and last repeat, and when it was first notified.
    assert "2026-11-22 12:20:01 UTC and 2026-11-22 12:20:19 UTC" in summary["text"]
    assert "first notified 2026-11-22 12:20:00 UTC" in summary["text"]
    assert {f["title"]: f["value"] for f in summary["fields"]}["Run"] == "`router dlq list`"
    # The summary was taken out of the shared state: no second one, from anyone.
    assert slack.flush_due() == 0


def test_a_new_reason_is_sent_at_once_while_another_folds(slack_setup):
    slack, slack_stub = slack_setup.notifier, slack_setup.stub
    for n in range(5):
        slack.notify(dead_letter(n=n))
    slack.notify(dead_letter("permanent failure: HTTP 404"))
    wait_for(lambda: len(slack_stub.requests) == 2, what="the first of each reason")
    texts = [attachment(r)["text"] for r in slack_stub.requests]
    assert "HTTP 503" in texts[0]
    assert "HTTP 404" in texts[1]
    assert slack.counts["folded"] == 4


def test_workers_share_one_window_and_exactly_one_sends_its_summary(redis, key_prefix):
    clock = Clock()
    with (
        running_receiver() as slack_stub,
        notifier(redis, key_prefix, slack_stub.url, clock) as (worker_a, _),
        notifier(redis, key_prefix, slack_stub.url, clock) as (worker_b, _),
    ):
        worker_a.notify(dead_letter(n=1))
        for n in range(2, 8):
            worker_b.notify(dead_letter(n=n))
        wait_for(lambda: worker_a.counts["sent"] == 1, what="the first occurrence")
        # The repeats reached another worker: it knows they are repeats and stays quiet.
        assert worker_b.counts == {"sent": 0, "folded": 6, "dropped": 0, "failed": 0}

        clock.now += WINDOW_S
        taken: list[int] = []
        threads = [
            threading.Thread(target=lambda w=w: taken.append(w.flush_due()))
            for w in (worker_a, worker_b, worker_a, worker_b)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        sent = lambda: worker_a.counts["sent"] + worker_b.counts["sent"]  # noqa: E731
        wait_for(lambda: sent() == 2, what="one summary")
        # Both senders' own periodic flushes compete too; still only one summary exists.
        assert sum(taken) <= 1
        assert len(slack_stub.requests) == 2
        assert "6 more times" in attachment(slack_stub.requests[1])["title"]


def test_an_occurrence_after_the_window_sends_the_summary_and_itself(slack_setup):
    clock = slack_setup.clock
    slack, slack_stub = slack_setup.notifier, slack_setup.stub
    slack.notify(dead_letter(n=1))
    slack.notify(dead_letter(n=2))
    clock.now += WINDOW_S + 5
    # Nobody flushed yet: the next occurrence ends the old window and opens a new one.
    slack.notify(dead_letter(n=3))
    wait_for(lambda: len(slack_stub.requests) == 3, what="first, summary, new first")
    titles = [attachment(r)["title"] for r in slack_stub.requests]
    assert "1 more time" in titles[1]
    assert not titles[2].startswith("CRITICAL: Repeated")
    assert slack.flush_due() == 0


def test_a_429_is_retried_after_its_retry_after_and_delivered(slack_setup):
    slack, slack_stub = slack_setup.notifier, slack_setup.stub
    sleeps = slack_setup.sleeps
    slack_stub.script = [(429, {"Retry-After": "7"})]
    slack.notify(dead_letter())
    wait_for(lambda: slack.counts["sent"] == 1, what="delivery after the 429")
    assert sleeps == [7.0]
    assert len(slack_stub.requests) == 2
    assert slack_stub.requests[0].body == slack_stub.requests[1].body


def test_5xx_answers_are_retried_with_growing_backoff(slack_setup):
    slack, slack_stub = slack_setup.notifier, slack_setup.stub
    sleeps = slack_setup.sleeps
    slack_stub.script = [500, 503, 502]
    slack.notify(dead_letter())
    wait_for(lambda: slack.counts["sent"] == 1, what="delivery after three 5xx")
    assert sleeps == [1.0, 2.0, 4.0]
    assert len(slack_stub.requests) == 4


def test_a_slack_that_keeps_failing_is_given_up_on_with_a_log_line(slack_setup, caplog):
    slack, slack_stub = slack_setup.notifier, slack_setup.stub
    sleeps = slack_setup.sleeps
    slack_stub.default_status = 500
    slack.notify(dead_letter())
    wait_for(lambda: slack.counts["failed"] == 1, what="giving up")
    assert sleeps == sorted(sleeps) and len(sleeps) == 7
    assert len(slack_stub.requests) == 8
    assert "notification lost: Dead letter" in caplog.text


def test_a_refusal_is_not_retried(slack_setup, caplog):
    slack, slack_stub = slack_setup.notifier, slack_setup.stub
    sleeps = slack_setup.sleeps
    slack_stub.default_status = 404  # Slack's channel_not_found
    slack.notify(dead_letter())
    wait_for(lambda: slack.counts["failed"] == 1, what="the refusal")
    assert sleeps == [] and len(slack_stub.requests) == 1
    assert "Slack refused a notification (HTTP 404" in caplog.text


@contextmanager
def silent_server() -> Iterator[str]:
    """A port that accepts connections and never answers: a hung Slack."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_a_hung_slack_never_holds_up_notify_and_overflow_is_dropped_with_a_log(
    redis, key_prefix, caplog
):
    caplog.set_level(logging.ERROR, logger="router.notify")
    with (
        silent_server() as url,
        notifier(
            redis, key_prefix, url, Clock(), queue_size=5, timeout_s=3.0, close_timeout_s=0.1
        ) as (slack, _),
    ):
        done = threading.Event()

        def burst() -> None:
            for n in range(200):
                slack.notify(dead_letter(f"reason {n}", n=n))
            done.set()

        threading.Thread(target=burst, daemon=True).start()
        # All 200 returned while the first request still hangs on Slack.
        assert done.wait(timeout=20), "notify() blocked behind a hung Slack"
        assert slack.counts["sent"] == 0 and slack.counts["failed"] == 0
        assert slack.counts["dropped"] >= 200 - 5 - 1
    assert "Slack notification queue full" in caplog.text


def test_an_unreachable_redis_sends_unfolded_rather_than_nothing(key_prefix):
    # No client-side retries: the test is about what the notifier does once Redis has failed.
    dead_redis = redis_lib.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    with (
        running_receiver() as slack_stub,
        notifier(dead_redis, key_prefix, slack_stub.url, Clock()) as (
            slack,
            _,
        ),
    ):
        slack.notify(dead_letter(n=1))
        slack.notify(dead_letter(n=2))
        wait_for(lambda: len(slack_stub.requests) == 2, what="both, unfolded")


def test_credentials_in_a_callback_url_never_reach_slack_or_redis(redis, key_prefix):
    secret_url = "https://user:hunter2@bank-charge.internal/cb"
    alert = Alert(
        kind="dead_letter",
        severity="critical",
        title="Dead letter",
        text=f"could not reach {secret_url}",
        reason=f"permanent failure at {secret_url}",
        callback_url=secret_url,
    )
    with (
        running_receiver() as slack_stub,
        notifier(redis, key_prefix, slack_stub.url, Clock()) as (
            slack,
            _,
        ),
    ):
        slack.notify(alert)
        slack.notify(alert)
        wait_for(lambda: slack_stub.requests, what="the message")
        assert b"hunter2" not in slack_stub.requests[0].body
        assert b"***@bank-charge.internal" in slack_stub.requests[0].body
        stored = [
            redis.hgetall(k) for k in redis.scan_iter(f"{key_prefix}:notify:fold:*", count=1000)
        ]
        assert stored and "hunter2" not in repr(stored)


@pytest.mark.parametrize(
    ("site", "app"),
    [
        (None, "https://app.datadoghq.com"),
        ("datadoghq.eu", "https://app.datadoghq.eu"),
        ("us3.datadoghq.com", "https://us3.datadoghq.com"),
        ("ap1.datadoghq.com", "https://ap1.datadoghq.com"),
        ("ddog-gov.com", "https://app.ddog-gov.com"),
        ("https://app.datadoghq.eu/", "https://app.datadoghq.eu"),
    ],
)
def test_links_point_at_the_datadog_site(site, app):
    assert datadog_app_url(site) == app


def test_severity_shows_in_colour_and_words_and_odd_ids_make_no_link():
    colours = set()
    for severity, word in (("critical", "CRITICAL"), ("warning", "WARNING"), ("info", "INFO")):
        alert = Alert(
            kind="breaker_closed",
            severity=severity,
            title="Breaker closed: <bank> & co",
            text="t",
            reason="r",
            monitor_id="12/../../x",
            event_id="99",
        )
        message = render(alert, app_url="https://app.datadoghq.eu", at_ms=0)
        part = message["attachments"][0]
        colours.add(part["color"])
        assert message["text"] == f"[{word}] Breaker closed: &lt;bank&gt; &amp; co"
        titles = [f["title"] for f in part["fields"]]
        assert titles == ["Event"]
        assert part["fields"][0]["value"] == "<https://app.datadoghq.eu/event/event?id=99|99>"
    assert len(colours) == 3


def test_without_a_webhook_url_notifications_do_nothing(redis, key_prefix):
    keys = RouterKeys(key_prefix)
    assert isinstance(build_notifier(Settings(), redis, keys=keys), NullNotifier)
    with pytest.raises(ConfigError, match="SLACK_WEBHOOK_URL"):
        build_notifier(Settings(slack_webhook_url="hooks.slack.com/x"), redis, keys=keys)


def test_the_fold_window_is_a_setting():
    assert Settings.from_env({"ROUTER_NOTIFY_FOLD_WINDOW": "2m"}).notify_fold_window_s == 120
    assert Settings.from_env({}).notify_fold_window_s == WINDOW_S
    with pytest.raises(ConfigError, match="ROUTER_NOTIFY_FOLD_WINDOW"):
        Settings.from_env({"ROUTER_NOTIFY_FOLD_WINDOW": "soon"})


def test_the_reconcilers_reports_arrive_with_their_links_and_command(slack_setup):
    sink = alert_sink(slack_setup.notifier)
    for _ in range(3):
        sink(
            "monitor_deleted",
            "warning",
            "Monitor 155844758 was deleted in Datadog",
            "https://bank-charge.internal/cb keeps the breaker state it was last told",
            callback_url="https://bank-charge.internal/cb",
            monitor_id="155844758",
            command="router reconcile forget 155844758",
        )
    wait_for(lambda: slack_setup.notifier.counts["sent"] == 1, what="the report")
    assert slack_setup.notifier.counts["folded"] == 2
    message = attachment(slack_setup.stub.requests[0])
    assert message["title"] == "WARNING: Monitor 155844758 was deleted in Datadog"
    values = {f["title"]: f["value"] for f in message["fields"]}
    assert values["Run"] == "`router reconcile forget 155844758`"
    assert values["Monitor"].startswith("<https://app.datadoghq.com/monitors/155844758|")


# -- the worker's notifications --------------------------------------------------------------


def slack_titles(stub: Receiver) -> list[str]:
    return [attachment(r)["title"] for r in stub.requests]


def test_a_dead_letter_in_the_worker_reaches_slack_with_its_replay_command(
    redis_url, redis, key_prefix
):
    with running_receiver() as callback, running_receiver() as slack_stub:
        callback.default_status = 400
        with running_worker(redis_url, key_prefix, callback, SLACK_WEBHOOK_URL=slack_stub.url):
            _, delivery_id = enqueue(redis, key_prefix, f"{callback.url}/cb")
            wait_for(
                lambda: any("Dead letter" in t for t in slack_titles(slack_stub)),
                what="the dead letter in Slack",
            )
    [message] = [attachment(r) for r in slack_stub.requests if "Dead letter" in r.body.decode()]
    values = {f["title"]: f["value"] for f in message["fields"]}
    assert values["Run"] == f"`router dlq replay {delivery_id}`"
    assert values["Callback"] == f"{callback.url}/cb"
    assert "permanent failure" in message["text"]


def test_alerts_and_recoveries_delivered_say_the_breaker_opened_and_closed(
    redis_url, redis, key_prefix
):
    with (
        running_receiver() as callback,
        running_receiver() as slack_stub,
        running_worker(redis_url, key_prefix, callback, SLACK_WEBHOOK_URL=slack_stub.url),
    ):
        enqueue(redis, key_prefix, f"{callback.url}/cb", event_id="1")
        wait_for(lambda: slack_stub.requests, what="the breaker opened")
        enqueue(redis, key_prefix, f"{callback.url}/cb", event_id="2", transition="Recovered")
        wait_for(lambda: len(slack_stub.requests) == 2, what="the breaker closed")
    opened, closed = (attachment(r) for r in slack_stub.requests)
    assert opened["title"].startswith("WARNING: Breaker opened")
    assert closed["title"].startswith("INFO: Breaker closed")
    assert opened["color"] != closed["color"]


def test_refused_datadog_keys_reach_slack(redis_url, redis, key_prefix):
    with StubServer() as stub, running_receiver() as callback, running_receiver() as slack_stub:
        stub.client().set_keys(["other"], ["other"], status=403)
        with running_worker(
            redis_url,
            key_prefix,
            callback,
            SLACK_WEBHOOK_URL=slack_stub.url,
            DD_API_HOST=stub.url,
            DD_API_KEY="k",
            DD_APP_KEY="a",
        ):
            enqueue(redis, key_prefix, f"{callback.url}/cb")
            # Health is looked at with the worker's heartbeat (every 5 s).
            wait_for(
                lambda: any("API keys" in t for t in slack_titles(slack_stub)),
                timeout=15,
                what="the refused keys in Slack",
            )


def test_a_backlog_older_than_the_threshold_is_reported(redis_url, redis, key_prefix):
    with running_receiver() as slack_stub:
        env = router_env(
            redis_url, key_prefix, SLACK_WEBHOOK_URL=slack_stub.url, ROUTER_NOTIFY_BACKLOG_AGE="5m"
        )
        worker = Worker(Settings.from_env(env))
        try:
            keys = RouterKeys(key_prefix)
            # An entry that has waited ten minutes, as when no worker ran.
            old_ms = now_ms() - 600_000
            redis.xadd(keys.stream, {"id": "dlv_old"}, id=f"{old_ms}-0")
            worker._heartbeat()
            wait_for(lambda: slack_stub.requests, what="the backlog in Slack")
        finally:
            worker.notifier.close()
    [title] = slack_titles(slack_stub)
    assert title.startswith("CRITICAL: Deliveries are waiting")
