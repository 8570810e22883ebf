"""The fault harness (bench/faults.py) in its quickest mode, so CI keeps it and the router honest.

Real processes on loopback: its own redis-server with append-only persistence, gunicorn, two
`router worker`s, a callback endpoint recording webhook-ids.
"""

from __future__ import annotations

import pytest

from bench.fault_scenarios import Result, Run, redis_restart, worker_sigkill

# A storm of 100 notifications over two seconds: room for three kills or a restart in it.
NOTIFICATIONS = 100
RATE = 50.0


def assert_nothing_lost(result: Result) -> None:
    failed = [what for what, ok in result.checks if not ok]
    assert not failed, f"{result.name}: failed checks {failed}; notes {result.notes}"
    for label, totals in result.accounts:
        assert totals.sent == NOTIFICATIONS, label
        assert totals.accepted == totals.delivered == NOTIFICATIONS, (label, totals)
        assert totals.lost == 0, (label, totals)
    assert result.ok


@pytest.mark.timeout(90)
def test_workers_sigkilled_three_times_during_a_storm_lose_nothing(tmp_path):
    result = worker_sigkill(Run(tmp_path, NOTIFICATIONS, RATE, quick=True))
    assert_nothing_lost(result)
    [(_, totals)] = result.accounts
    assert totals.server_errors == {}


@pytest.mark.timeout(90)
def test_redis_restarted_during_a_storm_is_503_never_500_and_loses_nothing(tmp_path):
    result = redis_restart(Run(tmp_path, NOTIFICATIONS, RATE, quick=True))
    assert_nothing_lost(result)
    [(_, totals)] = result.accounts
    assert set(totals.server_errors) == {503}
