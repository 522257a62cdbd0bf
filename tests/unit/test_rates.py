"""Recent shares from cumulative counters: what `kernsplit show --watch` displays."""
from __future__ import annotations

import pytest

from kernsplit.agent.rates import RateWindow


def test_first_sample_has_no_rate_yet():
    w = RateWindow(30)
    w.add(0.0, {"v1": 500})
    assert (w.recent("v1").delta, w.recent("v1").rate) == (0, 0.0)


def test_delta_over_window_ignores_history_before_it():
    """After a rollout to 0/100 the old backend's total stays high, but its recent share is 0."""
    w = RateWindow(10)
    w.add(0.0, {"v1": 900, "v2": 100})
    w.add(5.0, {"v1": 950, "v2": 110})
    w.add(20.0, {"v1": 950, "v2": 300})     # rollout: v1 gets nothing any more
    w.add(25.0, {"v1": 950, "v2": 400})
    assert w.recent("v1").delta == 0
    assert w.recent("v2").delta == 290      # from the baseline at t=5 (newest at or before 25-10)
    assert w.recent("v2").seconds == 20.0
    assert w.recent("v2").rate == pytest.approx(14.5)


def test_counter_reset_counts_the_new_value():
    w = RateWindow(60)
    w.add(0.0, {"v2": 1000})
    w.add(1.0, {"v2": 7})                   # programs replaced: counters restarted from 0
    w.add(2.0, {"v2": 10})
    assert w.recent("v2").delta == 10


def test_backend_added_later_counts_from_its_first_sample():
    w = RateWindow(60)
    w.add(0.0, {"v1": 5})
    w.add(1.0, {"v1": 6, "v3": 40})
    w.add(2.0, {"v1": 6, "v3": 45})
    assert w.recent("v3").delta == 5


def test_window_must_be_positive():
    with pytest.raises(ValueError):
        RateWindow(0)
