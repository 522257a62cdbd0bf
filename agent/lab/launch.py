"""Start a program inside a lab pod: its cgroup, its network namespace, its uid - then exec.

    python -m agent.lab.launch [--cgroup DIR] [--netns NAME] [--uid U [--gid G]] -- PROG ARGS...

The order matters: join the cgroup first (so every connect() of the program, from its first
instruction, is seen by cgroup BPF hooks), then the netns, then drop privileges, then exec.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from kernsplit.agent.netns import entered


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m agent.lab.launch")
    p.add_argument("--cgroup", help="cgroup v2 directory to join")
    p.add_argument("--netns", help="network namespace name or path to enter")
    p.add_argument("--uid", type=int)
    p.add_argument("--gid", type=int)
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        p.error("no command given after --")
    return args


def main(argv: list[str] | None = None) -> None:
    args = _parse(sys.argv[1:] if argv is None else argv)
    if args.cgroup:
        with open(os.path.join(args.cgroup, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    # exec inside the `entered` block: the process never returns, so it stays in the netns.
    with entered(args.netns):
        module = _own_python_module(args.command)
        if module is not None and args.uid is not None:
            # The interpreter may live where the unprivileged uid cannot read (pyenv under
            # /root): import the program while still root, drop privileges, then run it here.
            target = importlib.import_module(module)
            importlib.import_module("encodings.idna")  # loaded lazily by socket.getaddrinfo
            _drop_privileges(args.uid, args.gid)
            sys.argv = [module, *args.command[3:]]
            target.main()
            os._exit(0)
        if args.uid is not None:
            _drop_privileges(args.uid, args.gid)
        try:
            os.execvp(args.command[0], args.command)
        except OSError as exc:
            print(f"launch: cannot run {args.command[0]}: {exc}", file=sys.stderr)
            os._exit(127)   # not sys.exit: leaving `entered` would try to setns back


def _own_python_module(command: list[str]) -> str | None:
    """`python -m kernsplit.agent.lab.X ...` with this very interpreter -> "kernsplit.agent.lab.X"."""
    if len(command) >= 3 and command[0] == sys.executable and command[1] == "-m" \
            and command[2].startswith("kernsplit.agent.lab."):
        return command[2]
    return None


def _drop_privileges(uid: int, gid: int | None) -> None:
    os.setgroups([])
    os.setgid(uid if gid is None else gid)
    os.setuid(uid)

if __name__ == "__main__":
    main()
