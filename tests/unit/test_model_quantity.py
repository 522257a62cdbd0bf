"""Weights: Kubernetes quantities to exact milli-units, and whole numbers."""
from decimal import Decimal

import pytest

from kernsplit.agent.model import WeightError, parse_quantity, parse_whole


@pytest.mark.parametrize("text, milli", [
    ("1", 1000), (1, 1000), ("500m", 500), ("1.5", 1500), (Decimal("1.5"), 1500), ("0m", 0), ("0", 0),
    ("900m", 900), ("100m", 100), ("1000m", 1000), ("0.1", 100), (".5", 500), ("2k", 2_000_000),
    ("1e3", 1_000_000), ("1E-3", 1), ("1500000u", 1500), ("+3", 3000), ("1Ki", 1_024_000),
    ("2.", 2000), (" 900m ", 900),
])
def test_quantities_become_exact_milli_units(text, milli):
    assert parse_quantity(text) == milli


def test_one_against_500m_is_two_to_one_not_one_to_five_hundred():
    # The SMI Go SDK bug: it compared unscaled values (1 vs 500) and inverted the split.
    assert parse_quantity("1") / parse_quantity("500m") == 2


@pytest.mark.parametrize("text, message", [
    ("9x", '"9x" is not a quantity (expected e.g. 900m, 1, 1.5)'),
    ("", '"" is not a quantity (expected e.g. 900m, 1, 1.5)'),
    ("m", '"m" is not a quantity (expected e.g. 900m, 1, 1.5)'),
    ("1.2.3", '"1.2.3" is not a quantity (expected e.g. 900m, 1, 1.5)'),
    (True, '"true" is not a quantity (expected e.g. 900m, 1, 1.5)'),
    ("-5", '"-5" is negative'),
    (-5, '"-5" is negative'),
    ("-100m", '"-100m" is negative'),
    ("0.5m", '"0.5m" is finer than 1m (weights are whole milli-units)'),
    ("1n", '"1n" is finer than 1m (weights are whole milli-units)'),
    ("3G", '"3G" is too large (at most 2147483647 milli-units)'),
])
def test_bad_quantities_are_rejected_with_their_text(text, message):
    with pytest.raises(WeightError) as caught:
        parse_quantity(text)
    assert str(caught.value) == message


def test_floats_are_refused_because_they_are_inexact():
    with pytest.raises(TypeError):
        parse_quantity(0.1)


@pytest.mark.parametrize("value, number", [(0, 0), (5, 5), ("7", 7), (Decimal("3.0"), 3), (1_000_000, 1_000_000)])
def test_whole_numbers(value, number):
    assert parse_whole(value) == number


@pytest.mark.parametrize("value, message", [
    ("900m", '"900m" is not a whole number'),
    (Decimal("1.5"), '"1.5" is not a whole number'),
    (None, '"null" is not a whole number'),
    (False, '"false" is not a whole number'),
    (-5, '"-5" is negative'),
    (2**31, '"2147483648" is too large (at most 2147483647)'),
])
def test_bad_whole_numbers(value, message):
    with pytest.raises(WeightError) as caught:
        parse_whole(value)
    assert str(caught.value) == message
