"""Exactness of the eBPF endpoint tables, proved over the whole 2**32 random space."""
from __future__ import annotations

import random
from collections.abc import Sequence
from fractions import Fraction

import pytest

from kernsplit.agent.dataplane.ebpf import abi, thresholds

STEPS = abi.KS_SLOTS_LOG2 + 1


def select(lasts: Sequence[int], r: int, steps: int) -> int:
    """The slot the C code picks for random value r: lb_search in bpf/lb.c, step for step."""
    lo, hi = 0, len(lasts) - 1
    for _ in range(steps):
        if lo >= hi:
            break
        mid = lo + (hi - lo) // 2
        if lasts[mid] >= r:
            hi = mid
        else:
            lo = mid + 1
    return lo


def owned(lasts):
    """Random values each slot owns when the C search runs over `lasts`, proved exactly: the
    search is monotone in r, so slot i owns (last[i-1], last[i]] if it maps both ends to i."""
    out, prev = [], -1
    for i, last in enumerate(lasts):
        assert select(lasts, prev + 1, STEPS) == i and select(lasts, last, STEPS) == i
        out.append(last - prev)
        prev = last
    assert prev == thresholds.SPACE - 1
    return out


def test_999999_to_1_is_exact_to_one_part_in_2_pow_32():
    shares = [Fraction(999_999, 1_000_000), Fraction(1, 1_000_000)]
    got = owned(thresholds.bounds(shares))
    assert sum(got) == thresholds.SPACE
    for share, n in zip(shares, got):
        assert abs(Fraction(n, thresholds.SPACE) - share) <= Fraction(1, thresholds.SPACE)
    assert got[1] == 4295      # round(2**32 / 1e6): the 1-in-a-million backend is reachable


def test_simulated_draws_follow_the_table():
    lasts = thresholds.bounds([Fraction(999_999, 1_000_000), Fraction(1, 1_000_000)])
    rng = random.Random(4)
    hits = sum(select(lasts, rng.getrandbits(32), STEPS) for _ in range(2_000_000))
    assert 0 < hits < 12          # expected 2.0; P(0) = e^-2 would make this flaky, see seed


@pytest.mark.parametrize("weights", [[1, 1, 1], [900, 100], [7, 3], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
                                     [1] * 4096, [10**6, 1, 1, 1]])
def test_counts_sum_exactly_and_round_within_one_unit(weights):
    total = sum(weights)
    shares = [Fraction(w, total) for w in weights]
    got = thresholds.counts(shares)
    assert sum(got) == thresholds.SPACE
    assert all(n >= 1 for n in got)
    for share, n in zip(shares, got):
        assert abs(n - share * thresholds.SPACE) < 1


def test_tiny_shares_still_get_a_value_and_sum_stays_exact():
    shares = [Fraction(1) - Fraction(10, 2**40)] + [Fraction(1, 2**40)] * 10
    got = thresholds.counts(shares)
    assert got[1:] == (1,) * 10 and sum(got) == thresholds.SPACE


def test_weight_zero_has_no_slot():
    with pytest.raises(ValueError, match="weight 0"):
        thresholds.counts([Fraction(1), Fraction(0)])
    with pytest.raises(ValueError):
        thresholds.counts([])


def test_deterministic():
    shares = [Fraction(1, 3)] * 3
    assert thresholds.bounds(shares) == thresholds.bounds(list(shares))
