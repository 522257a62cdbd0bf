"""A config file caught half-written never reaches the kernel (file source, iptables dataplane).

Writers that are not atomic (an editor saving in place, `cat > file`, a sync tool) truncate a file
and then fill it. Between the two a reader sees an empty `split.yaml`, a `services.yaml` cut before
its Endpoints, or an empty directory. Each would remove or refuse splits: this runs the agent as a
user does (`kernsplit agent --config DIR`, watching), makes each of those writes with a pause of
half a second in the middle, and samples the kernel's rules throughout: every split port must stay
served the whole time. A change that really removes most splits is applied after the files settle,
with a warning in the log.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import throwaway_netns
from kernsplit.agent.iptables.exec import save
from kernsplit.agent.iptables.kinds import Family, IptablesBackend
from tests.fixtures import stop_process

pytestmark = pytest.mark.kernel

KERNSPLIT = str(Path(sys.executable).parent / "kernsplit")
ROOTS = {"my-app": "10.100.200.30", "other-app": "10.100.200.33"}
PAUSE = 0.5           # the writer's pause between truncating and filling a file


def _svc(name: str, ip: str) -> str:
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n"
            f"spec:\n  clusterIP: {ip}\n  ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]\n")


def _eps(name: str, ip: str) -> str:
    return (f"apiVersion: v1\nkind: Endpoints\nmetadata: {{name: {name}, namespace: default}}\n"
            f"subsets:\n- addresses: [{{ip: {ip}}}]\n  ports: [{{name: http, port: 8080, protocol: TCP}}]\n")


def _split(root: str) -> str:
    return ("apiVersion: split.smi-spec.io/v1alpha1\nkind: TrafficSplit\n"
            f"metadata: {{name: {root}-split, namespace: default}}\n"
            f"spec:\n  service: {root}\n  backends:\n  - {{service: v1, weight: 900m}}\n"
            "  - {service: v2, weight: 100m}\n")


SERVICES = "---\n".join([*(_svc(n, ip) for n, ip in ROOTS.items()), _svc("v1", "10.100.200.31"),
                         _svc("v2", "10.100.200.32"), _eps("v1", "10.1.0.1"), _eps("v2", "10.1.0.2")])
SPLITS = "---\n".join(_split(root) for root in ROOTS)
SERVICES_CUT = SERVICES[:SERVICES.index("kind: Endpoints")].rsplit("---", 1)[0]   # before its Endpoints


def served(netns: str) -> set[str]:
    """Root ClusterIPs whose split chain DNATs to an endpoint (not refused, not missing)."""
    lines = save(netns, IptablesBackend.NFT, Family.V4, table="nat").splitlines()
    chains = {line.rsplit("-j ", 1)[1]: line.split("-d ", 1)[1].split("/", 1)[0]
              for line in lines if line.startswith("-A KS-SERVICES ") and "-d " in line}
    dnat = {line.split()[1] for line in lines if line.startswith("-A KS-SVC-") and "-j DNAT" in line}
    return {ip for chain, ip in chains.items() if chain in dnat}


@pytest.fixture
def world(root_required, tmp_path):
    config = tmp_path / "manifests"
    config.mkdir()
    (config / "services.yaml").write_text(SERVICES)
    (config / "split.yaml").write_text(SPLITS)
    log = tmp_path / "agent.log"
    with throwaway_netns() as netns:
        proc = subprocess.Popen([KERNSPLIT, "agent", "--netns", netns, "--iptables-mode", "nft",
                                 "--config", str(config), "--metrics-addr", "127.0.0.1:0"], stdout=subprocess.DEVNULL, stderr=log.open("w"))
        try:
            _until(lambda: served(netns) == set(ROOTS.values()), "the first sync")
            yield netns, config, log
        finally:
            stop_process(proc)


def _until(check, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _watch(netns: str, seconds: float) -> list[set[str]]:
    samples, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        samples.append(served(netns))
        time.sleep(0.03)
    return samples


def _truncate_then_fill(path: Path, partial: str, full: str) -> None:
    path.write_text(partial)
    time.sleep(PAUSE)
    path.write_text(full)


WRITES = {
    "split.yaml truncated to 0 bytes": lambda c: _truncate_then_fill(c / "split.yaml", "", SPLITS),
    "services.yaml cut before its Endpoints": lambda c: _truncate_then_fill(c / "services.yaml", SERVICES_CUT,
                                                                            SERVICES),
    "directory recreated empty": lambda c: (shutil.rmtree(c), c.mkdir(), time.sleep(PAUSE),
                                            (c / "services.yaml").write_text(SERVICES),
                                            (c / "split.yaml").write_text(SPLITS)),
}


@pytest.mark.parametrize("write", WRITES)
def test_a_half_written_config_never_reaches_the_kernel(world, write):
    netns, config, _ = world
    writer = threading.Thread(target=WRITES[write], args=(config,))
    writer.start()
    samples = _watch(netns, PAUSE + 2.0)
    writer.join()
    want = set(ROOTS.values())
    assert all(s == want for s in samples), [sorted(want - s) for s in samples if s != want][:3]


def test_a_change_that_removes_most_splits_is_applied_with_a_warning(world):
    netns, config, log = world
    tmp = config / ".split.yaml.tmp"
    tmp.write_text(_split("my-app"))
    tmp.rename(config / "split.yaml")            # atomic: one of the two splits removed on purpose
    _until(lambda: served(netns) == {ROOTS["my-app"]}, "one split removed")
    tmp.write_text("")
    tmp.rename(config / "split.yaml")
    _until(lambda: served(netns) == set(), "the last split removed")
    assert "split ports in force" not in log.read_text()     # one split at a time: no warning
    (config / "split.yaml").write_text(SPLITS)
    _until(lambda: served(netns) == set(ROOTS.values()), "splits back")
    tmp.write_text("")
    tmp.rename(config / "split.yaml")
    _until(lambda: served(netns) == set(), "both removed")
    _until(lambda: "removes 2 and refuses 0 of the 2 split ports in force" in log.read_text(), "the warning")
    line = next(l for l in log.read_text().splitlines() if "removes 2 and refuses" in l)
    assert "WARNING" in line.upper() and "atomically" in line
