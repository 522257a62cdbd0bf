"""The lab's Kubernetes API: `kernsplit lab apiserver` started as a lab process, and `kubectl`
run against it, as a user would (the lab applies its manifests with `kubectl apply -f`)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from kernsplit.agent.lab import procs
from kernsplit.agent.lab.timescale import scaled


def kubectl_path() -> str | None:
    """The machine's kubectl, else the one `make install` put in the venv."""
    return shutil.which("kubectl") or shutil.which("kubectl", path=str(Path(sys.executable).parent))


def start(kernsplit: str, kubeconfig: Path, log: Path, cgroup: Path) -> int:
    """Starts the API server on a free port of 127.0.0.1; it writes `kubeconfig` once listening."""
    kubeconfig.unlink(missing_ok=True)
    argv = [kernsplit, "lab", "apiserver", "--port", "0", "--kubeconfig", str(kubeconfig)]
    return procs.start_detached(procs.launcher(argv, cgroup=cgroup), log)


def wait_ready(pid: int, kubeconfig: Path, timeout: float = 15.0) -> str | None:
    """None once the kubeconfig is written, else why not."""
    deadline = time.monotonic() + scaled(timeout)
    while not kubeconfig.exists():
        if not procs.alive(pid):
            return "the lab API server exited at start"
        if time.monotonic() > deadline:
            return f"the lab API server wrote no kubeconfig within {scaled(timeout)}s"
        time.sleep(0.02)
    return None


def kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess:
    exe = kubectl_path()
    if exe is None:
        return subprocess.CompletedProcess(["kubectl", *args], 127, "", "kubectl not found: run `make install`")
    return subprocess.run([exe, "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True,
                          timeout=scaled(60))
