"""One split that does not fit the maps does not block the others: it is skipped (its last good
state stays in the kernel), the error is logged naming it, and every other split is served."""
from __future__ import annotations

import logging

import pytest

from tests.fixtures import lab, labels, make  # noqa: F401 - `lab` is a fixture
from tests.fixtures import split_port

pytestmark = [pytest.mark.kernel, pytest.mark.bpf]


def oversized(ip, port, target):
    """18 backends: more than the eBPF maps hold (16 backendRefs + the root)."""
    names = [f"my-app-b{i}" for i in range(18)]
    return split_port(dict.fromkeys(names, 1), dict.fromkeys(names, [target]), ip=ip, port=port, split="too-big")


def test_oversized_split_is_skipped_and_the_others_work(lab, caplog):
    lab.listen("10.1.0.1", 8080, "v1")
    lab.listen("10.1.0.2", 8080, "v2")
    normal = split_port({"my-app-v1": 1}, {"my-app-v1": [("10.1.0.1", 8080)]}, ip="10.100.200.30", port=80)
    good_big = split_port({"my-app-v2": 1}, {"my-app-v2": [("10.1.0.2", 8080)]}, ip="10.100.200.31", port=80, split="too-big")
    dp = make(lab)
    try:
        dp.sync([good_big])                              # last good state of .31
        with caplog.at_level(logging.ERROR, logger="kernsplit"):
            r = dp.sync([oversized("10.100.200.31", 80, ("10.1.0.1", 8080)), normal])
        assert (r.written, r.removed) == (1, 0)
        [msg] = dp.rejected
        assert msg.startswith("TrafficSplit default/too-big 10.100.200.31:80: backends: 18 backends")
        assert "at most 17" in msg
        assert msg in caplog.text
        assert labels(lab.client("10.100.200.30", 80, 5)) == {"v1": 5}     # the normal split
        assert labels(lab.client("10.100.200.31", 80, 5)) == {"v2": 5}     # last good state kept
        # A full resync neither removes the kept state nor fails.
        assert dp.sync([oversized("10.100.200.31", 80, ("10.1.0.1", 8080)), normal], full=True).removed == 0
        assert labels(lab.client("10.100.200.31", 80, 3)) == {"v2": 3}
        # Fixed config: programmed again, rejected cleared.
        dp.sync([good_big, normal])
        assert dp.rejected == []
    finally:
        dp.close()


def test_oversized_new_split_installs_nothing(lab):
    lab.listen("10.1.0.1", 8080, "v1")
    dp = make(lab)
    try:
        dp.sync([oversized("10.100.200.32", 80, ("10.1.0.1", 8080)),
                 split_port({"my-app-v1": 1}, {"my-app-v1": [("10.1.0.1", 8080)]}, ip="10.100.200.30", port=80)])
        assert [(o.cluster_ip, o.port) for o in dp.observe()] == [("10.100.200.30", 80)]
        assert labels(lab.client("10.100.200.32", 80, 2)) == {"errno 101": 2}   # not rewritten
    finally:
        dp.close()
