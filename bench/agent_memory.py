"""The agent's memory with the file source: N split ports written as manifests (the same objects as
the Kubernetes benchmark: 3 Services, 2 EndpointSlices and one TrafficSplit per port), the agent
started as users run it (`kernsplit agent --config DIR`), and its RSS read from /proc shortly after
its first sync (current and peak). The goal: at most 150 MB at 10,000 split ports.
"""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

import fixtures
from source_kubernetes import agent_args, objects

VENV_BIN = Path(sys.executable).parent


def write_manifests(n: int, folder: Path) -> None:
    """services.yaml (Services and slices) and splits.yaml, as a cluster dump would hold them."""
    services, splits = [], []
    for i in range(n):
        *others, split = objects(i)
        services += others
        splits.append(split)
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    (folder / "services.yaml").write_text(yaml.dump_all(services, Dumper=dumper, sort_keys=False))
    (folder / "splits.yaml").write_text(yaml.dump_all(splits, Dumper=dumper, sort_keys=False))


def first_sync(args: list[str]) -> tuple[float, float, float]:
    """Run the agent until its first sync is done: (seconds, RSS MiB, peak RSS MiB) then."""
    start = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    tail: list[str] = []
    try:
        for line in proc.stderr:
            tail = [*tail[-4:], line]
            record = json.loads(line)
            if str(record.get("reason")) == "start" and "written" in record:
                break
        else:
            raise RuntimeError(f"agent exited before its first sync: {tail}")
        done = time.monotonic() - start
        time.sleep(fixtures.SETTLE)
        rss, hwm = fixtures.memory(proc.pid)
    finally:
        proc.terminate()
        proc.wait(60)
    return done, rss, hwm


@contextlib.contextmanager
def manifests(n: int) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ksbench") as tmp:
        write_manifests(n, Path(tmp))
        yield Path(tmp)


def run(n: int, dataplanes: tuple[str, ...] = ("iptables", "ebpf")) -> dict[str, float]:
    out: dict[str, float] = {}
    with manifests(n) as folder:
        for dataplane in dataplanes:
            with fixtures.netns() as ns, fixtures.dataplane(dataplane, ns) as dp:
                pins = getattr(dp, "pins", None)
                target = {"netns": ns, "cgroup": str(getattr(dp, "cgroup", "")),
                          "bpffs": str(pins.root if pins else "")}
                args = [str(VENV_BIN / "kernsplit"), "agent", "--config", str(folder), "--file-settle", "0",
                        *agent_args(dataplane, target), "--log-format", "json", "--metrics-addr", "127.0.0.1:0"]
                seconds, rss, hwm = first_sync(args)
            key = f"files {dataplane}: {n} split ports"
            out[f"{key}: agent start to first sync done (s)"] = seconds
            out[f"{key}: agent RSS 2 s after first sync (MiB)"] = rss
            out[f"{key}: agent peak RSS (MiB)"] = hwm
    return out


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    names = tuple(sys.argv[2].split(",")) if len(sys.argv) > 2 else ("iptables", "ebpf")
    for key, value in run(n, names).items():
        print(f"{key:<70} {value:10.2f}")
