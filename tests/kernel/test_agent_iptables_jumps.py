"""Our jumps come first in their built-in chains, even on a node where kube-proxy is there too.

A foreign KUBE-SERVICES-like chain DNATs the same ClusterIP:port to another listener and is jumped
to from OUTPUT. Our split must still decide (our jump is inserted at the top); when a foreign jump
is inserted above ours later (kube-proxy restarting), a full resync moves ours back to the top and
leaves the foreign rules alone; cleanup restores the table exactly as it was before us.
"""
from __future__ import annotations

import subprocess

import pytest

from kernsplit.agent.dataplane.iptables import IptablesDataplane
from kernsplit.agent.iptables.exec import save
from kernsplit.agent.iptables.kinds import Family, IptablesBackend

from test_agent_iptables_dataplane import _strip_dates, mode  # noqa: F401
from tests.fixtures import Topology, split_port

pytestmark = pytest.mark.kernel

VIP = "10.100.200.30"
SPLIT = split_port({"v1": 1}, {"v1": ["10.1.0.1"]}, ip=VIP)
FOREIGN = (f"*nat\n:KUBE-SERVICES - [0:0]\n"
           f"-A KUBE-SERVICES -d {VIP}/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.1.0.9:8080\n"
           f"-I OUTPUT 1 -j KUBE-SERVICES\nCOMMIT\n")


def _restore(netns: str, mode: str, text: str) -> None:
    subprocess.run(["ip", "netns", "exec", netns, f"iptables-{mode}-restore", "--noflush"],
                   input=text, text=True, check=True)


def _output_targets(netns: str, mode: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "exec", netns, f"iptables-{mode}", "-t", "nat", "-S", "OUTPUT"],
                         capture_output=True, text=True, check=True).stdout
    return [l.split(" -j ")[1] for l in out.splitlines() if l.startswith("-A OUTPUT") and " -j " in l]


def test_our_jump_wins_over_a_foreign_service_chain_and_is_moved_back_on_resync(netns, mode, caplog):
    with Topology(netns) as topo:
        topo.address(VIP)
        topo.listen("10.1.0.1", "10.1.0.9")
        _restore(netns, mode, FOREIGN)
        before = _strip_dates(save(netns, IptablesBackend(mode), Family.V4, table="nat"))
        assert topo.connect(VIP, 80, n=5) == [0] * 5 and topo.accepted()["10.1.0.9"] == 5   # foreign wins now

        dp = IptablesDataplane(netns=netns, mode=mode)
        dp.sync([SPLIT], full=True)
        assert _output_targets(netns, mode) == ["KS-SERVICES", "KUBE-SERVICES"]
        assert topo.connect(VIP, 80, n=20) == [0] * 20
        assert topo.accepted() == {"10.1.0.1": 20, "10.1.0.9": 0}                            # our split decides

        # kube-proxy restarts and inserts its jump at the top again
        _restore(netns, mode, "*nat\n-I OUTPUT 1 -m comment --comment restarted -j KUBE-SERVICES\nCOMMIT\n")
        assert _output_targets(netns, mode)[0] == "KUBE-SERVICES"
        assert dp.sync([SPLIT]).written == 0            # a partial sync trusts its memory: untouched
        result = dp.sync([SPLIT], full=True)
        assert (result.written, result.unchanged) == (0, 1)
        assert _output_targets(netns, mode) == ["KS-SERVICES", "KUBE-SERVICES", "KUBE-SERVICES"]
        assert "drift repaired" in caplog.text and "OUTPUT" in caplog.text
        assert topo.connect(VIP, 80, n=10) == [0] * 10 and topo.accepted()["10.1.0.1"] == 10

        # ours already first: the next full resync writes nothing at all
        settled = _strip_dates(save(netns, IptablesBackend(mode), Family.V4))
        caplog.clear()
        assert dp.sync([SPLIT], full=True).unchanged == 1
        assert "drift repaired" not in caplog.text
        assert _strip_dates(save(netns, IptablesBackend(mode), Family.V4)) == settled

        dp.cleanup()
        after = _strip_dates(save(netns, IptablesBackend(mode), Family.V4, table="nat"))
        restarted = "-A OUTPUT -m comment --comment restarted -j KUBE-SERVICES"
        assert after.replace(restarted + "\n", "", 1) == before                                # foreign rules intact
