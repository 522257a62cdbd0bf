"""Render what the lab observed: a split table with bars (pure)."""
from __future__ import annotations

from collections.abc import Mapping

BAR_WIDTH = 40


def split_table(counts: Mapping[str, int], expected: Mapping[str, float] | None = None,
                failures: int = 0, title: str = "", label: str = "backend") -> str:
    """Rows: backend, connections, observed share, expected share, bar."""
    total = sum(counts.values())
    keys = sorted(set(counts) | set(expected or {}))
    lines = [title] if title else []
    lines.append(f"  {label:<14}{'conns':>7}{'observed':>10}{'desired':>9}  ")
    for key in keys:
        n = counts.get(key, 0)
        share = n / total if total else 0.0
        want = f"{expected[key]:>8.1%}" if expected and key in expected else f"{'-':>8}"
        bar = "#" * round(share * BAR_WIDTH)
        lines.append(f"  {key:<14}{n:>7}{share:>10.1%}{want} |{bar:<{BAR_WIDTH}}|")
    lines.append(f"  {'total':<14}{total:>7}" + (f"   ({failures} failed)" if failures else ""))
    return "\n".join(lines)
