"""A sync told which split ports changed writes only those, on both dataplanes, and a full resync
still repairs drift anywhere.

The reconciler hands `Dataplane.sync(desired, full=..., changed=keys)`; a weight edit among many
installed split ports must cost one split port's kernel write: one KS-SVC chain in one restore on
iptables, one split's slots and service entry on eBPF. What was written is observed at the one
place each dataplane writes (the restore input, the map operations), and the kernel read back.
"""
from __future__ import annotations

import subprocess
from dataclasses import replace
from fractions import Fraction

import pytest

from kernsplit.agent.dataplane.ebpf import maps as ebpf_maps
from kernsplit.agent.dataplane.ebpf import plan as ebpf_plan
from kernsplit.agent.dataplane.iptables import IptablesDataplane, names
from kernsplit.agent.dataplane.iptables import dataplane as ipt_dataplane
from kernsplit.agent.iptables.exec import save
from kernsplit.agent.iptables.kinds import Family, IptablesBackend
from kernsplit.agent.model.resolved import BackendShare, Endpoint, RefusedShare, SplitPort, WeightedEndpoint
from test_agent_iptables_dataplane import Topology
from tests.fixtures import lab, make  # noqa: F401  (the eBPF lab fixture)

pytestmark = pytest.mark.kernel

V1, V2, TARGET = "10.1.0.1", "10.1.0.2", 8080


def port(i: int, v2: Fraction) -> SplitPort:
    """Root 10.100.200.<i>:80 split between v1 and v2 (one endpoint each)."""
    eps = [WeightedEndpoint(b, Endpoint(ip, TARGET), s) for b, ip, s in (("v1", V1, 1 - v2), ("v2", V2, v2)) if s]
    return SplitPort("default", f"app{i}", f"app{i}-split", "TrafficSplit", f"10.100.200.{i}", 80, None, "TCP",
                     tuple(eps), (BackendShare("v1", 1000 - int(v2 * 1000), 1 - v2, True),
                                  BackendShare("v2", int(v2 * 1000), v2, True)))


def refusing_route(i: int, served: Fraction) -> SplitPort:
    """A Gateway route whose second backendRef cannot serve: its share is refused."""
    return SplitPort("default", f"app{i}", f"app{i}-route", "HTTPRoute", f"10.100.200.{i}", 80, None, "TCP",
                     (WeightedEndpoint("v1", Endpoint(V1, TARGET), served),),
                     (BackendShare("v1", 1, served, True), BackendShare("gone", 1, 1 - served, False)),
                     (RefusedShare("gone", 1 - served),))


def world() -> dict:
    ports = [port(1, Fraction(1, 10)), port(2, Fraction(1, 10)), refusing_route(3, Fraction(1, 2)),
             port(4, Fraction(1, 10))]
    return {sp.key: sp for sp in ports}


def edit(desired: dict, sp: SplitPort) -> tuple[dict, frozenset]:
    return {**desired, sp.key: sp}, frozenset({sp.key})


# --- iptables --------------------------------------------------------------------------------

@pytest.fixture
def restores(monkeypatch):
    """The restore input of every write the dataplane makes (the real restore still runs)."""
    seen: list[str] = []
    real = ipt_dataplane.ipt.restore

    def recording(netns, backend, family, text, *args, **kw):
        seen.append(text)
        return real(netns, backend, family, text, *args, **kw)
    monkeypatch.setattr(ipt_dataplane.ipt, "restore", recording)
    return seen


def _chains_written(text: str) -> set[str]:
    """Chains a restore input declares, fills, flushes or deletes (rules may carry `[pkts:bytes]`)."""
    found = set()
    for line in text.splitlines():
        line = line.split("] ", 1)[1] if line.startswith("[") else line
        if line.startswith(":"):
            found.add(line[1:].split()[0])
        elif line.startswith(("-A ", "-F ", "-X ", "-N ", "-D ", "-I ")):
            found.add(line.split()[1])
    return found


def _lines_of(saved: str, chain: str) -> list[str]:
    return [l for l in saved.splitlines() if l.startswith(f"-A {chain} ")]


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_iptables_weight_edit_writes_only_that_split_ports_chain(netns, restores, mode):
    desired = world()
    dp = IptablesDataplane(netns=netns, mode=mode)
    dp.sync(desired)
    before = save(netns, IptablesBackend(mode), Family.V4, table="nat")
    for sp in (port(2, Fraction(1, 2)), refusing_route(3, Fraction(1, 4))):
        restores.clear()
        desired, changed = edit(desired, sp)
        result = dp.sync(desired, changed=changed)
        assert (result.written, result.removed, result.unchanged) == (1, 0, 3)
        [text] = restores
        assert _chains_written(text) == {names.svc_chain(sp)}, text
    after = save(netns, IptablesBackend(mode), Family.V4, table="nat")
    edited = {names.svc_chain(desired[k]) for k in (port(2, 0).key, refusing_route(3, 0).key)}
    untouched = [l for l in before.splitlines() if l.startswith("-A") and l.split()[1] not in edited]
    assert untouched == [l for l in after.splitlines() if l.startswith("-A") and l.split()[1] not in edited]
    assert any("0.5" in l for l in _lines_of(after, names.svc_chain(port(2, 0))))


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_iptables_new_endpoint_address_writes_its_chain_and_its_hairpin_shard_only(netns, restores, mode):
    desired = world()
    dp = IptablesDataplane(netns=netns, mode=mode)
    dp.sync(desired)

    def moved_to(ip: str):
        sp = port(2, Fraction(1, 2))
        return replace(sp, endpoints=(sp.endpoints[0], replace(sp.endpoints[1], endpoint=Endpoint(ip, TARGET))))
    # An address ending in a byte no endpoint had: a new shard, and the dispatcher's jump to it.
    restores.clear()
    desired, changed = edit(desired, moved_to("10.1.0.9"))
    assert dp.sync(desired, changed=changed).written == 1
    [text] = restores
    assert _chains_written(text) == {names.svc_chain(moved_to("10.1.0.9")), names.HAIRPIN,
                                     names.hairpin_shard(9)}, text
    # Another address of that shard instead: only the shard's chain, however many endpoints exist.
    restores.clear()
    desired, changed = edit(desired, moved_to("10.1.1.9"))
    assert dp.sync(desired, changed=changed).written == 1
    [text] = restores
    assert _chains_written(text) == {names.svc_chain(moved_to("10.1.1.9")), names.hairpin_shard(9)}, text
    # what the partial writes left is exactly what a full sync wants: it finds nothing to write
    restores.clear()
    assert dp.sync(desired, full=True).written == 0 and restores == []
    nat = save(netns, IptablesBackend(mode), Family.V4, table="nat")
    assert [l.split()[3] for l in _lines_of(nat, names.hairpin_shard(9))] == ["10.1.1.9/32"]


@pytest.mark.parametrize("mode", ["nft"])
def test_iptables_partial_syncs_add_and_remove_and_a_full_resync_repairs_drift(netns, mode):
    desired = world()
    dp = IptablesDataplane(netns=netns, mode=mode)
    dp.sync(desired)
    with Topology(netns) as topo:
        topo.address("10.100.200.1", "10.100.200.5")
        topo.listen(V1, V2)
        victim = names.svc_chain(port(1, 0))
        good = _lines_of(save(netns, IptablesBackend(mode), Family.V4, table="nat"), victim)
        rule = good[1].replace("-A ", "-D ", 1)     # a DNAT rule of split port 1, removed by hand
        subprocess.run(f"ip netns exec {netns} iptables-{mode} -t nat {rule}", shell=True, check=True)
        # another split port's change: added and removed split ports go through KS-SERVICES
        desired, changed = edit(desired, port(5, Fraction(1)))
        assert dp.sync(desired, changed=changed).written == 1
        assert topo.connect("10.100.200.5", 80, n=10) == [0] * 10 and topo.accepted()[V2] == 10
        gone = refusing_route(3, 0).key
        desired = {k: v for k, v in desired.items() if k != gone}
        assert dp.sync(desired, changed=frozenset({gone})).removed == 1
        assert names.svc_chain(refusing_route(3, 0)) not in save(netns, IptablesBackend(mode), Family.V4)
        # the drift is outside what changed: only the full resync, which reads the kernel, sees it
        result = dp.sync(desired, full=True, changed=frozenset())
        assert (result.written, result.unchanged) == (1, 3)
        assert _lines_of(save(netns, IptablesBackend(mode), Family.V4, table="nat"), victim) == good


# --- eBPF ------------------------------------------------------------------------------------

@pytest.fixture
def map_ops(monkeypatch):
    seen: list = []
    real = ebpf_maps.KernelMaps.apply

    def recording(self, ops):
        ops = list(ops)
        seen.extend(ops)
        return real(self, ops)
    monkeypatch.setattr(ebpf_maps.KernelMaps, "apply", recording)
    return seen


def _installed(dp) -> dict:
    m = ebpf_maps.KernelMaps(dp.pins)
    try:
        return m.read_all()
    finally:
        m.close()


def test_ebpf_weight_edit_writes_only_that_split_ports_entries(lab, map_ops):  # noqa: F811
    lab.listen(V1, TARGET, "v1")
    lab.listen(V2, TARGET, "v2")
    desired = world()
    dp = make(lab)
    try:
        dp.sync(desired)
        before = _installed(dp)
        edited = port(2, Fraction(1))
        addr = ebpf_plan.address(edited)
        map_ops.clear()
        desired, changed = edit(desired, edited)
        result = dp.sync(desired, changed=changed)
        assert (result.written, result.removed, result.unchanged) == (1, 0, 3)
        after = _installed(dp)
        assert {k: v for k, v in after.items() if k != addr} == {k: v for k, v in before.items() if k != addr}
        split_id = before[addr].split_id
        assert after[addr].split_id == split_id and after[addr].table != before[addr].table
        tables = {split_id * 2, split_id * 2 + 1}
        for op in map_ops:
            assert getattr(op, "key", addr) == addr and getattr(op, "table", split_id * 2) in tables, op
            assert getattr(op, "split_id", split_id) == split_id, op
        assert {r["label"] for r in lab.client(edited.cluster_ip, 80, 20)} == {"v2"}
    finally:
        dp.close()


def test_ebpf_a_full_resync_repairs_drift_a_partial_sync_does_not_look_at(lab):  # noqa: F811
    lab.listen(V1, TARGET, "v1")
    lab.listen(V2, TARGET, "v2")
    desired = world()
    dp = make(lab)
    try:
        dp.sync(desired)
        victim = ebpf_plan.address(port(1, 0))
        other = ebpf_maps.KernelMaps(dp.pins)          # someone else deletes split port 1's entry
        try:
            other.apply([ebpf_plan.DeleteService(victim)])
        finally:
            other.close()
        desired, changed = edit(desired, port(4, Fraction(1)))
        assert dp.sync(desired, changed=changed).written == 1
        assert victim not in _installed(dp)
        result = dp.sync(desired, full=True, changed=frozenset())
        assert result.written == 1 and victim in _installed(dp)
        assert {r["label"] for r in lab.client("10.100.200.4", 80, 10)} == {"v2"}
        assert {r.get("label") for r in lab.client("10.100.200.1", 80, 20)} <= {"v1", "v2"}
    finally:
        dp.close()
