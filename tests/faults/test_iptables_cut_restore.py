"""A restore cut between tables never leaves a split port neither served nor refused (iptables).

`iptables-restore` commits each table on its own, so a kill (or a failed write) between two
`COMMIT`s leaves the kernel half way through a change. For changes that turn split ports from
served to refused and back, this applies every prefix of the agent's restore input that ends at a
COMMIT (none, the first table, both) over the old state, in a fresh namespace each time, and opens
real connections to every split port: each must be served (lands on an endpoint) or refused
(ECONNREFUSED at once), never neither (the SYN left unanswered: a hanging client).

The ClusterIPs are not local addresses: they are routed out of a veth whose far end drops
everything, so a connection that nothing DNATs or rejects hangs, as it would on a node.
"""
from __future__ import annotations

import errno
import socket
import subprocess

import pytest

from kernsplit.agent.dataplane.iptables.plan import plan
from kernsplit.agent.iptables.exec import restore, save
from kernsplit.agent.iptables.kinds import Family, IptablesBackend
from kernsplit.agent.iptables.saved import parse_save
from kernsplit.agent.lab.timescale import scaled
from kernsplit.agent.model.resolved import SplitPort
from kernsplit.agent.netns import entered

from conftest import throwaway_netns
from tests.fixtures import agent_diff as diff
from tests.fixtures import agent_owned as owned
from tests.fixtures import agent_render as render_changes, agent_render_full as render_full, split_port

pytestmark = pytest.mark.kernel

ENDPOINTS = {"10.100.200.41": "10.1.0.1", "10.100.200.42": "10.1.0.2", "10.100.200.43": "10.1.0.3"}
PORT, TARGET = 80, 8080
SERVED, REFUSED, NEITHER = "served", "refused", "neither"


def _port(ip: str, **kw) -> SplitPort:
    return split_port(ip=ip, port=PORT, service=f"svc-{ip.rsplit('.', 1)[1]}", ep_port=TARGET, **kw)


def served(ip: str) -> SplitPort:
    return _port(ip, weights={"v1": 1}, endpoints={"v1": [ENDPOINTS[ip]]}, split="s")


def refused(ip: str) -> SplitPort:
    """Nothing can serve it: the backend has no endpoints (the model's whole-port refusal)."""
    return _port(ip, weights={"v1": 1}, endpoints={}, split="s")


def half_refused(ip: str) -> SplitPort:
    """A Gateway route whose second backendRef cannot serve: half of the new connections refused."""
    return _port(ip, weights={"v1": 1, "gone": 1}, endpoints={"v1": [ENDPOINTS[ip]]}, split="r", kind="HTTPRoute")


A, B, C = ENDPOINTS
STATES = {
    "all served": [served(A), served(B), served(C)],
    "A refused": [refused(A), served(B), served(C)],
    "B refused": [served(A), refused(B), served(C)],
    "C half refused": [served(A), served(B), half_refused(C)],
}
# served -> refused and back, with and without another port refusing throughout
CHANGES = [("all served", "A refused"), ("A refused", "all served"), ("A refused", "B refused"),
           ("B refused", "A refused"), ("all served", "C half refused"), ("C half refused", "all served")]
TRIES = 6     # connections per split port and state (a half-refused port answers either way)


def _topology(netns: str) -> list[socket.socket]:
    ns = ["ip", "-n", netns]
    for cmd in (["link", "add", "ksv0", "type", "veth", "peer", "name", "ksv1"], ["link", "set", "ksv0", "up"],
                ["link", "set", "ksv1", "up"], ["addr", "add", "10.200.0.1/24", "dev", "ksv0"],
                ["neigh", "add", "10.200.0.2", "lladdr", "02:00:00:00:00:02", "dev", "ksv0", "nud", "permanent"],
                ["route", "add", "10.100.200.0/24", "via", "10.200.0.2", "dev", "ksv0"]):
        subprocess.run([*ns, *cmd], check=True)
    listeners = []
    with entered(netns):
        for ip in ENDPOINTS.values():
            subprocess.run([*ns, "addr", "add", f"{ip}/32", "dev", "lo"], check=True)
            s = socket.socket()
            s.bind((ip, TARGET))
            s.listen(64)
            listeners.append(s)
    return listeners


def _outcome(netns: str, ip: str) -> str:
    with entered(netns):
        s = socket.socket()
        s.settimeout(scaled(1.0))
        try:
            s.connect((ip, PORT))
            return SERVED
        except ConnectionRefusedError:
            return REFUSED
        except OSError as exc:
            return f"{NEITHER} ({errno.errorcode.get(exc.errno, exc)})"
        finally:
            s.close()


def _prefixes(text: str) -> list[str]:
    """Every prefix of a restore input that ends at a COMMIT, from none to all of it."""
    cuts = [i + len("COMMIT\n") for i in range(len(text)) if text.startswith("COMMIT\n", i)]
    return ["", *(text[:c] for c in cuts)]


@pytest.mark.parametrize("mode", ["nft", "legacy"])
@pytest.mark.parametrize("before, after", CHANGES, ids=[f"{b} -> {a}" for b, a in CHANGES])
def test_every_cut_leaves_each_split_port_served_or_refused(root_required, mode, before, after):
    backend = IptablesBackend(mode)
    change = None
    for n, prefix in enumerate(_prefixes_of(backend, before, after)):
        with throwaway_netns() as netns:
            listeners = _topology(netns)
            try:
                restore(netns, backend, Family.V4, render_full(plan(STATES[before])))
                if prefix:
                    restore(netns, backend, Family.V4, prefix)
                got = {ip: {_outcome(netns, ip) for _ in range(TRIES)} for ip in ENDPOINTS}
            finally:
                for s in listeners:
                    s.close()
        change = prefix
        assert all(o <= {SERVED, REFUSED} for o in got.values()), (
            f"{before} -> {after}, cut after {prefix.count('COMMIT')} of the tables:\n{prefix}\n{got}")
        if n == 0:
            assert _as_expected(got, before)
    assert _as_expected(got, after), (change, got)      # the whole input reaches the new state


def _as_expected(got: dict[str, set[str]], state: str) -> bool:
    """Each port answers as the state says: served, refused, or (a refused share) either."""
    for sp in STATES[state]:
        allowed = ({SERVED} if sp.endpoints else set()) | ({REFUSED} if not sp.endpoints or sp.refused else set())
        if not got[sp.cluster_ip] <= allowed:
            return False
    return True


def _prefixes_of(backend: IptablesBackend, before: str, after: str) -> list[str]:
    """The agent's restore input for before -> after, computed against a real kernel holding
    `before` (the same pure path as the dataplane's sync), cut at every COMMIT."""
    with throwaway_netns() as netns:
        restore(netns, backend, Family.V4, render_full(plan(STATES[before])))
        have = owned(Family.V4, parse_save(save(netns, backend, Family.V4, counters=True)))
    text = render_changes(diff(plan(STATES[after]), have))
    assert text.count("COMMIT") >= 1
    return _prefixes(text)
