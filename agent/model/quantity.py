"""Exact parsing of split weights.

SMI v1alpha1 (and the seed text) weigh backends with Kubernetes quantities (`900m`, `1`, `1.5`);
later SMI versions and Gateway API use whole numbers. Quantities are normalised to integer
milli-units with exact arithmetic: the SMI Go SDK took the unscaled value, so `1` vs `500m` became
1 vs 500 and inverted the split. Floats never enter: YAML floats reach us as `Decimal`.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

# Largest normalised weight we accept (int32, like Kubernetes' weight fields). Keeps every
# dataplane's arithmetic bounded.
MAX_WEIGHT = 2**31 - 1

_SUFFIX = {
    "": Fraction(1), "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000),
    "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
    "P": Fraction(10**15), "E": Fraction(10**18),
    "Ki": Fraction(2**10), "Mi": Fraction(2**20), "Gi": Fraction(2**30), "Ti": Fraction(2**40),
    "Pi": Fraction(2**50), "Ei": Fraction(2**60),
}
# Kubernetes quantity grammar: sign, digits with optional fraction, then a decimal exponent
# (e3, E-2) or an SI / binary suffix. The exponent is tried first so that "1E3" is 1000.
_QUANTITY = re.compile(
    r"(?P<sign>[+-]?)(?P<num>\d+(?:\.\d*)?|\.\d+)"
    r"(?:[eE](?P<exp>[+-]?\d+)|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?"
)
_INTEGER = re.compile(r"[+-]?\d+")
# Decimal exponents beyond these cannot be a weight. Checked before the exact value is built:
# `1.0e+999999999` is a valid YAML or JSON number, and building it exactly takes minutes and
# gigabytes.
_LARGEST_DIGIT = 30     # adjusted exponent: 1e30 is far above MAX_WEIGHT in any unit
_FINEST_DIGIT = -30     # and 1e-30 far below one milli-unit


class WeightError(ValueError):
    """A weight that cannot be used. `str()` is the user-facing message: `"-5" is negative`."""

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(f'"{text}" {reason}')
        self.text = text
        self.reason = reason


def weight_text(value: object) -> str:
    """The weight as the user wrote it (as near as YAML lets us see it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def _check_range(text: str, value: int, unit: str) -> int:
    if value < 0:
        raise WeightError(text, "is negative")
    if value > MAX_WEIGHT:
        raise WeightError(text, f"is too large (at most {MAX_WEIGHT}{' ' + unit if unit else ''})")
    return value


def _bounded(shown: str, value: Decimal, unit: str) -> Decimal:
    """`value` when its magnitude can be a weight at all; else the error it will end in."""
    if value.is_zero():
        return value
    if value.adjusted() > _LARGEST_DIGIT:
        raise WeightError(shown, "is negative" if value < 0 else
                          f"is too large (at most {MAX_WEIGHT}{' ' + unit if unit else ''})")
    if value.adjusted() < _FINEST_DIGIT:
        raise WeightError(shown, "is negative" if value < 0 else "is finer than 1m (weights are whole milli-units)")
    return value


def parse_quantity(text: str | int | Decimal) -> int:
    """A Kubernetes quantity as exact integer milli-units: `1` -> 1000, `500m` -> 500, `1.5` -> 1500.

    Raises WeightError for anything that is not a quantity, is negative, is finer than 1m or
    is above MAX_WEIGHT milli-units.
    """
    shown = weight_text(text)
    if isinstance(text, bool) or text is None:
        raise WeightError(shown, "is not a quantity (expected e.g. 900m, 1, 1.5)")
    if isinstance(text, int):
        return _check_range(shown, text * 1000, "milli-units")
    if isinstance(text, float):
        raise TypeError("parse_quantity takes text, int or Decimal, never float (inexact)")
    if isinstance(text, Decimal):
        if not text.is_finite():
            raise WeightError(shown, "is not a quantity (expected e.g. 900m, 1, 1.5)")
        value = Fraction(_bounded(shown, text, "milli-units"))
    else:
        match = _QUANTITY.fullmatch(str(text).strip())
        if match is None:
            raise WeightError(shown, "is not a quantity (expected e.g. 900m, 1, 1.5)")
        value = Fraction(Decimal(match["num"]))
        if match["exp"] is not None:
            exponent = int(match["exp"])
            if abs(exponent) > 30:
                raise WeightError(shown, "is out of range")
            value *= Fraction(10) ** exponent
        else:
            value *= _SUFFIX[match["suffix"] or ""]
        if match["sign"] == "-":
            value = -value
    milli = value * 1000
    if milli < 0:
        raise WeightError(shown, "is negative")
    if milli.denominator != 1:
        raise WeightError(shown, "is finer than 1m (weights are whole milli-units)")
    return _check_range(shown, int(milli), "milli-units")


def parse_whole(value: object) -> int:
    """A whole-number weight (SMI v1alpha2+, Gateway API): int, integral Decimal, or digits text."""
    shown = weight_text(value)
    if isinstance(value, bool) or value is None:
        raise WeightError(shown, "is not a whole number")
    if isinstance(value, int):
        number = value
    elif isinstance(value, Decimal):
        if not value.is_finite() or value != value.to_integral_value():
            raise WeightError(shown, "is not a whole number")
        number = int(_bounded(shown, value, ""))
    elif isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        number = int(value.strip())
    else:
        raise WeightError(shown, "is not a whole number")
    return _check_range(shown, number, "")


def decimal_or_none(text: str) -> Decimal | None:
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None
