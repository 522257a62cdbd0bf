"""Where the host mounts cgroup v2 and bpffs, mounting them when they are missing. Shared by the
eBPF loader, the lab and the benchmarks."""
from __future__ import annotations

import subprocess
from pathlib import Path

BPFFS = Path("/sys/fs/bpf")
CGROUP2_FALLBACK = Path("/sys/fs/cgroup/unified")     # where hybrid hosts mount cgroup2


def mounts() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount of this mount namespace."""
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        out.append((fields[1], fields[2]))
    return out


def find(fstype: str) -> Path | None:
    """The first mount point of a filesystem type; None when there is none."""
    return next((Path(point) for point, kind in mounts() if kind == fstype), None)


def cgroup2() -> Path:
    """The host's cgroup v2 mount (unified or hybrid layout); mount one when there is none."""
    found = find("cgroup2")
    if found is not None:
        return found
    CGROUP2_FALLBACK.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "cgroup2", "none", str(CGROUP2_FALLBACK)], check=True)
    return CGROUP2_FALLBACK


def on_bpffs(path: Path) -> bool:
    """The mount holding `path` (the longest mount point above it) is a bpf filesystem."""
    best = max((m for m in mounts() if str(path).startswith(m[0].rstrip("/") + "/")),
               key=lambda m: len(m[0]), default=None)
    return best is not None and best[1] == "bpf"


def ensure_bpffs(root: Path) -> bool:
    """Mount bpffs at /sys/fs/bpf when `root` lies below it and nothing is mounted there.
    Returns whether `root` is on a bpf filesystem now."""
    if on_bpffs(root):
        return True
    if BPFFS in root.parents and not any(point == str(BPFFS) and kind == "bpf" for point, kind in mounts()):
        BPFFS.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "bpf", "bpf", str(BPFFS)], check=True)
    return on_bpffs(root)
