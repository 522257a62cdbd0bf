"""The eBPF dataplane for real: own cgroup, own netns, listeners on lo, a client process moved
into the cgroup whose connect() calls the programs rewrite."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from fractions import Fraction

import pytest

from tests.fixtures import assert_golden, lab, labels, make, program_ids, split_port  # noqa: F401 (`lab`: a fixture)

pytestmark = [pytest.mark.kernel, pytest.mark.bpf]


def test_connect_to_cluster_ip_lands_on_backends_by_weight(lab):
    lab.listen("10.1.0.1", 8080, "v1")
    lab.listen("10.1.0.2", 8080, "v2")
    lab.listen("10.1.0.2", 9090, "v3")
    dp = make(lab)
    try:
        r = dp.sync([split_port({"my-app-v1": 700, "my-app-v2": 300, "my-app-v3": 0}, {"my-app-v1": [("10.1.0.1", 8080)], "my-app-v2": [("10.1.0.2", 8080)], "my-app-v3": [("10.1.0.2", 9090)]}, ip="10.100.200.30", port=80)])
        assert (r.written, r.removed, r.unchanged) == (1, 0, 0)
        seen = labels(lab.client("10.100.200.30", 80, 400))
        assert set(seen) <= {"v1", "v2"}, seen            # weight 0 never, no errors
        assert 200 <= seen["v1"] <= 360, seen             # 70% of 400 = 280, sd ~9: loose
        # Counters in the kernel say the same as the client.
        [obs] = dp.observe()
        got = {b.service: b.connections for b in obs.backends}
        assert got == {"my-app-v1": seen["v1"], "my-app-v2": seen["v2"], "my-app-v3": 0}
        assert (obs.namespace, obs.service, obs.split, obs.cluster_ip, obs.port, obs.refuse) == \
            ("default", "my-app", "my-app-split", "10.100.200.30", 80, False)
        assert [b.share for b in obs.backends] == [Fraction(7, 10), Fraction(3, 10), 0]
    finally:
        dp.close()


def test_getpeername_returns_cluster_ip_and_port(lab):
    lab.listen("10.1.0.1", 8080, "v1")
    dp = make(lab)
    dp.sync([split_port({"my-app-v1": 1}, {"my-app-v1": [("10.1.0.1", 8080)]}, ip="10.100.200.30", port=80)])
    dp.close()
    [r] = lab.client("10.100.200.30", 80, 1)
    assert r == {"label": "v1", "peer": ["10.100.200.30", 80]}


def test_refusing_split_fails_connect_with_econnrefused_at_once(lab):
    dp = make(lab)
    dp.sync([split_port({"my-app-v1": 1}, {"my-app-v1": []}, ip="10.100.200.31", port=80)])
    dp.close()
    results = lab.client("10.100.200.31", 80, 3)
    assert results == [{"error": 111}] * 3     # ECONNREFUSED, not EPERM nor a timeout
    [obs] = make(lab).observe()
    assert obs.refuse


def test_ipv6_split_through_connect6(lab):
    lab.listen("fd00:5::1", 8080, "v1")
    lab.listen("fd00:5::2", 8080, "v2")
    dp = make(lab)
    dp.sync([split_port({"my-app-v1": 1, "my-app-v2": 1}, {"my-app-v1": [("fd00:5::1", 8080)], "my-app-v2": [("fd00:5::2", 8080)]}, ip="fd00:100::30", port=80)])
    dp.close()
    results = lab.client("fd00:100::30", 80, 60)
    assert labels(results).keys() == {"v1", "v2"}
    assert all(r["peer"] == ["fd00:100::30", 80] for r in results)


def test_restart_adopts_pins_and_weight_change_is_a_map_update(lab):
    lab.listen("10.1.0.1", 8080, "v1")
    lab.listen("10.1.0.2", 8080, "v2")
    desired = [split_port({"my-app-v1": 900, "my-app-v2": 100}, {"my-app-v1": [("10.1.0.1", 8080)], "my-app-v2": [("10.1.0.2", 8080)]}, ip="10.100.200.30", port=80)]
    first = make(lab)
    first.sync(desired)
    ids = program_ids(first)
    assert first.compile_seconds is not None
    first.close()

    second = make(lab)                                   # a restarted agent
    r = second.sync(desired)
    assert (r.written, r.removed, r.unchanged) == (0, 0, 1)
    assert second.compile_seconds is None and second.links_created == 0
    # Rollout: v2 only. Map updates only: same programs, still attached.
    rollout = [split_port({"my-app-v1": 0, "my-app-v2": 1000}, {"my-app-v1": [("10.1.0.1", 8080)], "my-app-v2": [("10.1.0.2", 8080)]}, ip="10.100.200.30", port=80)]
    assert second.sync(rollout).written == 1
    assert program_ids(second) == ids
    assert labels(lab.client("10.100.200.30", 80, 50)) == {"v2": 50}
    # A full resync of an unchanged kernel writes nothing either.
    assert second.sync(rollout, full=True).written == 0
    # Removed splits are pruned: the service address is no longer rewritten.
    assert second.sync([]).removed == 1
    assert second.observe() == []
    second.close()


def test_cleanup_leaves_no_program_attachment_or_pin(lab):
    dp = make(lab)
    dp.sync([split_port({"my-app-v1": 1}, {"my-app-v1": [("10.1.0.1", 8080)]}, ip="10.100.200.30", port=80)])
    ids = set(program_ids(dp).values())
    assert dp.installed()
    attached = subprocess.run(["bpftool", "-j", "cgroup", "show", str(lab.cgroup)],
                              capture_output=True, text=True, check=True).stdout
    assert {p["id"] for p in json.loads(attached)} == ids
    dp.cleanup()
    assert not dp.installed() and not lab.bpffs.exists()
    attached = subprocess.run(["bpftool", "-j", "cgroup", "show", str(lab.cgroup)],
                              capture_output=True, text=True, check=True).stdout
    assert json.loads(attached.strip() or "[]") == []
    progs = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True,
                                      text=True, check=True).stdout)
    assert not ids & {p["id"] for p in progs}


def test_weight_flips_under_a_connect_loop_never_fail_a_connect(lab):
    lab.listen("10.1.0.1", 8080, "v1")
    lab.listen("10.1.0.2", 8080, "v2")
    only = lambda w1, w2: [split_port({"my-app-v1": w1, "my-app-v2": w2}, {"my-app-v1": [("10.1.0.1", 8080)], "my-app-v2": [("10.1.0.2", 8080)]}, ip="10.100.200.30", port=80)]
    dp = make(lab)
    dp.sync(only(1, 0))
    stop = threading.Event()
    flips = 0

    def flipper():
        nonlocal flips
        while not stop.is_set():
            dp.sync(only(0, 1) if flips % 2 == 0 else only(1, 0))
            flips += 1
    t = threading.Thread(target=flipper)
    t.start()
    try:
        results = lab.client("10.100.200.30", 80, 400)
    finally:
        stop.set()
        t.join()
        dp.close()
    assert flips > 10
    assert all("label" in r for r in results), labels(results)   # never empty, never refused


def test_full_resync_repairs_a_hand_deleted_entry(lab):
    from kernsplit.agent.dataplane.ebpf.maps import KernelMaps, encode_key
    from kernsplit.agent.dataplane.ebpf.plan import Addr
    lab.listen("10.1.0.1", 8080, "v1")
    desired = [split_port({"my-app-v1": 1}, {"my-app-v1": [("10.1.0.1", 8080)]}, ip="10.100.200.30", port=80)]
    dp = make(lab)
    dp.sync(desired)
    maps = KernelMaps(dp.pins)                 # someone else deletes our service entry
    maps.maps["ks_services"].delete(encode_key(Addr(4, "10.100.200.30", 80)))
    maps.close()
    assert dp.sync(desired).written == 0       # incremental: trusts what it wrote
    assert dp.sync(desired, full=True).written == 1
    dp.close()
    assert labels(lab.client("10.100.200.30", 80, 5)) == {"v1": 5}


def test_preview_of_an_installed_split_is_the_flip_and_writes_nothing(lab):
    seed = split_port({"my-app-v1": 900, "my-app-v2": 100}, {"my-app-v1": ["10.1.0.1"], "my-app-v2": ["10.1.0.2"]})
    rollout = split_port({"my-app-v1": 0, "my-app-v2": 1000}, {"my-app-v1": ["10.1.0.1"], "my-app-v2": ["10.1.0.2"]})
    dp = make(lab)
    try:
        dp.sync([seed])
        assert dp.preview([seed]).splitlines()[1:] == ["# up to date, nothing to write"]
        assert_golden("dry-run/ebpf-rollout.golden", dp.preview([rollout]))
        assert [s.backends for s in dp.observe()] == [s.backends for s in make(lab).observe()]
        assert dp.sync([seed]).unchanged == 1             # the preview changed nothing
    finally:
        dp.close()


AGENT_WITHOUT_BCC = """
import sys
from kernsplit.agent.dataplane.ebpf import EbpfDataplane
dp = EbpfDataplane(cgroup=sys.argv[1], bpffs=sys.argv[2])
dp.sync([])
dp.close()
print("bcc" in sys.modules)
"""


def test_the_agent_process_compiles_in_a_child_and_never_loads_bcc_itself(lab):
    # BCC's compiler stays in the memory of any process that imports it: the agent only opens pins.
    out = subprocess.run([sys.executable, "-c", AGENT_WITHOUT_BCC, str(lab.cgroup), str(lab.bpffs)],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    assert make(lab).installed()
