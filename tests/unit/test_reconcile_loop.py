"""The reconcile loop: a dataplane that keeps failing is retried ever less often, and says so (one
success resets it); a partial first view is stored but not resolved."""
from __future__ import annotations

import logging

from kernsplit.agent.dataplane.base import SyncResult
from kernsplit.agent.reconcile import Reconciler, Timing
from kernsplit.agent.source.files import FileSource


class _Flaky:
    """Fails `failures` syncs (the target cgroup is gone, say), then succeeds."""
    name = "ebpf"

    def __init__(self, failures: int) -> None:
        self.failures = failures

    def sync(self, desired, *, full=False, changed=None):
        if self.failures:
            self.failures -= 1
            raise OSError("cgroup /sys/fs/cgroup/lab/pods: No such file or directory")
        return SyncResult(0, 0, 0)


def _failed_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]


def test_retries_back_off_up_to_the_cap_and_a_success_starts_over(tmp_path, caplog):
    loop = Reconciler(_Flaky(5), FileSource([tmp_path]), Timing(retry_interval=1, retry_cap=8))
    with caplog.at_level(logging.ERROR, logger="kernsplit.agent"):
        for _ in range(6):
            loop.sync(full=True, reason="resync")
    lines = _failed_lines(caplog)
    assert lines[0] == "sync (resync) failed: cgroup /sys/fs/cgroup/lab/pods: No such file or directory"
    assert [line.rsplit("next try in ", 1)[1] for line in lines[1:]] == ["2s)", "4s)", "8s)", "8s)"]
    assert "failed 5 times in a row" in lines[-1]

    caplog.clear()
    loop.dataplane = _Flaky(2)
    with caplog.at_level(logging.ERROR, logger="kernsplit.agent"):
        loop.sync(full=True, reason="resync")
        loop.sync(full=True, reason="resync")
    assert _failed_lines(caplog)[1].endswith("(failed 2 times in a row; next try in 2s)")


def test_the_retry_never_waits_longer_than_a_resync(tmp_path, caplog):
    loop = Reconciler(_Flaky(4), FileSource([tmp_path]), Timing(resync_interval=3, retry_interval=1, retry_cap=8))
    with caplog.at_level(logging.ERROR, logger="kernsplit.agent"):
        for _ in range(4):
            loop.sync(full=True, reason="resync")
    assert _failed_lines(caplog)[-1].endswith("next try in 3s)")


def test_objects_before_the_first_complete_view_are_stored_but_neither_resolved_nor_reported(tmp_path, caplog):
    """Each list is parsed as it arrives (its packed objects freed at once), but a partial view
    (a split whose backends are not listed yet) must not be resolved or reported as broken."""
    from kernsplit.agent.source.events import Upsert
    from kernsplit.agent.source.packed import pack
    split = {"apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
             "metadata": {"name": "s", "namespace": "default"},
             "spec": {"service": "web", "backends": [{"service": "web-v1", "weight": 1}]}}
    services = [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": n, "namespace": "default"},
                 "spec": {"clusterIP": ip, "ports": [{"port": 80, "targetPort": 8080}]}}
                for n, ip in (("web", "10.96.0.10"), ("web-v1", "10.96.0.11"))]
    loop = Reconciler(_Flaky(0), FileSource([tmp_path]))
    with caplog.at_level(logging.INFO, logger="kernsplit.agent"):
        loop.absorb([Upsert("kubernetes:splits", pack(split))])
        assert loop.store.splits and not loop.desired.ports and not caplog.records
        delta = loop.apply([Upsert("kubernetes:services", pack(s)) for s in services])
    assert [k[:2] for k in delta.changed] == [("10.96.0.10", 80)]
    assert any("web-v1" in r.getMessage() and "no ready" in r.getMessage() for r in caplog.records)
