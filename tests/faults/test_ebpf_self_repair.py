"""The eBPF dataplane repairs its own pins and attachments (real kernel, lab cgroup, lab bpffs).

An operator's worst day, by hand: a link pin removed (the link dies with it), a link detached, the
target cgroup removed and recreated, a map or program pin removed. A running agent's full resync
must find each, repair it, and say at warning level what it repaired; `show` must name a missing
pin instead of failing with a traceback; and an agent restarted with one object missing must
repair that object and keep the connection counters (the schema did not change).
"""
from __future__ import annotations

import logging
import shutil
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures import lab, labels, make, program_ids, split_port, stop_process  # noqa: F401 (`lab`: a fixture)

pytestmark = [pytest.mark.kernel, pytest.mark.bpf]

KERNSPLIT = str(Path(sys.executable).parent / "kernsplit")
IP, PORT = "10.100.200.30", 80
SPLIT = split_port({"my-app-v1": 1, "my-app-v2": 1},
                   {"my-app-v1": [("10.1.0.1", 8080)], "my-app-v2": [("10.1.0.2", 8080)]}, ip=IP, port=PORT)


def split_again(lab, n: int = 20) -> bool:
    """Every connection to the ClusterIP landed on a backend."""
    seen = labels(lab.client(IP, PORT, n))
    ok = sum(seen.get(b, 0) for b in ("v1", "v2")) == n
    if not ok:
        print("connections:", seen)
    return ok


def counts(dp) -> dict[str, int]:
    [obs] = dp.observe()
    return {b.service: b.connections for b in obs.backends}


def _detach(path: Path) -> None:
    from kernsplit.agent.dataplane.ebpf import bpfsys
    fd = bpfsys.obj_get(path)
    try:
        bpfsys.link_detach(fd, path.name)
    finally:
        os.close(fd)


def _recreate(cgroup: Path) -> None:
    cgroup.rmdir()
    cgroup.mkdir()


# fault -> (what it does to the lab, the object the warning must name)
FAULTS = {
    "link pin removed": (lambda lab: (lab.bpffs / "links" / "sock4_connect").unlink(), "sock4_connect"),
    "link detached": (lambda lab: _detach(lab.bpffs / "links" / "sock4_connect"), "sock4_connect"),
    "cgroup removed and recreated": (lambda lab: _recreate(lab.cgroup), "sock4_connect"),
    "map pin removed": (lambda lab: (lab.bpffs / "maps" / "ks_counters").unlink(), "ks_counters"),
    "program pin removed": (lambda lab: (lab.bpffs / "progs" / "sock4_getpeername").unlink(),
                            "sock4_getpeername"),
    "pin directory removed": (lambda lab: shutil.rmtree(lab.bpffs), "ks_services"),
}


@pytest.fixture
def live(lab):
    lab.listen("10.1.0.1", 8080, "v1")
    lab.listen("10.1.0.2", 8080, "v2")
    dp = make(lab)
    dp.sync([SPLIT], full=True)
    assert split_again(lab)
    try:
        yield lab, dp
    finally:
        dp.close()


@pytest.mark.parametrize("fault", FAULTS)
def test_full_resync_repairs_pins_and_attachments_and_says_so(live, fault, caplog):
    lab, dp = live
    before = counts(dp)
    ids = program_ids(dp)
    damage, name = FAULTS[fault]
    damage(lab)
    with caplog.at_level(logging.WARNING, logger="kernsplit.agent"):
        dp.sync([SPLIT], full=True)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(name in m for m in warned), warned
    assert split_again(lab)
    assert all(p.exists() for p in _pins(lab.bpffs))
    assert program_ids(dp) == ids                           # repaired, not reinstalled
    after = counts(dp)                                      # the counters were kept
    assert sum(after.values()) == sum(before.values()) + 20, (before, after)


def test_a_repaired_object_is_not_repaired_again(live, caplog):
    lab, dp = live
    (lab.bpffs / "links" / "sock4_connect").unlink()
    assert dp.sync([SPLIT], full=True).repaired == ("ebpf_link",)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kernsplit.agent"):
        assert dp.sync([SPLIT], full=True).repaired == ()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def _pins(root: Path) -> list[Path]:
    from kernsplit.agent.dataplane.ebpf import pins
    return ([root / "maps" / m for m in pins.MAPS] + [root / "progs" / p for p in pins.PROGRAMS]
            + [root / "links" / p for p in pins.PROGRAMS])


def test_show_warns_that_a_listed_split_is_not_enforced(live):
    lab, dp = live
    _detach(lab.bpffs / "links" / "sock4_connect")
    proc = subprocess.run([KERNSPLIT, "show", "--bpffs", str(lab.bpffs)], capture_output=True, text=True)
    assert proc.returncode == 0 and "my-app" in proc.stdout, proc.stderr
    assert "sock4_connect is detached" in proc.stderr and "not split" in proc.stderr, proc.stderr
    dp.sync([SPLIT], full=True)
    proc = subprocess.run([KERNSPLIT, "show", "--bpffs", str(lab.bpffs)], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_show_names_a_missing_pin_without_a_traceback(live):
    lab, dp = live
    dp.close()
    missing = lab.bpffs / "maps" / "ks_meta"
    missing.unlink()
    for dataplane in ("ebpf", "auto"):
        proc = subprocess.run([KERNSPLIT, "show", "--dataplane", dataplane, "--bpffs", str(lab.bpffs)],
                              capture_output=True, text=True)
        assert proc.returncode != 0, proc.stdout
        assert "Traceback" not in proc.stderr, proc.stderr
        assert str(missing) in proc.stderr, proc.stderr
    proc = subprocess.run([KERNSPLIT, "show", "--pods", "--bpffs", str(lab.bpffs)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr                # the pods' maps are all there
    missing = lab.bpffs / "maps" / "ks_pod_counters"
    missing.unlink()
    proc = subprocess.run([KERNSPLIT, "show", "--pods", "--bpffs", str(lab.bpffs)], capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and str(missing) in proc.stderr, proc.stderr


@pytest.mark.parametrize("pin", ["progs/sock4_connect", "maps/ks_slots", "links/sock4_getpeername"])
def test_a_restarted_agent_repairs_one_missing_pin_and_keeps_the_counters(live, pin, caplog):
    lab, first = live
    split_again(lab)
    before = counts(first)
    first.close()
    (lab.bpffs / pin).unlink()
    if not pin.startswith("links"):                         # a dry run says so, and changes nothing
        assert f"pins missing ({lab.bpffs / pin})" in make(lab).preview([SPLIT])
        assert not (lab.bpffs / pin).exists()
    second = make(lab)                                      # the restarted agent
    try:
        with caplog.at_level(logging.INFO, logger="kernsplit.agent"):
            second.sync([SPLIT], full=True)
        messages = [r.getMessage() for r in caplog.records]
        assert not any("another schema" in m for m in messages), messages
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(Path(pin).name in m for m in warned), messages
        assert counts(second) == before
        assert split_again(lab)
        assert all(p.exists() for p in _pins(lab.bpffs))
    finally:
        second.close()


# --- the agent as a user runs it ---------------------------------------------------------------

def _manifests(config: Path) -> None:
    def svc(name, ip):
        return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n"
                f"spec:\n  clusterIP: {ip}\n  ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]\n")

    def eps(name, ip):
        return (f"apiVersion: v1\nkind: Endpoints\nmetadata: {{name: {name}, namespace: default}}\n"
                f"subsets:\n- addresses: [{{ip: {ip}}}]\n  ports: [{{name: http, port: 8080, protocol: TCP}}]\n")
    (config / "services.yaml").write_text("---\n".join([
        svc("my-app", IP), svc("v1", "10.100.200.31"), svc("v2", "10.100.200.32"),
        eps("v1", "10.1.0.1"), eps("v2", "10.1.0.2")]))
    (config / "split.yaml").write_text(
        "apiVersion: split.smi-spec.io/v1alpha1\nkind: TrafficSplit\n"
        "metadata: {name: my-app-split, namespace: default}\n"
        "spec:\n  service: my-app\n  backends:\n  - {service: v1, weight: 500m}\n  - {service: v2, weight: 500m}\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _until(check, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_the_running_agent_repairs_a_removed_link_and_map_pin(lab, tmp_path):
    lab.listen("10.1.0.1", 8080, "v1")
    lab.listen("10.1.0.2", 8080, "v2")
    config = tmp_path / "manifests"
    config.mkdir()
    _manifests(config)
    log = tmp_path / "agent.log"
    metrics = f"127.0.0.1:{_free_port()}"
    proc = subprocess.Popen([KERNSPLIT, "agent", "--dataplane", "ebpf", "--cgroup", str(lab.cgroup),
                             "--bpffs", str(lab.bpffs), "--config", str(config), "--resync-interval", "0.5",
                             "--metrics-addr", metrics], stdout=subprocess.DEVNULL, stderr=log.open("w"))
    try:
        _until(lambda: split_again(lab, 4), "the first sync")
        (lab.bpffs / "links" / "sock4_connect").unlink()
        (lab.bpffs / "maps" / "ks_services").unlink()
        _until(lambda: (lab.bpffs / "maps" / "ks_services").exists() and split_again(lab, 4), "the repair")
        text = log.read_text()
        for name in ("sock4_connect", "ks_services"):
            assert any("WARNING" in line.upper() and name in line and "repaired" in line
                       for line in text.splitlines()), text
        with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as r:
            exposed = r.read().decode()
        assert 'kernsplit_kernel_repairs_total{what="ebpf_link"} 1.0' in exposed, exposed
        assert 'kernsplit_kernel_repairs_total{what="ebpf_map_pin"} 1.0' in exposed, exposed
    finally:
        stop_process(proc)
