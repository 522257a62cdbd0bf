"""kernsplit benchmarks (`make bench`): the speed goals live here, never in timed tests.

Every benchmark works in its own throwaway network namespace (and cgroup and bpffs directory for
eBPF) and removes them afterwards. Results: a table on stdout and bench/results/latest.json.

  proxy-init   apply the default ruleset in a fresh netns: the whole CLI process, and the apply
  <dataplane>  full sync of N split ports; one weight change with N installed (median of 7); a no-op
               full resync; connect()+close() through a split vs straight to the backend (median)
  intercept    app -> proxy -> backend requests: iptables vs eBPF interception vs none (intercept_cost.py)
  kubernetes   `--source kubernetes` with the largest N in the lab API server: start to first sync,
               RSS, watch event -> kernel and PATCH -> kernel (source_kubernetes.py)
  memory       `--source files` with the largest N as manifests: start to first sync, RSS (current
               and peak) of the agent process, per dataplane (agent_memory.py; goal: <= 150 MB)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import fixtures  # noqa: E402
from connect_cost import measure as connect_cost  # noqa: E402
from intercept_cost import measure as intercept_cost  # noqa: E402

VENV_BIN = Path(sys.executable).parent
# iptables: the backend the agent would pick in a fresh namespace (nft where it works).
DATAPLANES = ("iptables", "iptables-legacy", "ebpf")
CHANGES = 7          # weight changes timed per size (median reported)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_proxy_init(repeat: int) -> dict[str, float]:
    import logging

    from kernsplit.agent.iptables.kinds import Family
    from kernsplit.init.apply import execute, make_plans
    from kernsplit.init.config import build_config
    log = logging.getLogger("bench")
    cli, apply = [], []
    for _ in range(repeat):
        with fixtures.netns() as ns:
            cli.append(timed(lambda: subprocess.run([str(VENV_BIN / "proxy-init"), "--netns", ns, "--no-ipv6"],
                                                    check=True, capture_output=True)))
        with fixtures.netns() as ns:
            cfg = build_config(netns=ns, ipv6=False, iptables_mode="nft")
            apply.append(timed(lambda: execute(cfg, make_plans(cfg, [Family.V4], log), log)))
    return {"proxy-init: whole CLI process, fresh netns (s)": statistics.median(cli),
            "proxy-init: apply, fresh netns, nft (s)": statistics.median(apply)}


def bench_dataplane(name: str, sizes: list[int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for n in sizes:
        desired = fixtures.split_ports(n)
        # One split port's canary weight moves 10 % -> 50 % -> 10 % ...: each sync changes one split.
        steps = []
        for k in range(CHANGES):
            step = list(desired)
            step[n // 2] = fixtures.split_port(n // 2, v2=Fraction(1, 2) if k % 2 == 0 else Fraction(1, 10))
            steps.append(step)
        with fixtures.netns() as ns, fixtures.dataplane(name, ns) as dp:
            out[f"{name}: full sync, {n} split ports (s)"] = timed(lambda: dp.sync(desired, full=True))
            if getattr(dp, "compile_seconds", None):
                out[f"{name}: full sync, {n} split ports: of which BCC compile + load (s)"] = dp.compile_seconds
            syncs, writes = [], []
            changed = frozenset({desired[n // 2].key})    # as the agent says which split port changed
            for step in steps:
                syncs.append(timed(lambda: dp.sync(step, changed=changed)))
                writes.append(getattr(dp, "last_write_seconds", 0.0))
            out[f"{name}: one weight change, {n} installed: sync() (s)"] = statistics.median(syncs)
            if name == "ebpf":
                out[f"{name}: one weight change, {n} installed: map writes (s)"] = statistics.median(writes)
            out[f"{name}: no-op full resync, {n} installed (s)"] = timed(lambda: dp.sync(steps[-1], full=True))
    with fixtures.netns() as ns, fixtures.dataplane(name, ns) as dp:
        cost = connect_cost(dp, ns, cgroup=str(getattr(dp, "cgroup", "") or ""))
    out[f"{name}: connect()+close() direct to backend (µs)"] = cost["direct"]
    out[f"{name}: connect()+close() to the split service (µs)"] = cost["service"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000", help="split-port counts, comma separated")
    ap.add_argument("--repeat", type=int, default=10, help="proxy-init repetitions (median)")
    ap.add_argument("--only", choices=["proxy-init", *DATAPLANES, "iptables-nft", "intercept", "kubernetes", "memory"],
                    action="append")
    ap.add_argument("--changes", type=int, default=100, help="kubernetes: changes timed (p50/p99)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("benchmarks need root (they create network namespaces and cgroups)")
    sizes = [int(s) for s in args.sizes.split(",")]
    only = args.only or ["proxy-init", *DATAPLANES, "intercept", "kubernetes", "memory"]
    results: dict[str, float] = {}
    if "proxy-init" in only:
        results.update(bench_proxy_init(args.repeat))
    for name in (*DATAPLANES, "iptables-nft"):
        if name in only:
            results.update(bench_dataplane(name, sizes))
    if "intercept" in only:
        results.update(intercept_cost())
    if "kubernetes" in only:
        import source_kubernetes
        results.update(source_kubernetes.run(max(sizes), changes=args.changes))
    if "memory" in only:
        import agent_memory
        results.update(agent_memory.run(max(sizes)))
    width = max(map(len, results))
    for key, value in results.items():
        unit = key[key.rindex("(") + 1:-1]
        unit, shown = ("ms", value * 1000) if unit == "s" else (unit, value)
        print(f"{key[:key.rindex(' (')]:<{width - 5}} {shown:10.2f} {unit}")
    record = {"machine": f"{platform.node()} {platform.release()} {os.cpu_count()} cpus",
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "results": {k: round(v, 6) for k, v in results.items()}}
    (HERE / "results").mkdir(exist_ok=True)
    latest = HERE / "results" / "latest.json"
    if args.only and latest.exists():
        # A partial run (--only) updates its own figures; the others stay as last measured.
        record["results"] = {**json.loads(latest.read_text()).get("results", {}), **record["results"]}
    (HERE / "results" / "latest.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
