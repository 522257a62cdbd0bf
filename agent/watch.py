"""Config change detection by polling: cheap, portable, and enough for a few manifest files.

A snapshot is (path, mtime_ns, size, inode) for every manifest file under the watched paths, plus
the directories themselves (a file added or removed changes its directory's mtime). Comparing two
snapshots tells whether anything changed; the inode catches editors that save by rename.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

from kernsplit.agent.model.documents import MANIFEST_SUFFIXES

Snapshot = frozenset[tuple[str, int, int, int]]


def _stat(path: str) -> tuple[str, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (path, st.st_mtime_ns, st.st_size, st.st_ino)


def _entries(path: str) -> list[str]:
    if not os.path.isdir(path):
        return [path]        # a named file is watched whatever its suffix (missing: absent entry)
    found = [path]
    for top, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.append(top)
        found += [os.path.join(top, f) for f in files
                  if not f.startswith(".") and f.endswith(MANIFEST_SUFFIXES)]
    return found


def snapshot(paths: Sequence[str | os.PathLike]) -> Snapshot:
    stats = (_stat(p) for path in paths for p in _entries(os.fspath(path)))
    return frozenset(s for s in stats if s is not None)


class Watcher:
    """`poll()` answers: did the config change and then stay still for one poll? Waiting for one
    quiet poll avoids reading a file an editor is halfway through writing."""

    def __init__(self, paths: Sequence[str | os.PathLike]) -> None:
        self.paths = list(paths)
        self._applied = snapshot(self.paths)     # what the last load saw
        self._last = self._applied

    def poll(self) -> bool:
        now = snapshot(self.paths)
        settled = now == self._last
        self._last = now
        if settled and now != self._applied:
            self._applied = now
            return True
        return False
