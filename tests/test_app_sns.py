"""POST /webhooks/sns through the app: topics, signatures, confirmations, notifications."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from router.app import create_app
from tests import sns_signing
from tests.sns_signing import (
    SUBSCRIBE_URL,
    TOPIC_ARN,
    body,
    make_signing_identity,
    sign_sns,
)
from tests.support import INBOUND_TOKEN, router_env

AUTH = {"Authorization": f"Bearer {INBOUND_TOKEN}"}
CALLBACK = "https://bank-charge.internal/breaker/callback"
DATADOG_TEXT = (
    "Bank charge errors are high @sns-system-health\n"
    f"circuit-breaker-callback: {CALLBACK}\n"
    "bank.charge.errors over bank_code:0001 was > 5 on average during the last 5m.\n"
    "Metric value: 12.0\n\n"
    "Monitor Status: https://app.datadoghq.com/monitors#5203057?group=bank_code%3A0001 · "
    "Edit Monitor: https://app.datadoghq.com/monitors#5203057/edit · "
    "Event URL: https://app.datadoghq.com/event/event?id=4437030580617369909"
)


OTHER_TOPIC = "arn:aws:sns:us-east-1:999999999999:other"


def sns_time(offset: timedelta = timedelta()) -> str:
    """An SNS Timestamp `offset` from now, in SNS's own format."""
    moment = datetime.now(UTC) + offset
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def notification_fields(message: str, **kw: Any) -> dict[str, Any]:
    """A Notification envelope published just now, unless a `timestamp` is given."""
    kw.setdefault("timestamp", sns_time())
    return sns_signing.notification_fields(message, **kw)


def confirmation_fields(kind: str = "SubscriptionConfirmation", **kw: Any) -> dict[str, Any]:
    kw.setdefault("timestamp", sns_time())
    return sns_signing.confirmation_fields(kind, **kw)


@pytest.fixture(scope="module")
def identity():
    return make_signing_identity()


class Sns:
    """The app plus what it fetched and confirmed."""

    def __init__(self, redis_url, key_prefix, identity, **env):
        self.fetched: list[str] = []
        self.confirmed: list[str] = []
        self.fail_fetch = False
        self.fail_confirm = False
        self.identity = identity

        def fetch(url: str) -> bytes:
            self.fetched.append(url)
            if self.fail_fetch:
                raise OSError("network down")
            return identity.pem

        def confirm(url: str) -> None:
            if self.fail_confirm:
                raise OSError("sns unreachable")
            self.confirmed.append(url)

        config = router_env(redis_url, key_prefix, ROUTER_SNS_TOPICS=TOPIC_ARN, **env)
        self.client = create_app(
            config, sns_fetch_certificate=fetch, sns_confirm=confirm
        ).test_client()

    def post(self, fields, *, sign=True, version="2", headers=AUTH):
        if sign:
            fields = sign_sns(fields, self.identity.key, version)
        return self.client.post(
            "/webhooks/sns",
            data=body(fields),
            headers={
                **headers,
                "Content-Type": "text/plain; charset=UTF-8",
                "x-amz-sns-message-type": fields["Type"],
            },
        )


@pytest.fixture
def sns(redis_url, key_prefix, identity):
    return Sns(redis_url, key_prefix, identity)


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_signed_datadog_notification_is_queued(sns, version):
    response = sns.post(
        notification_fields(DATADOG_TEXT, subject="[Triggered on {bank_code:0001}] Bank errors"),
        version=version,
    )
    assert response.status_code == 202, response.get_json()
    body_ = response.get_json()
    assert body_["notification"]["monitor_id"] == "5203057"
    assert body_["notification"]["event_id"] == "4437030580617369909"
    assert body_["notification"]["transition"] == "alert"
    assert [d["url"] for d in body_["deliveries"]] == [CALLBACK]


def test_an_sns_retry_with_the_same_message_id_is_one_delivery(sns):
    fields = notification_fields(DATADOG_TEXT)
    first = sns.post(fields).get_json()["deliveries"][0]
    again = sns.post(fields).get_json()["deliveries"][0]
    assert again["id"] == first["id"] and again["duplicate"] is True
    assert sns.fetched == [sns.fetched[0]]  # the certificate is cached


def test_a_signed_message_from_a_topic_not_listed_is_403_without_listing_the_topics(sns):
    response = sns.post(notification_fields(DATADOG_TEXT, topic_arn=OTHER_TOPIC))
    assert response.status_code == 403
    error = response.get_json()["error"]
    assert OTHER_TOPIC in error and "ROUTER_SNS_TOPICS" in error
    assert TOPIC_ARN not in response.get_data(as_text=True)


@pytest.mark.parametrize("kind", ["Notification", "SubscriptionConfirmation"])
def test_an_unsigned_message_from_a_topic_not_listed_is_401_not_403(sns, kind):
    # The signature comes first: who cannot sign learns nothing about the topics.
    if kind == "Notification":
        fields = notification_fields(DATADOG_TEXT, topic_arn=OTHER_TOPIC)
    else:
        fields = confirmation_fields(topic_arn=OTHER_TOPIC)
    signed = sign_sns(fields, sns.identity.key, "2")
    signed["Message"] += " tampered"
    response = sns.post(signed, sign=False)
    assert response.status_code == 401
    assert "signature" in response.get_json()["error"].lower()
    assert TOPIC_ARN not in response.get_data(as_text=True)
    assert sns.confirmed == []


@pytest.mark.parametrize(
    ("offset", "why"),
    [
        pytest.param(-timedelta(hours=1, seconds=5), "older than ROUTER_SNS_MAX_AGE", id="old"),
        pytest.param(-timedelta(days=30), "older than ROUTER_SNS_MAX_AGE", id="very-old"),
        pytest.param(timedelta(hours=1), "in the future", id="future"),
    ],
)
def test_a_signed_message_outside_the_time_window_is_refused_once(
    sns, redis, key_prefix, offset, why
):
    fields = notification_fields(DATADOG_TEXT, timestamp=sns_time(offset))
    response = sns.post(fields)
    # A 4xx: SNS does not retry it, so a replay is refused once instead of again and again.
    assert response.status_code == 403, response.get_json()
    assert why in response.get_json()["error"]
    assert redis.exists(f"{key_prefix}:deliveries") == 0


def test_an_old_subscription_confirmation_is_not_visited(sns):
    response = sns.post(confirmation_fields(timestamp=sns_time(-timedelta(hours=2))))
    assert response.status_code == 403
    assert sns.confirmed == []


def test_the_time_window_follows_router_sns_max_age(redis_url, key_prefix, identity):
    sns = Sns(redis_url, key_prefix, identity, ROUTER_SNS_MAX_AGE="10m")
    old = sns.post(notification_fields(DATADOG_TEXT, timestamp=sns_time(-timedelta(minutes=11))))
    assert old.status_code == 403
    assert "10m" in old.get_json()["error"]
    recent = notification_fields(
        DATADOG_TEXT, timestamp=sns_time(-timedelta(minutes=9)), message_id="recent-1"
    )
    assert sns.post(recent).status_code == 202


def test_a_tampered_message_is_401(sns):
    fields = sign_sns(notification_fields(DATADOG_TEXT), sns.identity.key, "2")
    fields["Message"] = fields["Message"].replace("bank-charge", "evil")
    response = sns.post(fields, sign=False)
    assert response.status_code == 401
    assert "signature" in response.get_json()["error"].lower()


def test_the_inbound_token_is_required_too(sns):
    assert sns.post(notification_fields(DATADOG_TEXT), headers={}).status_code == 401


def test_subscription_confirmation_visits_the_subscribe_url(sns):
    response = sns.post(confirmation_fields())
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "subscribed"
    assert sns.confirmed == [SUBSCRIBE_URL]


def test_a_failed_confirmation_is_503_so_sns_retries(sns):
    sns.fail_confirm = True
    response = sns.post(confirmation_fields())
    assert response.status_code == 503
    assert "confirm" in response.get_json()["error"]


def test_unsubscribe_confirmation_is_acknowledged(sns):
    response = sns.post(confirmation_fields("UnsubscribeConfirmation"))
    assert response.status_code == 200
    assert response.get_json()["status"] == "unsubscribed"
    assert sns.confirmed == []


def test_a_certificate_that_cannot_be_fetched_is_503(sns):
    sns.fail_fetch = True
    response = sns.post(notification_fields(DATADOG_TEXT))
    assert response.status_code == 503
    assert response.headers["Retry-After"]


def test_not_json_is_400(sns):
    response = sns.client.post("/webhooks/sns", data=b"hello", headers=AUTH)
    assert response.status_code == 400
    assert "JSON" in response.get_json()["error"]


def test_a_non_datadog_message_is_422(sns):
    response = sns.post(notification_fields("just some text", subject="hello"))
    assert response.status_code == 422
    assert "Datadog" in response.get_json()["error"]


@pytest.mark.parametrize(
    "cert_url",
    ["https://[sns.us-east-1.amazonaws.com]/a.pem", "https://[/a.pem"],
)
def test_a_malformed_certificate_url_is_401_not_500(sns, cert_url):
    response = sns.post(notification_fields(DATADOG_TEXT, cert_url=cert_url))
    assert response.status_code == 401
    assert sns.fetched == []


def test_a_lone_surrogate_in_an_sns_body_is_400(sns):
    raw = body(notification_fields("x")).replace(b'"x"', b'"\\ud800"')
    response = sns.client.post("/webhooks/sns", data=raw, headers=AUTH)
    assert response.status_code == 400
