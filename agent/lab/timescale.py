"""One factor for every fixed wait of the lab and the tests: `KERNSPLIT_TEST_TIME_SCALE`.

A wait tuned on a fast machine (the agent applies a split within 10 s, a program answers within
2 s) fails on a slow one: under qemu emulation BCC's compile alone takes 12 s. Rather than each
wait guessing its own margin, every timeout is written for a fast machine and multiplied by this
one factor (default 1; `make vm-test` sets 4). Poll intervals are not scaled: they only decide how
soon a wait notices success.
"""
from __future__ import annotations

import os

ENV = "KERNSPLIT_TEST_TIME_SCALE"


def time_scale() -> float:
    """The factor from the environment; a value that is not a positive number is an error that
    names the variable, never a silent 1."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return 1.0
    try:
        factor = float(raw)
    except ValueError:
        raise ValueError(f"{ENV}={raw!r} is not a number") from None
    if not factor > 0 or factor == float("inf"):
        raise ValueError(f"{ENV}={raw!r} must be a positive number")
    return factor


def scaled(seconds: float) -> float:
    """A timeout written for a fast machine, stretched by the factor."""
    return seconds * time_scale()
