"""IptablesDataplane against real iptables in a throwaway netns (both backends).

Topology, all inside one fresh namespace: endpoint addresses and ClusterIPs on `lo`, one listening
socket per endpoint. A connection from the namespace to a ClusterIP is DNATed in nat OUTPUT and
lands on one listener; counting what each listener accepted tells where connections went.
The topology helper lives in tests/fixtures.py.
"""
from __future__ import annotations

import errno
import subprocess
import time
from fractions import Fraction

import pytest

from kernsplit.agent.dataplane.iptables import IptablesDataplane
from kernsplit.agent.dataplane.iptables import names
from kernsplit.agent.iptables.exec import save
from kernsplit.agent.iptables.kinds import Family, IptablesBackend
from kernsplit.agent.lab.timescale import scaled

from tests.fixtures import Topology, assert_shares, split_port

pytestmark = pytest.mark.kernel



SEED = split_port({"my-app-v1": 900, "my-app-v2": 100, "my-app-v3": 0}, {"my-app-v1": ["10.1.0.1"], "my-app-v2": ["10.1.0.2"], "my-app-v3": ["10.1.0.3"]}, ip="10.100.200.30")
REFUSE = split_port({"gone": 1}, {}, ip="10.100.200.33", service="empty", split="empty-split")
V6 = split_port({"v1": 1, "v2": 1}, {"v1": ["fd00:1::1"], "v2": ["fd00:1::2"]}, ip="fd00:200::30", service="six")
CLUSTER_IPS = ("10.100.200.30", "10.100.200.33", "fd00:200::30")
ENDPOINTS = ("10.1.0.1", "10.1.0.2", "10.1.0.3", "fd00:1::1", "fd00:1::2")


@pytest.fixture(params=["nft", "legacy"])
def mode(request):
    return request.param


def _save(netns, mode):
    return {f: _strip_dates(save(netns, IptablesBackend(mode), f, counters=True)) for f in (Family.V4, Family.V6)}


def test_programs_splits_weight_zero_refuse_and_ipv6(netns, mode):
    dp = IptablesDataplane(netns=netns, mode=mode)
    with Topology(netns) as topo:
        topo.address("10.100.200.30", "fd00:200::30")
        topo.listen("10.100.200.33", port=80)      # would accept, were it not for our REJECT
        topo.listen(*ENDPOINTS)
        result = dp.sync([SEED, REFUSE, V6])
        assert (result.written, result.removed, result.unchanged) == (3, 0, 0)

        assert topo.connect("10.100.200.30", 80, n=500) == [0] * 500
        got = topo.accepted()
        assert got["10.1.0.3"] == 0                                  # weight 0: exactly nothing
        assert_shares(got, {"10.1.0.1": 900, "10.1.0.2": 100})

        start = time.monotonic()
        assert topo.connect("10.100.200.33", 80, n=3) == [errno.ECONNREFUSED] * 3
        assert time.monotonic() - start < scaled(2.5), "refusal must not wait for a timeout"
        assert topo.accepted()["10.100.200.33"] == 0

        assert topo.connect("fd00:200::30", 80, n=200) == [0] * 200
        six = topo.accepted()
        assert_shares({ip: six[ip] for ip in ("fd00:1::1", "fd00:1::2")}, {"fd00:1::1": 1, "fd00:1::2": 1})


def test_a_refused_share_is_refused_by_weight_and_ipv6_refuses_too(netns, mode):
    """A route's backendRef that cannot serve keeps weight 1 beside a served weight 3: a quarter
    of new connections is reset, the rest served. The listeners on the ClusterIPs would accept
    what our rules neither DNAT nor reject."""
    route = split_port({"v1": 3, "gone": 1}, {"v1": ["10.1.0.1"]}, ip="10.100.200.34", service="routed", split="r",
                       kind="HTTPRoute")
    refuse6 = split_port({"gone": 1}, {}, ip="fd00:200::33", service="empty6")
    dp = IptablesDataplane(netns=netns, mode=mode)
    with Topology(netns) as topo:
        topo.listen("10.100.200.34", "fd00:200::33", port=80)
        topo.listen("10.1.0.1")
        dp.sync([route, refuse6])
        results = topo.connect("10.100.200.34", 80, n=400)
        assert set(results) <= {0, errno.ECONNREFUSED}
        refused = results.count(errno.ECONNREFUSED)
        assert_shares({"v1": 400 - refused, "gone": refused}, {"v1": 3, "gone": 1})
        assert topo.connect("fd00:200::33", 80, n=5) == [errno.ECONNREFUSED] * 5
        got = topo.accepted()
        assert got["10.1.0.1"] == 400 - refused and got["10.100.200.34"] == got["fd00:200::33"] == 0
    shown = {s.service: s for s in dp.observe()}
    assert {b.service: (b.connections, b.refused) for b in shown["routed"].backends} == {
        "v1": (400 - refused, False), "gone": (refused, True)}
    assert shown["empty6"].refuse
    assert dp.sync([route, refuse6], full=True).unchanged == 2      # read back exactly as planned


def test_second_sync_writes_nothing_and_keeps_counters(netns, mode):
    with Topology(netns) as topo:
        topo.address(*CLUSTER_IPS)
        topo.listen(*ENDPOINTS)
        IptablesDataplane(netns=netns, mode=mode).sync([SEED, REFUSE, V6])
        topo.connect("10.100.200.30", 80, n=20)
        topo.accepted()
        time.sleep(scaled(0.3))  # let the closed connections' last packets pass (built-in chain counters)
        before = _save(netns, mode)
        # A new instance (a restarted agent) reads the kernel and finds it already right.
        again = IptablesDataplane(netns=netns, mode=mode).sync([SEED, REFUSE, V6], full=True)
        assert (again.written, again.removed, again.unchanged) == (0, 0, 3)
        assert _save(netns, mode) == before


def test_drift_is_repaired_by_full_sync(netns, mode):
    dp = IptablesDataplane(netns=netns, mode=mode)
    dp.sync([SEED])
    want = save(netns, IptablesBackend(mode), Family.V4)
    tool = f"iptables-{mode}"
    subprocess.run(["nsenter", f"--net=/var/run/netns/{netns}", tool, "-t", "nat", "-D", "OUTPUT",
                    "-m", "comment", "--comment", "kernsplit: split service connections", "-j", "KS-SERVICES"],
                   check=True)
    assert save(netns, IptablesBackend(mode), Family.V4) != want
    result = dp.sync([SEED], full=True)
    assert result.written == 0 and result.unchanged == 1      # the split itself was intact
    assert _strip_dates(save(netns, IptablesBackend(mode), Family.V4)) == _strip_dates(want)


def _strip_dates(text: str) -> str:
    return "\n".join(l for l in text.splitlines() if not l.startswith("#"))


def test_weight_change_and_removal_converge(netns, mode):
    dp = IptablesDataplane(netns=netns, mode=mode)
    with Topology(netns) as topo:
        topo.address(*CLUSTER_IPS)
        topo.listen(*ENDPOINTS)
        dp.sync([SEED, REFUSE])
        rolled = split_port({"my-app-v1": 0, "my-app-v2": 1000}, {"my-app-v1": ["10.1.0.1"], "my-app-v2": ["10.1.0.2"]}, ip="10.100.200.30")
        result = dp.sync([rolled])
        assert (result.written, result.removed, result.unchanged) == (1, 1, 0)
        topo.connect("10.100.200.30", 80, n=30)
        assert topo.accepted()["10.1.0.2"] == 30
        nat = save(netns, IptablesBackend(mode), Family.V4, table="nat")
        assert names.svc_chain(REFUSE) not in nat and names.REFUSE not in nat
        assert "KS-REJECT" not in save(netns, IptablesBackend(mode), Family.V4, table="filter")   # nothing refuses
        dp.sync([])
        assert "KS-" not in save(netns, IptablesBackend(mode), Family.V4)


def test_cleanup_restores_exact_prior_state_with_foreign_chain(netns, mode):
    b = IptablesBackend(mode)
    foreign = ("*nat\n:FOREIGN - [0:0]\n-A FOREIGN -p tcp -j RETURN\n-A OUTPUT -j FOREIGN\nCOMMIT\n"
               "*filter\n:FOREIGN-F - [0:0]\n-A INPUT -j FOREIGN-F\nCOMMIT\n")
    subprocess.run(["nsenter", f"--net=/var/run/netns/{netns}", f"iptables-{mode}-restore", "--noflush"],
                   input=foreign, text=True, check=True)
    before = _strip_dates(save(netns, b, Family.V4, counters=True))
    dp = IptablesDataplane(netns=netns, mode=mode)
    dp.sync([SEED, REFUSE])
    assert dp.installed()
    dp.cleanup()
    assert not dp.installed()
    assert _strip_dates(save(netns, b, Family.V4, counters=True)) == before


def test_auto_mode_adopts_the_backend_holding_our_chains(netns):
    IptablesDataplane(netns=netns, mode="legacy").sync([SEED])
    auto = IptablesDataplane(netns=netns)
    assert auto.backend is IptablesBackend.LEGACY
    assert auto.sync([SEED]).unchanged == 1
    auto.cleanup()
    assert not auto.installed()


def test_observe_counts_connections_per_backend(netns, mode):
    dp = IptablesDataplane(netns=netns, mode=mode)
    with Topology(netns) as topo:
        topo.address(*CLUSTER_IPS)
        topo.listen(*ENDPOINTS)
        dp.sync([SEED, REFUSE])
        topo.connect("10.100.200.30", 80, n=60)
        got = topo.accepted()
    splits = {s.service: s for s in IptablesDataplane(netns=netns, mode=mode).observe()}
    seed = splits["my-app"]
    counts = {b.service: b.connections for b in seed.backends}
    assert counts == {"my-app-v1": got["10.1.0.1"], "my-app-v2": got["10.1.0.2"], "my-app-v3": 0}
    assert [(b.weight, b.share) for b in seed.backends] == [(900, Fraction(9, 10)), (100, Fraction(1, 10)), (0, 0)]
    assert splits["empty"].refuse


def _two(ip: str, v1: int, v2: int) -> SplitPort:
    return split_port({"my-app-v1": v1, "my-app-v2": v2}, {"my-app-v1": ["10.1.0.1"], "my-app-v2": ["10.1.0.2"]}, ip=ip, service=f"svc-{ip.rsplit('.', 1)[1]}")


@pytest.mark.parametrize("how", ["partial", "restarted"])
def test_weight_change_keeps_both_backends_connection_counts(netns, mode, how):
    """90/10 -> 50/50 rewrites the split's chain; what show reports must still include the
    connections made before the change, for both backends (partial sync reads just that chain;
    a restarted agent's full sync reads the whole table)."""
    ip = "10.100.200.30"
    with Topology(netns) as topo:
        topo.address(ip)
        topo.listen("10.1.0.1", "10.1.0.2")
        dp = IptablesDataplane(netns=netns, mode=mode)
        dp.sync([_two(ip, 900, 100)])
        assert topo.connect(ip, 80, n=200) == [0] * 200
        before = topo.accepted()
        assert before["10.1.0.2"] > 0, before

        if how == "restarted":
            dp = IptablesDataplane(netns=netns, mode=mode)
        assert dp.sync([_two(ip, 500, 500)], full=how == "restarted").written == 1
        assert "--probability 0.50000000000" in save(netns, IptablesBackend(mode), Family.V4, table="nat")
        assert topo.connect(ip, 80, n=100) == [0] * 100
        after = topo.accepted()

    [split] = IptablesDataplane(netns=netns, mode=mode).observe()
    counts = {b.service: b.connections for b in split.backends}
    assert counts == {"my-app-v1": before["10.1.0.1"] + after["10.1.0.1"],
                      "my-app-v2": before["10.1.0.2"] + after["10.1.0.2"]}
    assert [(b.weight, b.share) for b in split.backends] == [(500, Fraction(1, 2)), (500, Fraction(1, 2))]


def test_many_chains_rewritten_at_once_keep_their_counts(netns, mode):
    """More rewritten chains than the per-chain read limit: counters come from one iptables-save -c."""
    from kernsplit.agent.dataplane.iptables.dataplane import PER_CHAIN_READS
    ips = [f"10.100.201.{i}" for i in range(1, PER_CHAIN_READS[IptablesBackend(mode)] + 3)]
    with Topology(netns) as topo:
        topo.address(*ips)
        topo.listen("10.1.0.1", "10.1.0.2")
        dp = IptablesDataplane(netns=netns, mode=mode)
        dp.sync([_two(ip, 900, 100) for ip in ips])
        for n, ip in enumerate(ips):
            assert topo.connect(ip, 80, n=n % 5 + 1) == [0] * (n % 5 + 1)
        result = dp.sync([_two(ip, 1, 1) for ip in ips])
        assert (result.written, result.unchanged) == (len(ips), 0)
    totals = {s.cluster_ip: sum(b.connections for b in s.backends)
              for s in IptablesDataplane(netns=netns, mode=mode).observe()}
    assert totals == {ip: n % 5 + 1 for n, ip in enumerate(ips)}
