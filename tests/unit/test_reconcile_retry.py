"""A dataplane that keeps failing is retried ever less often, and says so; one success resets it."""
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
