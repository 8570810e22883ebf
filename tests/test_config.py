"""Settings from the environment: durations, secrets, validation and what each process needs."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from router.config import (
    DEFAULT_CALLBACK_KEYWORD,
    DEFAULT_CLAIM_IDLE_S,
    DEFAULT_DELIVERY_RETENTION_S,
    DEFAULT_DELIVERY_TIMEOUT_S,
    DEFAULT_ENRICH_BUDGET_S,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_PER_ENDPOINT_CONCURRENCY,
    DEFAULT_RECONCILE_INTERVAL_S,
    DEFAULT_SNS_MAX_AGE_S,
    DEFAULT_WORKER_CONCURRENCY,
    SECRET_NAMES,
    Settings,
    format_duration,
    parse_duration,
    parse_schedule,
)
from router.errors import ConfigError
from router.keys import DEFAULT_ROUTER_PREFIX
from tests.support import SIGNING_SECRET

ALLOW = "https://bank-charge.internal/breaker/"

# What a complete worker environment needs; tests add or override one thing at a time.
WORKER_ENV = {
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "ROUTER_SIGNING_SECRET": SIGNING_SECRET,
    "ROUTER_CALLBACK_ALLOW": ALLOW,
}


def secret_of(n_bytes: int) -> str:
    return "whsec_" + base64.b64encode(b"k" * n_bytes).decode()


# -- durations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("5s", 5.0),
        ("1m", 60.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("30", 30.0),
        ("0.5", 0.5),
        ("1.5m", 90.0),
        (" 5s ", 5.0),
        ("10 s", 10.0),
    ],
)
def test_parse_duration_reads_units_and_bare_seconds(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "   ", "5x", "-5s", "s", "1h30m", "5 minutes", "1,5s", "ms"])
def test_parse_duration_rejects_junk_naming_the_variable(text):
    with pytest.raises(ConfigError) as caught:
        parse_duration(text, name="ROUTER_CLAIM_IDLE")
    message = str(caught.value)
    assert message.startswith("ROUTER_CLAIM_IDLE: expected a duration such as 250ms, 5s")
    assert message.endswith(f"got {text!r}")


@pytest.mark.parametrize(
    ("text", "schedule"),
    [
        ("5s,1m,5m,30m,2h", (5.0, 60.0, 300.0, 1800.0, 7200.0)),
        (" 5s , 1m ", (5.0, 60.0)),
        ("5s,,1m,", (5.0, 60.0)),
        ("100ms", (0.1,)),
        ("10", (10.0,)),
    ],
)
def test_parse_schedule(text, schedule):
    assert parse_schedule(text) == pytest.approx(schedule)


@pytest.mark.parametrize(
    ("text", "expected_in_message"),
    [
        ("", "expected durations such as 5s,1m,5m,30m,2h, got ''"),
        (" , ,", "expected durations such as 5s,1m,5m,30m,2h, got ' , ,'"),
        ("5s,soon", "expected a duration such as 250ms, 5s, 1m, 2h or 1d, got 'soon'"),
    ],
)
def test_parse_schedule_rejects_junk_naming_the_variable(text, expected_in_message):
    with pytest.raises(ConfigError) as caught:
        parse_schedule(text)
    assert str(caught.value).startswith("ROUTER_RETRY_SCHEDULE: ")
    assert expected_in_message in str(caught.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (86400, "1d"),
        (172800, "2d"),
        (7200, "2h"),
        (120, "2m"),
        (90, "90s"),
        (5, "5s"),
        (3660, "61m"),
        (0.25, "250ms"),
        (1.5, "1500ms"),
        (0, "0ms"),
    ],
)
def test_format_duration_picks_the_largest_exact_unit(seconds, text):
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


# -- Settings.from_env: defaults and every variable ---------------------------------------


def test_from_env_defaults_for_an_empty_environment():
    settings = Settings.from_env({})
    assert settings.redis_url is None
    assert settings.inbound_token is None
    assert settings.inbound_auth_disabled is False
    assert settings.signing_secret is None
    assert settings.callback_allow == ()
    assert settings.retry_schedule == (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0)
    assert settings.sns_topics == ()
    assert settings.reconcile_interval_s == DEFAULT_RECONCILE_INTERVAL_S == 60.0
    assert settings.heartbeat_url is None
    assert settings.admin_token is None
    assert (settings.dd_api_key, settings.dd_app_key) == (None, None)
    assert (settings.dd_site, settings.dd_api_host) == (None, None)
    assert settings.slack_webhook_url is None
    assert settings.key_prefix == DEFAULT_ROUTER_PREFIX == "br"
    assert settings.callback_keyword == DEFAULT_CALLBACK_KEYWORD == "circuit-breaker-callback"
    assert settings.max_body_bytes == DEFAULT_MAX_BODY_BYTES == 1024 * 1024
    assert settings.delivery_timeout_s == DEFAULT_DELIVERY_TIMEOUT_S == 10.0
    assert settings.claim_idle_s == DEFAULT_CLAIM_IDLE_S == 60.0
    assert settings.worker_concurrency == DEFAULT_WORKER_CONCURRENCY == 64
    assert settings.per_endpoint_concurrency == DEFAULT_PER_ENDPOINT_CONCURRENCY == 8
    assert settings.delivery_retention_s == DEFAULT_DELIVERY_RETENTION_S == 7 * 86400.0
    assert settings.enrich_budget_s == DEFAULT_ENRICH_BUDGET_S == 3.0


def test_from_env_empty_strings_mean_the_default():
    env = {
        name: ""
        for name in (
            "REDIS_URL",
            "ROUTER_INBOUND_AUTH",
            "ROUTER_RETRY_SCHEDULE",
            "ROUTER_DELIVERY_TIMEOUT",
            "ROUTER_WORKER_CONCURRENCY",
            "ROUTER_KEY_PREFIX",
            "ROUTER_CALLBACK_ALLOW",
        )
    }
    assert Settings.from_env(env) == Settings.from_env({})


def test_from_env_reads_every_variable():
    env = {
        "REDIS_URL": "redis://cache:6380/2",
        "ROUTER_INBOUND_TOKEN": "in-token",
        "ROUTER_INBOUND_AUTH": "token",
        "ROUTER_SIGNING_SECRET": SIGNING_SECRET,
        "ROUTER_CALLBACK_ALLOW": " https://a.internal/breaker/ ,http://127.0.0.1:8080,",
        "ROUTER_RETRY_SCHEDULE": "1s,2m",
        "ROUTER_SNS_TOPICS": "arn:aws:sns:eu-west-1:1:a, arn:aws:sns:eu-west-1:1:b",
        "ROUTER_RECONCILE_INTERVAL": "5m",
        "ROUTER_HEARTBEAT_URL": "https://hc-ping.com/abc",
        "ROUTER_ADMIN_TOKEN": "admin-token",
        "DD_API_KEY": "api-key",
        "DD_APP_KEY": "app-key",
        "DD_SITE": "datadoghq.eu",
        "DD_API_HOST": "http://127.0.0.1:9999",
        "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/x",
        "ROUTER_KEY_PREFIX": "router-a",
        "ROUTER_CALLBACK_KEYWORD": "breaker-hook",
        "ROUTER_MAX_BODY_BYTES": "2048",
        "ROUTER_DELIVERY_TIMEOUT": "2500ms",
        "ROUTER_CLAIM_IDLE": "2m",
        "ROUTER_WORKER_CONCURRENCY": "16",
        "ROUTER_PER_ENDPOINT_CONCURRENCY": "4",
        "ROUTER_DELIVERY_RETENTION": "1d",
        "ROUTER_ENRICH_BUDGET": "1.5s",
    }
    settings = Settings.from_env(env)
    assert settings == Settings(
        redis_url="redis://cache:6380/2",
        inbound_token="in-token",
        inbound_auth_disabled=False,
        signing_secret=SIGNING_SECRET,
        callback_allow=("https://a.internal/breaker/", "http://127.0.0.1:8080"),
        retry_schedule=(1.0, 120.0),
        sns_topics=("arn:aws:sns:eu-west-1:1:a", "arn:aws:sns:eu-west-1:1:b"),
        reconcile_interval_s=300.0,
        heartbeat_url="https://hc-ping.com/abc",
        admin_token="admin-token",
        dd_api_key="api-key",
        dd_app_key="app-key",
        dd_site="datadoghq.eu",
        dd_api_host="http://127.0.0.1:9999",
        slack_webhook_url="https://hooks.slack.com/services/x",
        key_prefix="router-a",
        callback_keyword="breaker-hook",
        max_body_bytes=2048,
        delivery_timeout_s=2.5,
        claim_idle_s=120.0,
        worker_concurrency=16,
        per_endpoint_concurrency=4,
        delivery_retention_s=86400.0,
        enrich_budget_s=1.5,
    )


@pytest.mark.parametrize(
    "name",
    [
        "ROUTER_RECONCILE_INTERVAL",
        "ROUTER_DELIVERY_TIMEOUT",
        "ROUTER_CLAIM_IDLE",
        "ROUTER_DELIVERY_RETENTION",
        "ROUTER_ENRICH_BUDGET",
        "ROUTER_SNS_MAX_AGE",
    ],
)
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("soon", "expected a duration such as 250ms, 5s, 1m, 2h or 1d, got 'soon'"),
        ("0", "must be greater than zero, got 0.0"),
        ("0ms", "must be greater than zero, got 0.0"),
    ],
)
def test_duration_variables_reject_bad_values_by_name(name, value, expected):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value})
    assert str(caught.value) == f"{name}: {expected}"


@pytest.mark.parametrize(
    "name",
    ["ROUTER_MAX_BODY_BYTES", "ROUTER_WORKER_CONCURRENCY", "ROUTER_PER_ENDPOINT_CONCURRENCY"],
)
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("many", "expected a whole number, got 'many'"),
        ("1.5", "expected a whole number, got '1.5'"),
        ("1MB", "expected a whole number, got '1MB'"),
        ("0", "must be greater than zero, got 0"),
        ("-3", "must be greater than zero, got -3"),
    ],
)
def test_integer_variables_reject_bad_values_by_name(name, value, expected):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value})
    assert str(caught.value) == f"{name}: {expected}"


def test_a_bad_retry_schedule_names_the_variable():
    with pytest.raises(ConfigError, match=r"^ROUTER_RETRY_SCHEDULE: .*got 'often'"):
        Settings.from_env({"ROUTER_RETRY_SCHEDULE": "5s,often"})


# -- secrets from NAME or NAME_FILE -------------------------------------------------------

SECRET_FIELDS = {
    "ROUTER_INBOUND_TOKEN": ("inbound_token", "token-from-file"),
    "ROUTER_SIGNING_SECRET": ("signing_secret", SIGNING_SECRET),
    "ROUTER_ADMIN_TOKEN": ("admin_token", "admin-from-file"),
    "DD_API_KEY": ("dd_api_key", "dd-api-from-file"),
    "DD_APP_KEY": ("dd_app_key", "dd-app-from-file"),
    "SLACK_WEBHOOK_URL": ("slack_webhook_url", "https://hooks.slack.com/services/f"),
    "REDIS_URL": ("redis_url", "redis://from-file:6379/0"),
}


def test_every_secret_name_is_covered_here():
    assert set(SECRET_FIELDS) == set(SECRET_NAMES)


@pytest.mark.parametrize("name", sorted(SECRET_FIELDS))
def test_a_secret_is_read_from_its_file_and_stripped(name, tmp_path):
    attribute, value = SECRET_FIELDS[name]
    path = tmp_path / "secret"
    path.write_text(f"  {value}\n\n")
    settings = Settings.from_env({f"{name}_FILE": str(path)})
    assert getattr(settings, attribute) == value


@pytest.mark.parametrize("name", sorted(SECRET_FIELDS))
def test_a_secret_is_read_from_the_variable(name):
    attribute, value = SECRET_FIELDS[name]
    assert getattr(Settings.from_env({name: value}), attribute) == value


@pytest.mark.parametrize("name", sorted(SECRET_FIELDS))
def test_a_secret_set_both_ways_is_refused(name, tmp_path):
    _attribute, value = SECRET_FIELDS[name]
    path = tmp_path / "secret"
    path.write_text(value)
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value, f"{name}_FILE": str(path)})
    assert str(caught.value) == f"{name} and {name}_FILE are both set; set only one"


def test_an_empty_variable_beside_its_file_is_not_both_set(tmp_path):
    path = tmp_path / "token"
    path.write_text("from-file")
    settings = Settings.from_env(
        {"ROUTER_INBOUND_TOKEN": "", "ROUTER_INBOUND_TOKEN_FILE": str(path)}
    )
    assert settings.inbound_token == "from-file"


@pytest.mark.parametrize(
    ("make_path", "reason"),
    [
        (lambda tmp: tmp / "missing", "No such file or directory"),
        (lambda tmp: tmp, "Is a directory"),
    ],
)
def test_an_unreadable_secret_file_names_the_variable_and_path(make_path, reason, tmp_path):
    path: Path = make_path(tmp_path)
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"DD_API_KEY_FILE": str(path)})
    assert str(caught.value) == f"DD_API_KEY_FILE: cannot read {path}: {reason}"


# -- signing secret -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        (
            SIGNING_SECRET.removeprefix("whsec_"),
            "ROUTER_SIGNING_SECRET: expected a Standard Webhooks secret starting with 'whsec_' "
            "(generate one with `router secret`)",
        ),
        (
            "WHSEC_" + SIGNING_SECRET.removeprefix("whsec_"),
            "ROUTER_SIGNING_SECRET: expected a Standard Webhooks secret starting with 'whsec_'",
        ),
        (
            secret_of(16),
            "ROUTER_SIGNING_SECRET: the secret must hold at least 24 random bytes, it has 16",
        ),
        (
            secret_of(23),
            "ROUTER_SIGNING_SECRET: the secret must hold at least 24 random bytes, it has 23",
        ),
        (
            "whsec_",
            "ROUTER_SIGNING_SECRET: the secret must hold at least 24 random bytes, it has 0",
        ),
        ("whsec_abcde", "ROUTER_SIGNING_SECRET: the part after 'whsec_' is not base64"),
    ],
)
def test_a_bad_signing_secret_is_refused(secret, expected):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"ROUTER_SIGNING_SECRET": secret})
    assert str(caught.value).startswith(expected)


@pytest.mark.parametrize(
    "secret",
    [SIGNING_SECRET, secret_of(24), secret_of(32), secret_of(32).rstrip("=")],
)
def test_a_good_signing_secret_is_kept(secret):
    assert Settings.from_env({"ROUTER_SIGNING_SECRET": secret}).signing_secret == secret


def test_a_bad_signing_secret_from_a_file_is_refused(tmp_path):
    path = tmp_path / "secret"
    path.write_text(secret_of(8))
    with pytest.raises(ConfigError, match="at least 24 random bytes, it has 8"):
        Settings.from_env({"ROUTER_SIGNING_SECRET_FILE": str(path)})


# -- inbound auth and the callback allow-list ---------------------------------------------


@pytest.mark.parametrize(
    ("value", "disabled"),
    [("token", False), ("TOKEN", False), ("", False), ("none", True), (" None ", True)],
)
def test_router_inbound_auth_values(value, disabled):
    assert Settings.from_env({"ROUTER_INBOUND_AUTH": value}).inbound_auth_disabled is disabled


@pytest.mark.parametrize(("value", "shown"), [("off", "'off'"), ("Basic", "'basic'")])
def test_router_inbound_auth_rejects_other_values(value, shown):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"ROUTER_INBOUND_AUTH": value})
    assert str(caught.value) == f"ROUTER_INBOUND_AUTH: expected 'token' or 'none', got {shown}"


@pytest.mark.parametrize(
    "entry",
    [
        "bank-charge.internal/breaker/",
        "ftp://bank-charge.internal/breaker/",
        "https://",
        "https:///breaker/",
        "//bank-charge.internal/breaker/",
    ],
)
def test_router_callback_allow_rejects_entries_that_are_not_http_url_prefixes(entry):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"ROUTER_CALLBACK_ALLOW": f"https://ok.internal/,{entry}"})
    message = str(caught.value)
    assert message.startswith("ROUTER_CALLBACK_ALLOW: each entry must be an http(s) URL prefix")
    assert message.endswith(f"got {entry!r}")


def test_router_callback_allow_rejects_an_entry_with_a_bad_port():
    with pytest.raises(
        ConfigError, match=r"^ROUTER_CALLBACK_ALLOW: .*'https://svc\.internal:99999/"
    ):
        Settings.from_env({"ROUTER_CALLBACK_ALLOW": "https://svc.internal:99999/breaker/"})


def test_router_callback_allow_reports_a_malformed_ipv6_entry_as_a_config_error():
    with pytest.raises(ConfigError, match=r"^ROUTER_CALLBACK_ALLOW: .*'http://\[::1/breaker'"):
        Settings.from_env({"ROUTER_CALLBACK_ALLOW": "http://[::1/breaker"})


# -- what each process requires -----------------------------------------------------------


def test_require_redis_names_redis_url():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({}).require_redis()
    assert str(caught.value).startswith("REDIS_URL is not set")
    assert Settings.from_env({"REDIS_URL": "redis://x:1/0"}).require_redis() == "redis://x:1/0"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "REDIS_URL is not set"),
        ({"REDIS_URL": "redis://x/0"}, "ROUTER_INBOUND_TOKEN is not set"),
    ],
)
def test_require_web_names_the_missing_variable(env, expected):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env).require_web()
    assert str(caught.value).startswith(expected)
    if expected.startswith("ROUTER_INBOUND_TOKEN"):
        assert "ROUTER_INBOUND_AUTH=none" in str(caught.value)


@pytest.mark.parametrize(
    "env",
    [
        {"REDIS_URL": "redis://x/0", "ROUTER_INBOUND_TOKEN": "t"},
        {"REDIS_URL": "redis://x/0", "ROUTER_INBOUND_AUTH": "none"},
    ],
)
def test_require_web_passes_with_a_token_or_auth_disabled(env):
    Settings.from_env(env).require_web()  # raises ConfigError when something is missing


@pytest.mark.parametrize(
    ("missing", "expected", "hint"),
    [
        ("REDIS_URL", "REDIS_URL is not set", "Redis"),
        ("ROUTER_SIGNING_SECRET", "ROUTER_SIGNING_SECRET is not set", "`router secret`"),
        ("ROUTER_CALLBACK_ALLOW", "ROUTER_CALLBACK_ALLOW is not set", "URL prefixes"),
    ],
)
def test_require_worker_names_the_missing_variable(missing, expected, hint):
    env = {k: v for k, v in WORKER_ENV.items() if k != missing}
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env).require_worker()
    assert str(caught.value).startswith(expected)
    assert hint in str(caught.value)


def test_require_worker_returns_the_signing_secret():
    assert Settings.from_env(WORKER_ENV).require_worker() == SIGNING_SECRET


@pytest.mark.parametrize(
    ("claim_idle", "timeout", "budget", "ok"),
    [
        ("60s", None, None, True),  # defaults: 60 > max(10 + 1, 1.5 * (3 + 1.5 + 1))
        ("12s", None, None, True),  # the attempt bounds it: 12 > 10 + 1
        ("11s", None, None, False),  # equal is not enough
        ("10s", None, None, False),
        ("21s", "20s", "9s", False),  # 21 = 20 + 1
        ("22s", "20s", "9s", True),
        # Enrichment plus parking bound it: 1.5 * (9 + 1.5 + 1) = 17.25 > 1 + 1.
        ("17s", "1s", "9s", False),
        ("18s", "1s", "9s", True),
        ("5s", "2s", "500ms", True),  # 1.5 * (0.5 + 2.5) = 4.5
        ("4s", "2s", "500ms", False),
    ],
)
def test_require_worker_checks_claim_idle_against_everything_before_a_refresh(
    claim_idle, timeout, budget, ok
):
    env = dict(WORKER_ENV, ROUTER_CLAIM_IDLE=claim_idle)
    if timeout:
        env["ROUTER_DELIVERY_TIMEOUT"] = timeout
    if budget:
        env["ROUTER_ENRICH_BUDGET"] = budget
    settings = Settings.from_env(env)
    if ok:
        assert settings.require_worker() == SIGNING_SECRET
        return
    with pytest.raises(ConfigError) as caught:
        settings.require_worker()
    message = str(caught.value)
    assert message.startswith(f"ROUTER_CLAIM_IDLE ({claim_idle}) must exceed ")
    assert f"ROUTER_DELIVERY_TIMEOUT ({timeout or '10s'}) plus 1s" in message
    assert f"ROUTER_ENRICH_BUDGET ({budget or '3s'})" in message
    assert "waiting for its endpoint" in message and "sent twice" in message


def test_the_claim_idle_check_knows_how_late_the_worker_sheds_parked_deliveries():
    from router.config import PARKED_SHED_LATENCY_S
    from router.worker import READ_BLOCK_MS, SHED_INTERVAL_S

    assert PARKED_SHED_LATENCY_S >= SHED_INTERVAL_S + READ_BLOCK_MS / 1000


# -- SNS time window ---------------------------------------------------------------------------


def test_sns_max_age_defaults_to_one_hour_and_reads_a_duration():
    assert Settings.from_env({}).sns_max_age_s == DEFAULT_SNS_MAX_AGE_S == 3600.0
    assert Settings.from_env({"ROUTER_SNS_MAX_AGE": "15m"}).sns_max_age_s == 900.0


def test_sns_max_age_must_be_shorter_than_the_retention_that_recognises_retries():
    env = {
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "ROUTER_INBOUND_TOKEN": "in-token",
        "ROUTER_SNS_MAX_AGE": "2h",
        "ROUTER_DELIVERY_RETENTION": "1h",
    }
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env).require_web()
    message = str(caught.value)
    assert "ROUTER_SNS_MAX_AGE (2h)" in message and "ROUTER_DELIVERY_RETENTION (1h)" in message
    Settings.from_env({**env, "ROUTER_SNS_MAX_AGE": "30m"}).require_web()
