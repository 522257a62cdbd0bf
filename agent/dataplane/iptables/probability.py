"""Exact weights to `-m statistic --mode random --probability` values.

The kernel's statistic match compares a 31-bit random number with a threshold
t = round(p * 2**31): a rule matches with probability t / 2**31. So the precision of one rule is
2**-31 (about 4.7e-10); the per-endpoint share error is at most a few parts in 10**9, far below
anything measurable. We compute t from the exact Fraction p_i = w_i / (w_i + ... + w_n) and render
t / 2**31 with 11 decimals, which is what iptables-save prints back (`%.11f`) and which parses back
to the same t (11 decimals are accurate to 0.011 of one step), so planned and saved rules compare
equal.
"""
from __future__ import annotations

import sys
from fractions import Fraction

SCALE = 1 << 31


def conditional_probabilities(shares: list[Fraction]) -> list[Fraction]:
    """p_i = s_i / (s_i + ... + s_n): the chance rule i matches given rules before it did not.

    The last one is always 1 (its rule is unconditional).
    """
    out = []
    remaining = sum(shares, Fraction(0))
    for s in shares:
        out.append(s / remaining if remaining else Fraction(1))
        remaining -= s
    return out


def threshold(p: Fraction) -> int:
    """The kernel threshold for probability p (0 < p < 1), rounded half up.

    Clamped to 1 .. 2**31 - 1: a positive weight never becomes "never", and a rule that is not the
    last never swallows every connection from the ones after it.
    """
    t = (p * SCALE + Fraction(1, 2)).__floor__()
    return min(max(t, 1), SCALE - 1)


def render(p: Fraction) -> str:
    # Interned: thousands of splits share a few weights, and plans are kept for every split port.
    return sys.intern(f"{threshold(p) / SCALE:.11f}")
