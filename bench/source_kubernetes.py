"""`--source kubernetes` at scale: N split ports in the lab's API server (3 Services, 2 EndpointSlices
of 3 endpoints and one TrafficSplit each: 10,000 ports are 30,000 Services and 20,000 slices).

Per dataplane:
- the agent as a process (`kernsplit agent --source kubernetes`): from its start to the first sync
  done, the initial list and the first sync inside it, and its RSS after it (current and peak);
- the agent's loop in this process, to time changes: a TrafficSplit weight change and an
  EndpointSlice scale 3 -> 4, each from the watch event's arrival in the agent to the kernel write
  done, and from the PATCH's response to the kernel write done (p50/p99 over `changes`).
"""
from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

import fixtures

VENV_BIN = Path(sys.executable).parent
ENDPOINTS_PER_SLICE = 3


def _ip(octet: int, i: int) -> str:
    """Address i of a /16 of its own per role (n < 65,536)."""
    return f"10.{octet}.{i // 256 % 256}.{i % 256}"


def objects(i: int, weight_v2: int = 100, v2_endpoints: int = ENDPOINTS_PER_SLICE) -> list[dict]:
    """Split port i: Services app{i}, app{i}-v1, app{i}-v2, their slices, one TrafficSplit."""
    ns, app = "bench", f"app{i}"
    svc = lambda name, ip: {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},  # noqa: E731
                            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}
    out = [svc(app, _ip(100, i)), svc(f"{app}-v1", _ip(110, i)), svc(f"{app}-v2", _ip(120, i))]
    for v, first, count in (("v1", 200, ENDPOINTS_PER_SLICE), ("v2", 210, v2_endpoints)):
        out.append(endpoint_slice(f"{app}-{v}", [_ip(first + j, i) for j in range(count)]))
    out.append(split(i, weight_v2))
    return out


def endpoint_slice(service: str, ips: list[str]) -> dict:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"{service}-x", "namespace": "bench",
                         "labels": {"kubernetes.io/service-name": service}},
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips]}


def split(i: int, weight_v2: int) -> dict:
    return {"apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
            "metadata": {"name": f"app{i}-split", "namespace": "bench"},
            "spec": {"service": f"app{i}", "backends": [{"service": f"app{i}-v1", "weight": 1000 - weight_v2},
                                                        {"service": f"app{i}-v2", "weight": weight_v2}]}}


@contextlib.contextmanager
def loaded_server(n: int, workdir: Path) -> Iterator[object]:
    from kernsplit.agent.lab.apiserver.server import LabApiServer
    server = LabApiServer(history=100_000).start()
    try:
        server.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}})
        for i in range(n):
            for obj in objects(i):
                server.apply(obj)
        server.write_kubeconfig(workdir / "kubeconfig")
        yield server
    finally:
        server.stop()


def agent_args(dataplane: str, target: dict) -> list[str]:
    if dataplane == "ebpf":
        return ["--dataplane", "ebpf", "--cgroup", target["cgroup"], "--bpffs", target["bpffs"]]
    return ["--dataplane", "iptables", "--netns", target["netns"]]


def bench_process(server, dataplane: str, target: dict, n: int) -> dict[str, float]:
    """The agent as users run it: start to first sync, and its memory then."""
    args = [str(VENV_BIN / "kernsplit"), "agent", "--source", "kubernetes", "--kubeconfig", str(server.kubeconfig),
            *agent_args(dataplane, target), "--log-format", "json", "--metrics-addr", "127.0.0.1:0"]
    start = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    records, listed_at = [], None
    try:
        for line in proc.stderr:
            at = time.monotonic()
            record = json.loads(line)
            records.append(record)
            if "every watched resource listed" in record.get("msg", record.get("message", "")):
                listed_at = at
            if str(record.get("reason")) == "start" and "written" in record:
                break
        else:
            raise RuntimeError(f"agent exited before its first sync: {records[-5:]}")
        done = time.monotonic()
        time.sleep(fixtures.SETTLE)
        rss, hwm = fixtures.memory(proc.pid)
    finally:
        proc.terminate()
        proc.wait(60)
    key = f"kubernetes {dataplane}: {n} split ports"
    return {f"{key}: agent start to first sync done (s)": done - start,
            f"{key}: of which start to every kind listed (s)": (listed_at or done) - start,
            f"{key}: of which first sync (s)": float(record.get("seconds", 0.0)),
            f"{key}: agent RSS 2 s after first sync (MiB)": rss,
            f"{key}: agent peak RSS (MiB)": hwm}


class TimedLoop:
    """The agent's reconcile loop in this process, with every sync's end and the arrival of the
    oldest event it carried recorded."""

    def __init__(self, dp, kubeconfig: str) -> None:
        from kernsplit.agent.reconcile import Reconciler, Timing
        from kernsplit.agent.source.kubernetes import KubernetesSettings, KubernetesSource
        self.reconciler = Reconciler(dp, KubernetesSource(KubernetesSettings(kubeconfig=kubeconfig)),
                                     Timing(resync_interval=3600))
        self.syncs: list[tuple[float, float | None, int]] = []      # (end, arrival, written)
        self._arrived: float | None = None
        queue, drain, sync = self.reconciler.queue, self.reconciler.queue.drain, dp.sync

        def timed_drain():
            self._arrived = queue.arrived
            return drain()

        def timed_sync(*args, **kwargs):
            result = sync(*args, **kwargs)
            self.syncs.append((time.monotonic(), self._arrived, result.written))
            return result
        queue.drain, dp.sync = timed_drain, timed_sync
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.reconciler.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> "TimedLoop":
        self.thread.start()
        deadline = time.monotonic() + 600
        while not self.syncs:             # the first sync: it adopts what the agent process wrote
            if time.monotonic() > deadline:
                raise RuntimeError("the first sync did not happen")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(30)

    def wait(self, after: int, timeout: float = 600) -> tuple[float, float | None, int]:
        """The first sync after the `after`-th that wrote something."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for sync in self.syncs[after:]:
                if sync[2]:
                    return sync
            time.sleep(0.0005)
        raise RuntimeError("no sync wrote the change")


def bench_changes(server, loop: TimedLoop, what: str, changes: int, patch: Callable[[int], tuple[str, dict]],
                  label: str) -> dict[str, float]:
    event_ms, patch_ms = [], []
    with httpx.Client(base_url=server.url, headers={"Content-Type": "application/merge-patch+json"}) as http:
        for k in range(changes):
            # A lone change, as an edit is: after the pacer's minimum interval since the last sync,
            # so it is synced at once instead of being held to coalesce with the one before.
            time.sleep(loop.reconciler.timing.pacer.min_interval * 1.5)
            path, body = patch(k)
            before = len(loop.syncs)
            http.patch(path, content=json.dumps(body)).raise_for_status()
            returned = time.monotonic()
            end, arrived, _ = loop.wait(before)
            event_ms.append((end - arrived) * 1000 if arrived else float("nan"))
            patch_ms.append((end - returned) * 1000)
    pct = lambda xs, q: statistics.quantiles(xs, n=100)[q - 1]   # noqa: E731
    return {f"{label}: {what}: watch event -> kernel, p50 (ms)": statistics.median(event_ms),
            f"{label}: {what}: watch event -> kernel, p99 (ms)": pct(event_ms, 99),
            f"{label}: {what}: PATCH returned -> kernel, p50 (ms)": statistics.median(patch_ms),
            f"{label}: {what}: PATCH returned -> kernel, p99 (ms)": pct(patch_ms, 99)}


def run(n: int, dataplanes: tuple[str, ...] = ("iptables", "ebpf"), changes: int = 100) -> dict[str, float]:
    out: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(__import__("tempfile").TemporaryDirectory(prefix="ksbench")))
        started = time.monotonic()
        server = stack.enter_context(loaded_server(n, workdir))
        out[f"kubernetes: load {n} split ports into the lab API server (s)"] = time.monotonic() - started
        for dataplane in dataplanes:
            out.update(bench_dataplane(server, dataplane, n, changes))
    return out


def bench_dataplane(server, dataplane: str, n: int, changes: int) -> dict[str, float]:
    out: dict[str, float] = {}
    label = f"kubernetes {dataplane}: {n} split ports"
    with fixtures.netns() as ns, fixtures.dataplane(dataplane, ns) as dp:
        pins = getattr(dp, "pins", None)
        target = {"netns": ns, "cgroup": str(getattr(dp, "cgroup", "")), "bpffs": str(pins.root if pins else "")}
        out.update(bench_process(server, dataplane, target, n))
        with TimedLoop(dp, str(server.kubeconfig)) as loop:
            weight = lambda k: (f"/apis/split.smi-spec.io/v1alpha2/namespaces/bench/trafficsplits/app{n // 2}-split",  # noqa: E731
                                {"spec": split(n // 2, 500 if k % 2 == 0 else 100)["spec"]})
            out.update(bench_changes(server, loop, "one TrafficSplit weight change", changes, weight, label))
            scale = lambda k: (f"/apis/discovery.k8s.io/v1/namespaces/bench/endpointslices/app{n // 3}-v2-x",  # noqa: E731
                               {"endpoints": objects(n // 3, v2_endpoints=4 if k % 2 == 0 else 3)[4]["endpoints"]})
            out.update(bench_changes(server, loop, "one EndpointSlice 3 <-> 4 endpoints", changes, scale, label))
    return out


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    for key, value in run(n).items():
        print(f"{key:<90} {value:10.3f}")
