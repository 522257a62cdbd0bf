"""Compile and pin the BPF programs in a short-lived child process.

BCC (its LLVM, the compiled object, the kernel-header tree) costs the process that imports it
about 110 MiB that Python never gives back. The agent only needs what BCC leaves behind: pinned
programs and maps, which it opens by path. So a child process (`python -m
kernsplit.agent.dataplane.ebpf.build PINS_ROOT`) runs `loader.compile_and_pin`, which also checks
the ctypes mirrors against the compiled object's BTF (through the fds BCC holds, in the child),
and exits; the agent never imports BCC.

The child answers with one JSON line on stdout: the compile time and the warnings it logged, or
the error (its class, for `AlignmentError`, and its message). When a program was refused, the end of its stderr (the verifier's log) is logged.
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from kernsplit.agent.dataplane.ebpf import loader
from kernsplit.agent.dataplane.ebpf.pins import LoaderError, Pins

log = logging.getLogger("kernsplit.agent.ebpf")

TIMEOUT = 300.0            # seconds; a compile takes under a second
_ERRORS = {"AlignmentError": loader.AlignmentError}


def compile_and_pin(pins: Pins) -> float:
    """`loader.compile_and_pin(pins)` in a child process. Returns the seconds the compile took."""
    argv = [sys.executable, "-m", __name__, str(pins.root), str(os.getpid())]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        raise LoaderError(f"compiling the BPF programs took more than {TIMEOUT:.0f} s") from exc
    answer = _answer(proc.stdout)
    if answer is None:
        raise LoaderError(f"compiling the BPF programs failed (exit {proc.returncode}): "
                          f"{proc.stderr.strip()[-2000:] or 'no output'}")
    for level, message in answer.get("logs", ()):
        log.log(level, "%s", message)
    if answer.get("logs") and proc.stderr.strip():
        # A program was refused: the verifier's own account (BCC prints it) is what tells why.
        log.warning("ebpf: the BPF compiler and verifier said:\n%s", _verdict(proc.stderr))
    if "error" in answer:
        raise _ERRORS.get(answer["error"], LoaderError)(answer["message"])
    return float(answer["seconds"])


def _verdict(stderr: str, lines: int = 40) -> str:
    """The end of the verifier's log: the last instructions and the reason, without the source
    lines BCC interleaves (`; ...`)."""
    kept = [line for line in stderr.splitlines() if line.strip() and not line.startswith(";")]
    return "\n".join(kept[-lines:])


def _answer(stdout: str) -> dict | None:
    lines = stdout.strip().splitlines()
    try:
        return json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        return None


class _Collect(logging.Handler):
    """The child's warnings, handed back to the agent to log as its own."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelno, record.getMessage()))


PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> None:
    """A compile must not outlive the agent that asked for it: killed, the agent leaves nobody to
    read the answer, and the child would go on pinning under a directory that a cleanup (`lab
    down`, `agent --cleanup`) has just removed."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:            # the agent died before the line above took effect
        os._exit(1)


def main(root: str, parent: int | None = None) -> int:
    if parent is not None:
        _die_with(parent)
    collected = _Collect()
    tree = logging.getLogger("kernsplit")
    tree.addHandler(collected)
    tree.setLevel(logging.WARNING)
    try:
        seconds = loader.compile_and_pin(Pins(Path(root)))
    except Exception as exc:  # noqa: BLE001 (BCC raises a bare Exception with the compiler's verdict)
        answer = {"error": type(exc).__name__, "message": str(exc) or type(exc).__name__}
    else:
        answer = {"seconds": seconds}
    answer["logs"] = collected.records
    print(json.dumps(answer), flush=True)
    return 0 if "seconds" in answer else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None))
