"""The scenario table (tests/fixtures.py) in real namespaces, iptables dataplane: each scenario is
applied to a fresh namespace, then

- `kernsplit show` (the real command) prints exactly the golden file the unit tests render
  (tests/unit/golden/show/), text and JSON;
- a dry run finds nothing left to write;
- connections to every split port land on backends by weight (4 sigma), refused shares are reset
  at once, and `show` counts exactly the connections made.
"""
from __future__ import annotations

import errno
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from kernsplit.agent.dataplane.iptables import IptablesDataplane
from kernsplit.agent.lab.timescale import scaled
from kernsplit.agent.model.resolved import RefusedShare
from tests.fixtures import GOLDEN, SCENARIOS, Topology, assert_shares

pytestmark = pytest.mark.kernel

KERNSPLIT = str(Path(sys.executable).parent / "kernsplit")
CONNECTIONS = 800


def show(netns, *args) -> str:
    r = subprocess.run([KERNSPLIT, "show", "--netns", netns, *args], capture_output=True, text=True,
                       timeout=scaled(30))
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(params=sorted(SCENARIOS))
def applied(request, netns):
    ports = SCENARIOS[request.param].ports
    with Topology(netns) as topo:
        topo.address(*{sp.cluster_ip for sp in ports})
        topo.listen(*{we.endpoint.ip for sp in ports for we in sp.endpoints})
        dp = IptablesDataplane(netns=netns, mode="nft")
        dp.sync(ports)
        try:
            yield request.param, ports, topo, dp
        finally:
            dp.cleanup()


def test_show_prints_the_golden_file_and_nothing_is_left_to_write(applied, netns):
    case, ports, _, dp = applied
    assert show(netns) == (GOLDEN / f"show/{case}.golden").read_text()
    assert show(netns, "-o", "json") == (GOLDEN / f"show/{case}.json.golden").read_text()
    assert dp.preview(ports).splitlines() == ["# ipv4: iptables-nft-restore: up to date, nothing to write",
                                              "# ipv6: ip6tables-nft-restore: up to date, nothing to write"]


def _by_backend(sp, topo) -> Counter:
    """Connections to one split port, by the backend that took them ("refused": reset at once)."""
    results = topo.connect(sp.cluster_ip, sp.port, n=CONNECTIONS)
    assert set(results) <= {0, errno.ECONNREFUSED}, Counter(results)
    backend_of = {we.endpoint.ip: we.backend for we in sp.endpoints}
    got = Counter()
    for ip, n in topo.accepted().items():
        if n:
            got[backend_of[ip]] += n
    refusing = [c.backend for c in sp.choices if isinstance(c, RefusedShare)]
    assert len(refusing) <= 1, "a reset cannot tell two refused shares apart"
    if refusing:
        got[refusing[0]] += results.count(errno.ECONNREFUSED)
    return got


def test_connections_follow_the_weights_and_show_counts_them(applied, netns):
    case, ports, topo, _ = applied
    for sp in ports:
        got = _by_backend(sp, topo)
        assert_shares(got, {c.backend: c.share for c in sp.choices})
        [split] = [s for s in json.loads(show(netns, "-o", "json")) if s["cluster_ip"] == sp.cluster_ip]
        listed = {b["service"]: b["connections"] for b in split["backends"]}
        assert listed == {b: got.get(b, 0) for b in listed}, case
