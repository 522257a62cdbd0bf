"""Executor: the lab's own cgroup v2 directory (pod processes live under it; the eBPF agent
attaches there, never to the root cgroup)."""
from __future__ import annotations

import os
import time
from pathlib import Path

from kernsplit.agent import mounts


def lab_cgroup(prefix: str) -> Path:
    return mounts.cgroup2() / prefix


def create(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def pids_under(root: Path) -> set[int]:
    """Every process in the cgroup subtree rooted at `root`."""
    found: set[int] = set()
    if not root.is_dir():
        return found
    for dirpath, _dirs, files in os.walk(root):
        if "cgroup.procs" in files:
            try:
                text = (Path(dirpath) / "cgroup.procs").read_text()
            except OSError:
                continue
            found.update(int(x) for x in text.split())
    return found


def remove_tree(root: Path, timeout: float = 3.0) -> list[str]:
    """rmdir the subtree bottom-up (cgroups must be empty: kill processes first)."""
    if not root.is_dir():
        return []
    deadline = time.monotonic() + timeout
    failed: list[str] = []
    dirs = sorted((Path(d) for d, _s, _f in os.walk(root)), key=lambda p: len(p.parts), reverse=True)
    for d in dirs:
        while True:
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                # a killed process leaves its cgroup a moment after it is reaped
                if time.monotonic() > deadline:
                    failed.append(f"cgroup {d}: {exc}")
                    break
                time.sleep(0.05)
    return failed
