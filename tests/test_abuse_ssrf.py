"""SSRF: a callback URL can only reach what ROUTER_CALLBACK_ALLOW names, however it is spelled,
wherever its name resolves, and wherever its answer redirects.

"No request leaves" is shown with a canary: a listening socket on the port the URL would reach.
The kernel completes a TCP handshake into the listen backlog without `accept()`, so a
non-blocking `accept()` after the attempt finds any connection that was made.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pytest

from router.allowlist import CallbackAllowList
from router.config import Settings
from router.delivery import CallbackSender
from router.errors import ConfigError
from tests.support import SIGNING_SECRET, running_receiver, wait_for
from tests.test_worker import enqueue, running_worker

PAYLOAD = {"delivery_id": "d", "transition": "alert"}


@pytest.fixture
def canary() -> Iterator[socket.socket]:
    """A socket on 127.0.0.1 that no attempt may connect to."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        yield listener


def connections(listener: socket.socket) -> int:
    """How many connections reached the canary (each is taken off the backlog)."""
    count = 0
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def port_of(listener: socket.socket) -> int:
    return int(listener.getsockname()[1])


def resolving_to(
    *addresses: str, asked: list[str] | None = None
) -> Callable[[str, int], list[str]]:
    """A resolver for the sender that answers every name with `addresses`."""

    def resolve(host: str, port: int) -> list[str]:
        if asked is not None:
            asked.append(host)
        return list(addresses)

    return resolve


# -- a name the allow-list names resolves somewhere the router must never call ----------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped: Python's is_loopback says False
        ("0.0.0.0", "this host"),  # Linux connects 0.0.0.0 to the local host
        ("169.254.169.254", "link-local"),  # cloud instance metadata
        ("::ffff:169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("fd00:ec2::254", "cloud metadata"),  # AWS's IPv6 instance metadata
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
        ("224.0.0.1", "not a unicast host"),
    ],
)
def test_a_name_resolving_to_a_refused_address_is_never_connected(canary, address, kind):
    asked: list[str] = []
    sender = CallbackSender(SIGNING_SECRET, timeout_s=5, resolve=resolving_to(address, asked=asked))
    try:
        result = sender.send("d", f"http://svc.internal:{port_of(canary)}/breaker/cb", PAYLOAD)
    finally:
        sender.close()
    assert asked == ["svc.internal"]  # the injected resolver, not the system's
    assert result.outcome == "permanent"  # a retry cannot make it safe: dead-lettered at once
    assert result.status is None
    assert f"svc.internal resolved to {address} ({kind})" in result.error
    assert "no request was made" in result.error
    assert connections(canary) == 0


def test_one_refused_address_among_others_refuses_the_name_before_any_connect(canary):
    # 192.0.2.1 (TEST-NET) would hang until the deadline: refusing first means no connect at all.
    sender = CallbackSender(
        SIGNING_SECRET, timeout_s=5, resolve=resolving_to("192.0.2.1", "127.0.0.1")
    )
    started = time.monotonic()
    try:
        result = sender.send("d", f"http://svc.internal:{port_of(canary)}/cb", PAYLOAD)
    finally:
        sender.close()
    assert result.outcome == "permanent"
    assert "resolved to 127.0.0.1 (loopback)" in result.error
    assert time.monotonic() - started < 2
    assert connections(canary) == 0


def test_localhost_names_and_named_addresses_still_reach_loopback():
    with running_receiver() as receiver:
        port = receiver.server.server_address[1]
        sender = CallbackSender(SIGNING_SECRET, timeout_s=5, resolve=resolving_to("127.0.0.1"))
        try:
            by_name = sender.send("d1", f"http://localhost:{port}/cb", PAYLOAD)
            by_literal = sender.send("d2", f"http://127.0.0.1:{port}/cb", PAYLOAD)
        finally:
            sender.close()
        assert (by_name.outcome, by_literal.outcome) == ("delivered", "delivered")
        assert len(receiver.requests) == 2


def test_a_worker_dead_letters_a_name_that_resolves_to_loopback(redis_url, redis, key_prefix):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        url = f"http://svc.internal:{port_of(listener)}/breaker/cb"
        sender = CallbackSender(SIGNING_SECRET, timeout_s=5, resolve=resolving_to("127.0.0.1"))
        allow = f"http://svc.internal:{port_of(listener)}/breaker/"
        with running_worker(redis_url, key_prefix, ROUTER_CALLBACK_ALLOW=allow) as worker:
            worker.sender = sender
            queue, delivery_id = enqueue(redis, key_prefix, url)
            wait_for(lambda: queue.load(delivery_id).status == "dead", what="dead letter")
        delivery = queue.load(delivery_id)
        assert "resolved to 127.0.0.1 (loopback)" in delivery.reason
        assert len(delivery.attempts) == 1
        assert connections(listener) == 0


# -- spellings of an address the allow-list does not name --------------------------------------


SPELLINGS = [
    ("http://2130706433:{port}/cb", "non-standard form"),  # decimal 127.0.0.1
    ("http://0177.0.0.1:{port}/cb", "non-standard form"),  # octal
    ("http://0x7f.0.0.1:{port}/cb", "non-standard form"),  # hex
    ("http://0x7f000001:{port}/cb", "non-standard form"),
    ("http://127.1:{port}/cb", "non-standard form"),  # shortened
    ("http://[::ffff:127.0.0.1]:{port}/cb", "inside an IPv6 address"),
    ("http://[::ffff:7f00:1]:{port}/cb", "inside an IPv6 address"),
    ("http://[::ffff:169.254.169.254]/latest/meta-data/", "inside an IPv6 address"),
]


@pytest.mark.parametrize(("template", "why"), SPELLINGS)
def test_numeric_spellings_of_an_address_are_refused_with_the_reason(template, why):
    url = template.format(port=8080)
    # Even an allow-list naming that very spelling admits nothing: some stack reads it otherwise.
    allow = CallbackAllowList((url.rsplit("/", 1)[0] + "/",))
    assert allow.allows(url) is False
    assert why in allow.refusal(url)
    assert "no request was made" in allow.refusal(url)


@pytest.mark.parametrize(("template", "why"), SPELLINGS)
def test_an_allow_list_entry_with_such_a_spelling_stops_start_up(template, why):
    entry = template.format(port=8080).rsplit("/", 1)[0] + "/"
    with pytest.raises(ConfigError, match=r"^ROUTER_CALLBACK_ALLOW: .* would admit nothing") as exc:
        Settings.from_env({"ROUTER_CALLBACK_ALLOW": f"https://ok.internal/,{entry}"})
    assert why in str(exc.value)


@pytest.mark.parametrize(
    "template",
    [
        *(template for template, _ in SPELLINGS),
        "http://127.0.0.1:{port}/cb",  # the real address, but the allow-list names another host
        "http://localhost:{port}/cb",
        "http://169.254.169.254/latest/meta-data/",
        "http://svc.internal.evil.example:{port}/breaker/cb",
    ],
)
def test_a_worker_never_sends_a_request_to_a_target_outside_the_allow_list(
    redis_url, redis, key_prefix, canary, template
):
    url = template.format(port=port_of(canary))
    # Every name resolves to the canary: only the allow-list and the address checks stand between.
    sender = CallbackSender(SIGNING_SECRET, timeout_s=5, resolve=resolving_to("127.0.0.1"))
    allow = f"http://svc.internal:{port_of(canary)}/breaker/"
    with running_worker(redis_url, key_prefix, ROUTER_CALLBACK_ALLOW=allow) as worker:
        worker.sender = sender
        queue, delivery_id = enqueue(redis, key_prefix, url)
        wait_for(lambda: queue.load(delivery_id).status == "dead", what="dead letter")
    delivery = queue.load(delivery_id)
    assert "no request was made" in delivery.reason
    assert delivery.attempts == []
    assert connections(canary) == 0


# -- redirects ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_metadata_or_elsewhere_is_not_followed(canary, status):
    targets = [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        f"http://127.0.0.1:{port_of(canary)}/admin",
    ]
    with running_receiver() as receiver:
        receiver.script = [(status, {"Location": target}) for target in targets]
        sender = CallbackSender(SIGNING_SECRET, timeout_s=5)
        try:
            results = [sender.send("d", f"{receiver.url}/cb", PAYLOAD) for _ in targets]
        finally:
            sender.close()
        assert [r.outcome for r in results] == ["permanent", "permanent"]
        for result, target in zip(results, targets, strict=True):
            assert f"redirect to {target} not followed" in result.error
        assert [r.path for r in receiver.requests] == ["/cb", "/cb"]
    assert connections(canary) == 0
