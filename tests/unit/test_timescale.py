"""KERNSPLIT_TEST_TIME_SCALE: one factor stretches every wait of the tests and the lab."""
from __future__ import annotations

import pytest

from kernsplit.agent.lab.timescale import ENV, scaled, time_scale


def test_unset_means_the_fast_machine_numbers(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert scaled(10) == 10


def test_the_factor_multiplies_every_wait(monkeypatch):
    monkeypatch.setenv(ENV, "4")
    assert scaled(2.5) == 10.0
    assert time_scale() == 4.0


@pytest.mark.parametrize("raw, says", [("fast", "is not a number"), ("0", "must be a positive number"),
                                       ("-2", "must be a positive number"), ("inf", "must be a positive number")])
def test_a_bad_factor_is_an_error_naming_the_variable(monkeypatch, raw, says):
    monkeypatch.setenv(ENV, raw)
    with pytest.raises(ValueError, match=f"{ENV}=.*{says}"):
        scaled(1)
