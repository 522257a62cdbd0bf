"""Executor: start lab processes in a pod (cgroup + netns + uid) and stop them.

Processes are started detached (own session), so that `lab up` can exit and leave them running;
`lab down` finds them again through the state file, the lab cgroup and the lab namespaces.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path


def launcher(argv: Sequence[str], *, cgroup: Path | None = None, netns: str | None = None,
             uid: int | None = None) -> list[str]:
    """argv wrapped in `python -m agent.lab.launch`, which joins cgroup/netns/uid and execs."""
    cmd = [sys.executable, "-m", "kernsplit.agent.lab.launch"]
    if cgroup is not None:
        cmd += ["--cgroup", str(cgroup)]
    if netns is not None:
        cmd += ["--netns", netns]
    if uid is not None:
        cmd += ["--uid", str(uid)]
    return [*cmd, "--", *argv]


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def start_detached(cmd: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> int:
    """Start a long-running process in its own session; its output goes to `log` (appended).
    `env`: variables added to this process's environment."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **env} if env else None)
    return proc.pid


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def pids_in_netns(inodes: set[int]) -> set[int]:
    """Processes whose network namespace is one of `inodes` (compared by nsfs inode)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino in inodes:
                found.add(int(entry))
        except OSError:
            continue
    return found


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)   # our own children would otherwise stay zombies
    except ChildProcessError:
        pass


def stop(pids: Iterable[int], grace: float = 1.0) -> list[int]:
    """SIGTERM, then SIGKILL after `grace` seconds. Returns pids still alive at the end."""
    me = os.getpid()
    targets = {p for p in pids if p != me and p > 1}
    for pid in targets:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        for pid in targets:
            _reap(pid)
        if not any(alive(p) for p in targets):
            return []
        time.sleep(0.02)
    for pid in targets:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and any(alive(p) for p in targets):
        for pid in targets:
            _reap(pid)
        time.sleep(0.02)
    return [p for p in targets if alive(p)]


def listening(pid: int, port: int) -> bool:
    """True when the netns of `pid` has a TCP socket listening on `port` (read from
    /proc/PID/net/tcp: no traffic needed)."""
    try:
        lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    want = f":{port:04X}"
    return any(f.split()[1].endswith(want) and f.split()[3] == "0A" for f in lines)


def signal_and_wait(pid: int, sig: int, timeout: float = 5.0) -> bool:
    """Send one signal and wait until the process is gone. Returns False if it outlived timeout."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not alive(pid):
            return True
        time.sleep(0.01)
    return False
