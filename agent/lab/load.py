"""The client pod's application: makes HTTP requests to a service and counts who answered.

    python -m agent.lab.load --target 10.100.200.30:80 -n 1000 [-c 16]   # N new connections
    python -m agent.lab.load --target ... --loop                          # until SIGTERM/SIGINT
    python -m agent.lab.load --target ... --keepalive                     # one socket, stdin-driven

Run inside the client pod (`kernsplit lab exec client ...`): its connects go through proxy-init's
redirect to the pod's proxy, like any meshed application's. Prints one JSON object: outcomes
(ok / refused / reset / timeout / error), answers by pod and by version, and elapsed seconds.
In --keepalive mode every stdin line sends one request on the same connection and prints the
answer line (or `error <reason>`).
"""
from __future__ import annotations

import argparse
import collections
import errno
import json
import signal
import socket
import sys
import threading
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: lab\r\nConnection: %s\r\n\r\n"
TIMEOUT = 5.0


def _body_fields(body: bytes) -> dict[str, str]:
    return dict(w.split("=", 1) for w in body.decode(errors="replace").split() if "=" in w)


def one_request(target: tuple[str, int]) -> tuple[str, dict[str, str]]:
    """One new connection, one request. Returns (outcome, answer fields)."""
    try:
        with socket.create_connection(target, timeout=TIMEOUT) as s:
            s.sendall(REQUEST % b"close")
            chunks = []
            while data := s.recv(65536):
                chunks.append(data)
    except ConnectionRefusedError:
        return "refused", {}
    except (ConnectionResetError, BrokenPipeError):
        return "reset", {}
    except TimeoutError:
        return "timeout", {}
    except OSError as exc:
        return ("refused" if exc.errno == errno.ECONNREFUSED else f"error:{exc.strerror}"), {}
    except Exception as exc:  # noqa: BLE001 - counted and reported, never a silent thread death
        return f"error:{type(exc).__name__}: {exc}", {}
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        return ("reset" if not raw else "error:bad response"), {}
    return "ok", _body_fields(body)


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.pods: collections.Counter[str] = collections.Counter()
        self.versions: collections.Counter[str] = collections.Counter()

    def add(self, outcome: str, fields: dict[str, str]) -> None:
        with self.lock:
            self.outcomes[outcome] += 1
            if "pod" in fields:
                self.pods[fields["pod"]] += 1
            if "version" in fields:
                self.versions[fields["version"]] += 1

    def report(self, seconds: float) -> dict:
        return {"outcomes": dict(self.outcomes), "pods": dict(self.pods),
                "versions": dict(self.versions), "seconds": round(seconds, 3)}


def run(target: tuple[str, int], count: int | None, concurrency: int, stop: threading.Event) -> Tally:
    """`count` connections (None: until `stop` is set) over `concurrency` threads."""
    tally = Tally()
    budget = iter(range(count)) if count is not None else None
    budget_lock = threading.Lock()

    def worker() -> None:
        while not stop.is_set():
            if budget is not None:
                with budget_lock:
                    if next(budget, None) is None:
                        return
            tally.add(*one_request(target))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)
    return tally


def keepalive(target: tuple[str, int]) -> None:
    sock = socket.create_connection(target, timeout=TIMEOUT)
    stream = sock.makefile("rb")
    print("connected", flush=True)
    for _line in sys.stdin:
        try:
            sock.sendall(REQUEST % b"keep-alive")
            length = 0
            while (header := stream.readline()) not in (b"\r\n", b""):
                if header.lower().startswith(b"content-length:"):
                    length = int(header.split(b":", 1)[1])
            if header == b"":
                print("error closed", flush=True)
                continue
            fields = _body_fields(stream.read(length))
            print(f"version={fields.get('version')} pod={fields.get('pod')}", flush=True)
        except OSError as exc:
            print(f"error {exc}", flush=True)


def _target(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m agent.lab.load")
    p.add_argument("--target", type=_target, default=("10.100.200.30", 80))
    p.add_argument("-n", "--connections", type=int, default=1000)
    p.add_argument("-c", "--concurrency", type=int, default=16)
    p.add_argument("--loop", action="store_true", help="run until SIGTERM/SIGINT")
    p.add_argument("--keepalive", action="store_true")
    args = p.parse_args()
    if args.keepalive:
        keepalive(args.target)
        return
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.loop:
        print("started", flush=True)
    start = time.monotonic()
    tally = run(args.target, None if args.loop else args.connections, args.concurrency, stop)
    print(json.dumps(tally.report(time.monotonic() - start)), flush=True)


if __name__ == "__main__":
    main()
