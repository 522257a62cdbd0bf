"""The file source: manifest files and directories, polled; a changed file is a batch of object events.

Each file is one scope: when it changes, its objects are delivered with one `replace(path, ...)`,
so an object removed from the file is deleted, and a removed file deletes all of its objects.

Half-written files. A writer that truncates a file and then writes it (not an atomic rename) lets
a reader see it empty or cut short, which would remove or refuse splits for a moment. So a change
is read only once nothing under the watched paths has changed for `settle` seconds. A file whose
YAML or JSON does not parse is not applied at all: its last good objects stay in force. Writers
should still replace files atomically (write a temporary file, then rename it over the old one),
as a mounted ConfigMap does with its `..data` swap.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence

from kernsplit.agent.model.diagnostics import Diagnostic, DiagnosticSink
from kernsplit.agent.model.documents import iter_file, manifest_files
from kernsplit.agent.source.contract import ObjectKey, Sink
from kernsplit.agent.source.packed import pack

log = logging.getLogger("kernsplit.agent.files")

FileState = tuple[int, int, int]            # mtime_ns, size, inode (an editor's rename changes it)

DEFAULT_SETTLE = 1.0
POLL_INTERVAL = 0.1


def file_states(paths: Sequence[str]) -> dict[str, FileState]:
    """Every manifest file under `paths` with what tells a change."""
    found: dict[str, FileState] = {}
    for path in manifest_files(paths, DiagnosticSink()):
        try:
            st = os.stat(path)
        except OSError:
            continue                         # removed between the listing and the stat
        found[path] = (st.st_mtime_ns, st.st_size, st.st_ino)
    return found


class FileSource:
    name = "files"

    def __init__(self, paths: Sequence[str | os.PathLike], settle: float = DEFAULT_SETTLE,
                 poll_interval: float = POLL_INTERVAL) -> None:
        if settle < 0:
            raise ValueError("--file-settle must not be negative")
        self.paths = [os.fspath(p) for p in paths]
        self.settle = settle
        self.poll_interval = poll_interval

    def load(self, sink: Sink, files: Sequence[str] | None = None, gone: Sequence[str] = ()) -> list[Diagnostic]:
        """Deliver `files` (default: all) and empty the scopes of `gone` ones. Returns the problems
        of files that could not be read or parsed: those are not delivered (their last good
        objects stay)."""
        sink_diags = DiagnosticSink()
        if files is None:
            files = manifest_files(self.paths, sink_diags)
        problems = list(sink_diags.freeze())
        for path in gone:
            sink.replace(path, [])
        for path in files:
            diags = DiagnosticSink()
            # Packed as each document is parsed: the file is never held whole as objects.
            objects = [pack(d.data) for d in iter_file(path, diags)]
            unreadable = [d for d in diags.freeze() if d.severity == "error"]
            if unreadable:
                problems += unreadable
                continue
            sink.replace(path, objects)
        return problems

    def run(self, sink: Sink, stop: threading.Event) -> None:
        applied = file_states(self.paths)
        self._log(self.load(sink, sorted(applied)))
        sink.ready()
        seen, changed_at = applied, time.monotonic()
        while not stop.wait(self.poll_interval):
            now = file_states(self.paths)
            if now != seen:
                seen, changed_at = now, time.monotonic()     # still being written: wait
                continue
            if now == applied or time.monotonic() - changed_at < self.settle:
                continue
            files = sorted(p for p, st in now.items() if applied.get(p) != st)
            gone = sorted(set(applied) - set(now))
            self._log(self.load(sink, files, gone))
            applied = now

    @staticmethod
    def _log(problems: list[Diagnostic]) -> None:
        for d in problems:
            log.error("config: %s", d, extra={"file": d.file, "object": d.obj, "field": d.field})
        if problems:
            log.error("config has errors: keeping the last good state in force for %s",
                      ", ".join(sorted({d.file for d in problems})))

    def report(self, key: ObjectKey, diagnostics: Sequence[Diagnostic]) -> None:
        """Files have no owner to tell: the reconciler's log is the report."""
