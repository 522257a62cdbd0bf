"""An agent with interception on, restarted with one of its interception program pins removed,
repairs it and keeps the pods that proxy-init registered (real kernel: lab pod and outside
namespaces, a cgroup and a bpffs folder of the test's own)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from kernsplit.agent import mounts
from kernsplit.agent.cli import main as kernsplit
from kernsplit.agent.dataplane.ebpf.dataplane import EbpfDataplane
from conftest import unique_name
from tests.kernel.test_init_intercept import connect, joined_cgroup, lab, proxy_init, servers  # noqa: F401

pytestmark = [pytest.mark.kernel, pytest.mark.bpf]


def pods(bpffs: Path) -> dict[str, dict]:
    result = CliRunner().invoke(kernsplit, ["show", "--pods", "--bpffs", str(bpffs), "-o", "json"])
    assert result.exit_code == 0, result.output
    return {p["netns"]: p for p in json.loads(result.stdout)}


def test_a_restart_with_an_interception_pin_missing_keeps_registered_pods(lab, caplog, monkeypatch):
    cgroup = mounts.cgroup2() / unique_name("cg")
    cgroup.mkdir()
    bpffs = mounts.BPFFS / unique_name("bf")
    first = EbpfDataplane(cgroup=cgroup, bpffs=bpffs, interception=True)
    try:
        first.sync([], full=True)
        first.close()
        with joined_cgroup(cgroup), servers(lab):
            proxy_init("--netns", lab.pod, "--mode", "ebpf", "--bpffs", str(bpffs), "--no-ipv6")
            assert connect(lab.pod, lab.out_ip, 8080) == f"proxy-out {lab.out_ip}:8080"
            (bpffs / "progs" / "ks_ic_connect4").unlink()
            monkeypatch.setattr(logging.getLogger("kernsplit"), "propagate", True)   # proxy-init's CLI cut it
            again = EbpfDataplane(cgroup=cgroup, bpffs=bpffs, interception=True)     # the restarted agent
            with caplog.at_level(logging.WARNING, logger="kernsplit.agent"):
                again.sync([], full=True)
            again.close()
            assert connect(lab.pod, lab.out_ip, 8080) == f"proxy-out {lab.out_ip}:8080"
        assert any("ks_ic_connect4" in r.getMessage() and "repaired" in r.getMessage() for r in caplog.records)
        assert not any("another schema" in r.getMessage() for r in caplog.records)
        assert (bpffs / "progs" / "ks_ic_connect4").exists()
        assert pods(bpffs)[lab.pod]["outbound"] == 2              # still registered, its count kept
    finally:
        first.cleanup()
        cgroup.rmdir()
