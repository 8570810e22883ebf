"""Schemathesis against the router's own `/openapi.json`, in-process: no 5xx, readable refusals,
and no answer the description does not list.

A few hundred cases (4 valid and 4 invalid requests per operation) take about 20 s;
`bench/abuse.py` runs thousands against gunicorn.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from router.app import create_app
from tests.abuse_fuzz import ADMIN_TOKEN, fuzz
from tests.support import router_env

EXAMPLES_PER_OPERATION = 4


@pytest.fixture
def quiet_router() -> Iterator[None]:
    # Thousands of warnings about the junk the cases send would only bury a failure's output.
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


@pytest.mark.timeout(180)  # about 20 s alone; the bound is for a machine shared with others
def test_no_request_the_description_allows_or_breaks_gets_a_5xx(
    redis_url, key_prefix, quiet_router
):
    app = create_app(router_env(redis_url, key_prefix, ROUTER_ADMIN_TOKEN=ADMIN_TOKEN))
    document = app.test_client().get("/openapi.json").get_json()
    report = fuzz(
        document,
        lambda case, headers: case.call(app=app, headers=headers),
        examples=EXAMPLES_PER_OPERATION,
    )
    assert report.cases >= 250, report.summary()
    assert report.server_errors == [], "\n".join(report.server_errors[:5])
    assert report.unreadable_refusals == [], "\n".join(report.unreadable_refusals[:5])
    # And /openapi.json lists every status and Content-Type the app answered with.
    assert report.undescribed_answers == [], "\n".join(report.undescribed_answers[:5])
    # Cases reached past authentication and the parsers, not only their doors.
    assert {200, 202, 400, 401, 404, 422} <= set(report.statuses), report.summary()
