"""The agent's /metrics, /healthz and /readyz as a Prometheus scraper and a kubelet probe see them."""
from __future__ import annotations

import time
import urllib.error
import urllib.request
from fractions import Fraction

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kernsplit.agent.dataplane.base import ObservedBackend, ObservedSplit
from kernsplit.agent.lab.timescale import scaled
from kernsplit.agent.metrics import KernelCollector, Metrics, serve


def _get(server, path: str) -> tuple[int, str]:
    host, port = server.server_address[:2]
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=scaled(5)) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def served():
    metrics = Metrics(resync_interval=30)
    server = serve(metrics, "127.0.0.1:0")
    yield metrics, server
    server.shutdown()


def _samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_ready_only_after_first_full_sync(served):
    metrics, server = served
    assert _get(server, "/readyz")[0] == 503
    metrics.record_sync("iptables", 0.01, full=False, ok=True)
    assert _get(server, "/readyz")[0] == 503
    metrics.record_sync("iptables", 0.02, full=True, ok=True)
    assert _get(server, "/readyz") == (200, "ok\n")
    assert _get(server, "/healthz")[0] == 200


def test_unhealthy_when_the_loop_stalls():
    metrics = Metrics(resync_interval=0.05)
    metrics.record_sync("ebpf", 0.001, full=True, ok=True)
    ok, _ = metrics.healthy()
    assert ok
    time.sleep(0.15)
    ok, why = metrics.healthy()
    assert not ok and "sync loop has not run" in why
    metrics.heartbeat()
    ok, why = metrics.healthy()
    assert not ok and "no successful sync" in why      # alive, but failing to sync


def test_sync_metrics_named_like_kube_proxy(served):
    metrics, server = served
    metrics.record_sync("ebpf", 0.0004, full=False, ok=True)
    metrics.record_sync("ebpf", 0.3, full=True, ok=False)
    status, text = _get(server, "/metrics")
    assert status == 200
    got = _samples(text)
    assert got[("kernsplit_sync_proxy_rules_duration_seconds_count",
                (("dataplane", "ebpf"), ("kind", "partial")))] == 1
    assert got[("kernsplit_sync_proxy_rules_duration_seconds_bucket",
                (("dataplane", "ebpf"), ("kind", "partial"), ("le", "0.0005")))] == 1
    assert got[("kernsplit_sync_proxy_rules_failures_total", (("dataplane", "ebpf"),))] == 1
    assert got[("kernsplit_sync_proxy_rules_last_timestamp_seconds", ())] == pytest.approx(time.time(), abs=60)


def test_backend_connections_come_from_the_kernel_reader(served):
    metrics, server = served
    reads = []
    split = ObservedSplit("iptables", "default", "my-app", "my-app-split", "10.100.200.30", 80, False,
                          (ObservedBackend("my-app-v1", 900, Fraction(9, 10), 412),
                           ObservedBackend("my-app-v2", 100, Fraction(1, 10), 51)))

    def observe():
        reads.append(1)
        return [split]
    metrics.add_kernel(KernelCollector(observe, capacity=lambda: {"ks_slots": (1024, 4096)}, max_age=60))
    got = _samples(_get(server, "/metrics")[1])
    _samples(_get(server, "/metrics")[1])
    assert len(reads) == 1                         # a burst of scrapes reads the kernel once
    labels = (("backend", "my-app-v2"), ("dataplane", "iptables"), ("namespace", "default"),
              ("port", "80"), ("service", "my-app"), ("split", "my-app-split"))
    assert got[("kernsplit_split_backend_connections_total", labels)] == 51
    assert got[("kernsplit_split_backend_desired_weight", labels)] == 100
    assert got[("kernsplit_split_backend_desired_share", labels)] == pytest.approx(0.1)
    assert got[("kernsplit_bpf_map_fill_ratio", (("map", "ks_slots"),))] == 0.25


class _RepairingDataplane:
    """A dataplane whose full syncs each find one broken link and repair it."""
    name = "ebpf"

    def sync(self, desired, *, full=False, changed=None):
        from kernsplit.agent.dataplane.base import SyncResult
        return SyncResult(0, 0, 0, repaired=("ebpf_link",) if full else ())


def test_the_loop_counts_repairs_and_syncs(tmp_path):
    from kernsplit.agent.reconcile import Reconciler
    from kernsplit.agent.source.files import FileSource
    metrics = Metrics(resync_interval=30)
    loop = Reconciler(_RepairingDataplane(), FileSource([tmp_path]), metrics=metrics)
    loop.sync(full=True, reason="resync")
    loop.sync(full=False, reason="config changed")
    loop.sync(full=True, reason="resync")
    got = _samples(generate_latest(metrics.registry).decode())
    assert got[("kernsplit_kernel_repairs_total", (("what", "ebpf_link"),))] == 2
    assert got[("kernsplit_sync_proxy_rules_duration_seconds_count", (("dataplane", "ebpf"), ("kind", "full")))] == 2
    assert metrics.ready() == (True, "ok")
