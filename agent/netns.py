"""Network namespaces as targets: naming, entering, running commands inside.

A target is None (the current namespace), a name under /var/run/netns, or a path to a netns file
(e.g. /proc/PID/ns/net). Commands run inside with `nsenter --net=PATH` rather than
`ip netns exec`, because the latter remounts /sys (hiding bpffs and cgroup mounts).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

NETNS_RUN_DIR = Path("/var/run/netns")
_CLONE_NEWNET = 0x40000000


def netns_path(target: str | os.PathLike | None) -> Path | None:
    """The netns file for a target, or None for the current namespace."""
    if target is None or str(target) == "":
        return None
    text = str(target)
    return Path(text) if "/" in text else NETNS_RUN_DIR / text


def wrap_command(argv: Sequence[str], target: str | os.PathLike | None) -> list[str]:
    """argv, prefixed so that it runs inside the target namespace."""
    path = netns_path(target)
    if path is None:
        return list(argv)
    return ["nsenter", f"--net={path}", "--", *argv]


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(target: str | os.PathLike | None) -> Iterator[None]:
    """Run the body with the calling thread inside the target namespace, then return.

    Sockets created inside keep their namespace after the block ends.
    """
    path = netns_path(target)
    if path is None:
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            _setns(fd)
        finally:
            os.close(fd)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)
