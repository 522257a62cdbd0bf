"""Repairs and xtables lock waits on the iptables dataplane are logged and counted, never silent.

Drift: a jump into our chains deleted by hand, or `KS-POSTROUTING` removed, is repaired by the next
full sync, which logs one warning per repair naming table, chain and jump, and lists it in the
sync's result (the agent's metrics count those: `kernsplit_kernel_repairs_total`, by kind). A
restarted agent (which does not know what was written before) reports a jump it adds back too.

The xtables lock: iptables-legacy takes it with flock(); without `--wait` a restore waits for it
for ever, silently. These tests hold a lock file of their own, which iptables takes instead of
/run/xtables.lock because XTABLES_LOCKFILE names it (iptables' own variable, inherited by every
command the agent runs): the code path in iptables is the real one, and the host's firewall is
never delayed. Held past `--iptables-wait`, the sync fails with an error naming the lock and the
kernel keeps its last state; a wait that ends in time is logged and counted
(`kernsplit_iptables_lock_waits_total`). iptables-nft does not take the lock: a held lock does
not stop it.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kernsplit.agent.dataplane.iptables import IptablesDataplane
from kernsplit.agent.iptables.exec import XtablesLockHeld, save
from kernsplit.agent.iptables.kinds import Family, IptablesBackend
from kernsplit.agent.lab.timescale import scaled
from kernsplit.agent.metrics import Metrics

from tests.fixtures import Topology, manifests, split_port

pytestmark = pytest.mark.kernel

KERNSPLIT = str(Path(sys.executable).parent / "kernsplit")
VIP, V1, V2 = "10.100.200.30", "10.1.0.1", "10.1.0.2"
SPLIT = split_port({"v1": 1}, {"v1": [V1]}, ip=VIP)
NINETY = split_port({"v1": 9, "v2": 1}, {"v1": [V1], "v2": [V2]}, ip=VIP)
HALF = split_port({"v1": 1, "v2": 1}, {"v1": [V1], "v2": [V2]}, ip=VIP)


@pytest.fixture(params=["nft", "legacy"])
def mode(request):
    return request.param


def _ipt(netns: str, mode: str, *args: str) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, f"iptables-{mode}", "-t", "nat", *args],
                          capture_output=True, text=True, check=True).stdout


def _delete_jump(netns: str, mode: str, chain: str, target: str) -> None:
    [rule] = [line[len(f"-A {chain} "):] for line in _ipt(netns, mode, "-S", chain).splitlines()
              if line.startswith(f"-A {chain} ") and line.endswith(f"-j {target}")]
    # `-S` quotes the comment as a shell would: let one parse it back
    subprocess.run(["sh", "-c", f"ip netns exec {netns} iptables-{mode} -t nat -D {chain} {rule}"], check=True)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def _nat(netns: str, mode: str) -> str:
    return "".join(l + "\n" for l in save(netns, IptablesBackend(mode), Family.V4, table="nat").splitlines()
                   if not l.startswith("#"))


def test_each_repair_is_logged_naming_it_and_counted(netns, mode, caplog):
    with Topology(netns) as topo:
        topo.address(VIP)
        topo.listen(V1)
        dp = IptablesDataplane(netns=netns, mode=mode)
        dp.sync([SPLIT], full=True)
        assert topo.connect(VIP, 80) == [0]

        _delete_jump(netns, mode, "OUTPUT", "KS-SERVICES")
        _delete_jump(netns, mode, "POSTROUTING", "KS-POSTROUTING")
        _ipt(netns, mode, "-F", "KS-POSTROUTING")
        _ipt(netns, mode, "-X", "KS-POSTROUTING")
        assert topo.connect(VIP, 80) != [0]              # nothing DNATs the ClusterIP any more

        caplog.clear()
        with caplog.at_level(logging.INFO, logger="kernsplit"):
            result = dp.sync([SPLIT], full=True)
        assert (result.written, result.unchanged) == (0, 1)
        warnings = _warnings(caplog)
        assert len(warnings) == 3, warnings
        for what in ("jump nat OUTPUT -j KS-SERVICES was missing", "jump nat POSTROUTING -j KS-POSTROUTING was missing",
                     "chain nat KS-POSTROUTING was missing"):
            assert any(what in w and "drift repaired" in w for w in warnings), (what, warnings)
        assert topo.connect(VIP, 80) == [0]
        assert sorted(result.repaired) == ["iptables_chain", "iptables_jump", "iptables_jump"]

        # nothing drifted: a full resync repairs and reports nothing
        caplog.clear()
        assert dp.sync([SPLIT], full=True).repaired == ()
        assert _warnings(caplog) == []

        # a restarted agent does not know what was written, and still reports the jump it adds back
        _delete_jump(netns, mode, "PREROUTING", "KS-SERVICES")
        caplog.clear()
        IptablesDataplane(netns=netns, mode=mode).sync([SPLIT], full=True)
        assert [w for w in _warnings(caplog) if "jump nat PREROUTING -j KS-SERVICES was missing" in w], \
            _warnings(caplog)


# --- the xtables lock ----------------------------------------------------------------------------

@pytest.fixture
def xtables_lock(tmp_path, monkeypatch) -> Path:
    """A lock file of this test's own, taken by every iptables command this process starts."""
    path = tmp_path / "xtables.lock"
    path.touch()
    monkeypatch.setenv("XTABLES_LOCKFILE", str(path))
    return path


def _waiting(path: Path) -> bool:
    """Some process is blocked in flock() on `path` (a `->` line of /proc/locks)."""
    st = os.stat(path)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return any(w[1:2] == ["->"] and key in w for w in map(str.split, Path("/proc/locks").read_text().splitlines()))


@contextlib.contextmanager
def held(path: Path, *, until_waited: bool = False, bound: float = 10.0):
    """Hold the lock from this process: until someone waits for it (`until_waited`), or at most
    `bound` seconds (so a test of code that waits for ever ends, and fails), or the block ends."""
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    done = threading.Event()

    def release() -> None:
        deadline = time.monotonic() + bound
        while not done.is_set() and time.monotonic() < deadline and not (until_waited and _waiting(path)):
            time.sleep(0.02)
        fcntl.flock(fd, fcntl.LOCK_UN)
    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        os.close(fd)


def _waits(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("kernsplit_iptables_lock_waits_total")


def test_a_lock_held_past_the_bound_fails_the_sync_naming_it_and_the_kernel_keeps_its_state(
        netns, mode, xtables_lock):
    metrics = Metrics(resync_interval=30)
    dp = IptablesDataplane(netns=netns, mode=mode, lock_wait=1, events=metrics)
    dp.sync([NINETY])
    before = _nat(netns, mode)
    with held(xtables_lock, bound=scaled(10)):
        if mode == "legacy":
            with pytest.raises(XtablesLockHeld) as failed:
                dp.sync([HALF])
            assert (f"the xtables lock {xtables_lock} was still held by pid {os.getpid()}" in str(failed.value)
                    and "after 1 s" in str(failed.value) and "nothing was written" in str(failed.value))
            assert _nat(netns, mode) == before
            assert _waits(metrics) == 1
        else:                                              # iptables-nft takes no lock
            dp.sync([HALF])
            assert _waits(metrics) == 0
    dp.sync([HALF])                                        # released: the next sync writes
    [split] = dp.observe()
    assert {b.service: b.weight for b in split.backends} == {"v1": 1, "v2": 1}


def test_a_wait_for_the_lock_is_logged_and_counted(netns, xtables_lock, caplog):
    metrics = Metrics(resync_interval=30)
    dp = IptablesDataplane(netns=netns, mode="legacy", lock_wait=int(scaled(30)), events=metrics)
    with held(xtables_lock, until_waited=True, bound=scaled(30)), caplog.at_level(logging.INFO, logger="kernsplit"):
        dp.sync([SPLIT])
    assert f"the xtables lock {xtables_lock} is held by pid {os.getpid()}" in caplog.text
    assert _waits(metrics) == 1
    assert "KS-SERVICES" in _nat(netns, "legacy")


MANIFESTS = manifests(VIP, V1)


def test_the_agent_reports_the_held_lock_and_changes_nothing(netns, xtables_lock, tmp_path):
    config = tmp_path / "split.yaml"
    config.write_text(MANIFESTS)
    with held(xtables_lock, bound=scaled(10)):
        r = subprocess.run([KERNSPLIT, "agent", "--netns", netns, "--iptables-mode", "legacy", "--iptables-wait", "1",
                            "--config", str(config), "--once"], capture_output=True, text=True, timeout=scaled(60))
    assert r.returncode == 1, r.stderr
    assert f"the xtables lock {xtables_lock} was still held by pid {os.getpid()}" in r.stderr
    assert "KS-" not in _nat(netns, "legacy")


def test_proxy_init_gives_up_on_a_held_lock_naming_it(netns, xtables_lock):
    with held(xtables_lock, bound=scaled(10)):
        r = subprocess.run([str(Path(KERNSPLIT).parent / "proxy-init"), "--netns", netns, "--iptables-mode", "legacy",
                            "--no-ipv6", "--iptables-wait", "1"], capture_output=True, text=True, timeout=scaled(60))
    assert r.returncode == 1, r.stderr
    assert f"the xtables lock {xtables_lock} was still held by pid {os.getpid()}" in r.stderr
    assert "KS-PROXY-INIT" not in _nat(netns, "legacy")
