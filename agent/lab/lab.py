"""A running lab: build it, start its processes and the agent, drive it, tear it down.

Every other kernsplit program is driven as a real program (subprocess): `proxy-init` in the
client pod, `kernsplit agent` in the node namespace, `kernsplit show` to read the kernel. The
lab never imports `init` nor the dataplanes.
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kernsplit.agent import mounts
from kernsplit.agent.lab import cgroups, kubeapi, procs, state, topology
from kernsplit.agent.lab.manifests import SERVICES_FILE, SPLIT_FILE, render_services, write_atomic
from kernsplit.agent.lab.plan import PREFIX_RE, PROXY_OUT_PORT, PROXY_UID, SERVER_PORT, LabPlan, plan_lab
from kernsplit.agent.lab.timescale import scaled

BPFFS_ROOT = mounts.BPFFS
DATAPLANES = ("iptables", "ebpf")
INTERCEPTIONS = ("iptables", "ebpf")
SOURCES = ("files", "kubernetes")     # where the lab's agent reads objects: manifest files or the lab API
READY_TIMEOUT = 15.0


class LabError(RuntimeError):
    """A lab step failed; the message says which step and what the program printed."""


def program(name: str) -> str:
    """A console script of this installation (the venv's bin first, then PATH)."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise LabError(f"{name} not found beside {sys.executable} nor on PATH: run `make install`")
    return found


@dataclass
class Lab:
    plan: LabPlan
    dataplane: str = "iptables"
    interception: str = "iptables"     # how the client pod's traffic reaches its proxy
    source: str = "files"
    cgroup: Path = field(init=False)
    bpffs: Path | None = field(init=False)
    pids: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dataplane not in DATAPLANES:
            raise LabError(f"unknown dataplane {self.dataplane!r}: choose {' or '.join(DATAPLANES)}")
        if self.interception not in INTERCEPTIONS:
            raise LabError(f"unknown interception {self.interception!r}: choose {' or '.join(INTERCEPTIONS)}")
        if self.interception == "ebpf" and self.dataplane != "ebpf":
            raise LabError("interception ebpf needs dataplane ebpf: the node agent loads the interception "
                           "programs with its eBPF split programs")
        if self.source not in SOURCES:
            raise LabError(f"unknown source {self.source!r}: choose {' or '.join(SOURCES)}")
        self.cgroup = cgroups.lab_cgroup(self.prefix)
        self.bpffs = BPFFS_ROOT / self.prefix if self.dataplane == "ebpf" else None

    # -- names and paths ------------------------------------------------------------------
    @property
    def prefix(self) -> str:
        return self.plan.prefix

    @property
    def node(self) -> str:
        return self.plan.node_netns

    @property
    def manifests(self) -> Path:
        return state.manifests_dir(self.prefix)

    @property
    def logs(self) -> Path:
        return state.logs_dir(self.prefix)

    @property
    def kubeconfig(self) -> Path:
        return state.kubeconfig_path(self.prefix)

    @property
    def agent_log(self) -> Path:
        return self.logs / "agent.log"

    @property
    def pods_cgroup(self) -> Path:
        return self.cgroup / "pods"

    def pod_cgroup(self, pod: str) -> Path:
        return self.cgroup / self.plan.pod(pod).cgroup

    def _save(self) -> None:
        state.save(state.LabState(prefix=self.prefix, dataplane=self.dataplane,
                                  cgroup=str(self.cgroup),
                                  bpffs=str(self.bpffs) if self.bpffs else None, pids=self.pids))

    # -- up ---------------------------------------------------------------------------------
    def up(self, split: str | None = None) -> None:
        """Build everything and start the pods, the proxy and the agent. On any failure the
        partial lab is removed before the error propagates."""
        try:
            self._save()   # first, so that `lab down` finds this lab even if we die right now
            self._build()
            self.write_manifest(SERVICES_FILE, render_services(self.plan))
            if split is not None:
                self.write_manifest(SPLIT_FILE, split)
            self._start_pods()
            if self.interception == "iptables":
                self._apply_proxy_init()
            self._wait_listening()
            if self.source == "kubernetes":
                self._start_apiserver()
            self.start_agent()
            if self.interception == "ebpf":
                # the pod registers with the node's programs: they must be loaded first
                self._wait_interception_loaded()
                self._apply_proxy_init()
        except BaseException:
            down(self.prefix)
            raise

    def _build(self) -> None:
        self.manifests.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        for pod in self.plan.pods:
            cgroups.create(self.cgroup / pod.cgroup)
        cgroups.create(self.cgroup / "agent")
        cgroups.create(self.cgroup / "apiserver")
        if self.bpffs is not None and not mounts.ensure_bpffs(self.bpffs):
            raise LabError(f"{self.bpffs}: not on a bpf filesystem")
        topology.build(self.plan)

    def _start(self, key: str, pod: str, argv: Sequence[str], uid: int | None = None) -> None:
        cmd = procs.launcher(argv, cgroup=self.pod_cgroup(pod), netns=self.plan.pod(pod).netns, uid=uid)
        self.pids[key] = procs.start_detached(cmd, self.logs / f"{key}.log")
        self._save()

    def _start_pods(self) -> None:
        for pod in self.plan.pods:
            if pod.app is not None:
                self._start(pod.name, pod.name, procs.python_module(
                    "kernsplit.agent.lab.podserver", "--version", pod.version, "--pod", pod.name,
                    "--port", str(SERVER_PORT)))
        # the proxy runs as the proxy uid: proxy-init's OUTPUT rules exempt it from redirection
        self._start("tproxy", self.plan.client.name,
                    procs.python_module("kernsplit.agent.lab.tproxy", "--port", str(PROXY_OUT_PORT)),
                    uid=PROXY_UID)

    def _apply_proxy_init(self) -> None:
        cmd = [program("proxy-init"), "--netns", self.plan.client.netns]
        if self.interception == "ebpf":
            cmd += ["--mode", "ebpf", "--bpffs", str(self.bpffs)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        (self.logs / "proxy-init.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise LabError(f"{' '.join(cmd)} failed (exit {proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip()}")

    def _wait_listening(self) -> None:
        waiting = {key: (pid, PROXY_OUT_PORT if key == "tproxy" else SERVER_PORT)
                   for key, pid in self.pids.items()}
        ready_timeout = scaled(READY_TIMEOUT)
        deadline = time.monotonic() + ready_timeout
        while waiting:
            for key, (pid, port) in list(waiting.items()):
                if procs.listening(pid, port):
                    del waiting[key]
                elif not procs.alive(pid):
                    raise LabError(f"{key} exited at start; see {self.logs / (key + '.log')}")
            if time.monotonic() > deadline:
                raise LabError(f"not listening after {ready_timeout}s: {', '.join(waiting)}")
            time.sleep(0.02)

    def _start_apiserver(self) -> None:
        """The lab API server, then every manifest written so far applied to it with kubectl."""
        pid = kubeapi.start(program("kernsplit"), self.kubeconfig, self.logs / "apiserver.log",
                            self.cgroup / "apiserver")
        self.pids["apiserver"] = pid
        self._save()
        problem = kubeapi.wait_ready(pid, self.kubeconfig)
        if problem:
            raise LabError(f"{problem}; see {self.logs / 'apiserver.log'}")
        self.kubectl("apply", "-f", str(self.manifests))

    def kubectl(self, *args: str) -> str:
        """kubectl against the lab API server; its output, or LabError with what it printed."""
        proc = kubeapi.kubectl(self.kubeconfig, *args)
        if proc.returncode != 0:
            raise LabError(f"kubectl {' '.join(args)} failed (exit {proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def _wait_interception_loaded(self) -> None:
        """Until the agent has pinned the pod map and attached the interception programs."""
        ready = [self.bpffs / "maps" / "ks_pods", self.bpffs / "links" / "ks_ic_connect4"]
        deadline = time.monotonic() + scaled(READY_TIMEOUT)
        while not all(p.exists() for p in ready):
            if not procs.alive(self.pids["agent"]):
                raise LabError(f"kernsplit agent exited at start; see {self.agent_log}")
            if time.monotonic() > deadline:
                raise LabError(f"the agent did not load the interception programs; see {self.agent_log}")
            time.sleep(0.02)

    # -- the agent ----------------------------------------------------------------------------
    def agent_argv(self, *extra: str) -> list[str]:
        source = (["--source", "kubernetes"] if self.source == "kubernetes"
                  else ["--config", str(self.manifests)])
        argv = [program("kernsplit"), "agent", *source, "--dataplane", self.dataplane, "--netns", self.node,
                "--metrics-addr", "127.0.0.1:0"]     # labs run side by side: any free port (logged)
        if self.dataplane == "ebpf":
            # split after the proxy, as on the node with iptables: the proxy sees the ClusterIP
            argv += ["--cgroup", str(self.pods_cgroup), "--bpffs", str(self.bpffs),
                     "--split-uid", str(PROXY_UID)]
        if self.interception == "ebpf":
            argv.append("--interception")
        return [*argv, *extra]

    def start_agent(self, *extra: str) -> int:
        """Start `kernsplit agent` in the background (in the lab's agent cgroup, so that
        `lab down` finds it even without the state file)."""
        cmd = procs.launcher(self.agent_argv(*extra), cgroup=self.cgroup / "agent")
        env = {"KUBECONFIG": str(self.kubeconfig)} if self.source == "kubernetes" else None
        pid = procs.start_detached(cmd, self.agent_log, env)
        self.pids["agent"] = pid
        self._save()
        time.sleep(0.05)
        if not procs.alive(pid):
            raise LabError(f"kernsplit agent exited at start; see {self.agent_log}")
        return pid

    def kill_agent(self, sig: int = signal.SIGKILL) -> None:
        """Stop the agent: SIGKILL (a crash) or SIGTERM (a clean exit, which leaves the rules)."""
        pid = self.pids.pop("agent", None)
        if pid is not None:
            procs.signal_and_wait(pid, sig)
        self._save()

    # -- driving it ---------------------------------------------------------------------------
    def write_manifest(self, name: str, text: str) -> Path:
        """Writes a manifest file; with the Kubernetes source, once the API server runs, also
        `kubectl apply -f` it (the file is then what was applied)."""
        path = self.manifests / name
        write_atomic(path, text)
        if self.source == "kubernetes" and "apiserver" in self.pids:
            self.kubectl("apply", "-f", str(path))
        return path

    def exec_argv(self, pod: str, argv: Sequence[str], uid: int | None = None) -> list[str]:
        return procs.launcher(argv, cgroup=self.pod_cgroup(pod), netns=self.plan.pod(pod).netns, uid=uid)


    def load(self, connections: int, target: str = "10.100.200.30:80", concurrency: int = 16,
             pod: str = "client", uid: int | None = None, timeout: float = 120) -> dict:
        """Make `connections` new connections from a pod's application; returns the load
        program's report: {"outcomes": {...}, "pods": {...}, "versions": {...}, "seconds": s}."""
        argv = procs.python_module("kernsplit.agent.lab.load", "--target", target, "-n", str(connections),
                                   "-c", str(concurrency))
        proc = subprocess.run(self.exec_argv(pod, argv, uid), capture_output=True, text=True,
                              timeout=scaled(timeout))
        if proc.returncode != 0:
            raise LabError(f"load in {pod} failed (exit {proc.returncode}): {proc.stderr.strip()}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def show(self, *extra: str) -> subprocess.CompletedProcess:
        argv = [program("kernsplit"), "show", "--dataplane", self.dataplane, "--netns", self.node]
        if self.bpffs is not None:
            argv += ["--bpffs", str(self.bpffs)]
        return subprocess.run([*argv, *extra], capture_output=True, text=True, timeout=scaled(30))


def open_lab(prefix: str, dataplane: str = "iptables", interception: str = "iptables", source: str = "files",
             **plan_args) -> Lab:
    return Lab(plan_lab(prefix, **plan_args), dataplane, interception, source)


def down(prefix: str) -> list[str]:
    """Remove every trace of a lab, found by prefix: processes (state pids, the lab cgroup,
    the lab namespaces), BPF objects (`kernsplit agent --cleanup`), namespaces (and with them
    veths and rules), cgroups, pins and files. Works after a crash. Returns what could not be
    removed (empty = clean)."""
    problems: list[str] = []
    saved = state.load(prefix)
    netns_names = topology.lab_netns(prefix)
    inodes = {i for i in (topology.netns_inode(n) for n in netns_names) if i is not None}
    cg = Path(saved.cgroup) if saved else cgroups.lab_cgroup(prefix)
    pids = set(saved.pids.values() if saved else ()) | cgroups.pids_under(cg) | procs.pids_in_netns(inodes)
    left = procs.stop(pids)
    problems += [f"process {p} survived SIGKILL" for p in left]
    problems += _cleanup_bpf(prefix, saved, cg)
    problems += topology.remove_netns(netns_names)
    problems += cgroups.remove_tree(cg)
    shutil.rmtree(state.lab_root(prefix), ignore_errors=True)
    return problems


def _cleanup_bpf(prefix: str, saved: state.LabState | None, cg: Path) -> list[str]:
    pins = Path(saved.bpffs) if saved and saved.bpffs else BPFFS_ROOT / prefix
    if not pins.exists():
        return []
    problems = []
    cmd = [program("kernsplit"), "agent", "--config", str(state.manifests_dir(prefix)),
           "--dataplane", "ebpf", "--cgroup", str(cg / "pods"), "--bpffs", str(pins), "--cleanup"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        problems.append(f"kernsplit agent --cleanup failed: {(proc.stderr or proc.stdout).strip()}")
    # pins are files in our own directory: unlinking drops our references to the objects
    shutil.rmtree(pins, ignore_errors=True)
    if pins.exists():
        problems.append(f"bpffs {pins} could not be removed")
    return problems


def leftover_prefixes() -> list[str]:
    """Labs that exist in any form: state dirs, namespaces, cgroups or pins named ksl<hex>."""
    found = set(state.known_prefixes())
    found |= {n.split("-", 1)[0] for n in topology.lab_netns("ksl")}
    for parent in (mounts.cgroup2(), BPFFS_ROOT):
        if parent.is_dir():
            found |= {p.name for p in parent.iterdir()}
    return sorted(p for p in found if PREFIX_RE.match(p))


def pod_exec_argv(prefix: str, pod: str, argv: Sequence[str], uid: int | None = None) -> list[str]:
    """argv run inside a pod of a running lab, found by name alone (labs built by tests have
    more pods than the seed plan)."""
    netns = f"{prefix}-{pod}"
    saved = state.load(prefix)
    cg = Path(saved.cgroup) if saved else cgroups.lab_cgroup(prefix)
    if netns not in topology.lab_netns(prefix):
        pods = [n.removeprefix(f"{prefix}-") for n in topology.lab_netns(prefix)]
        raise LabError(f"lab {prefix} has no pod {pod!r}; it has: {', '.join(pods) or 'nothing'}")
    pod_cg = cg / "pods" / pod
    return procs.launcher(argv, cgroup=pod_cg if pod_cg.is_dir() else None, netns=netns, uid=uid)
