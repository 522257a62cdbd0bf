"""Shared test fixtures.

Kernel and BPF tests are marked; as root they always run. Under CI (CI=true) a skipped kernel or
BPF test is reported as a failure: a dataplane that was not exercised has not been tested.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import uuid

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
IS_ROOT = os.geteuid() == 0
RUN_ID = uuid.uuid4().hex[:6]
_counter = itertools.count()


def unique_name(kind: str) -> str:
    """A unique, short (<= 15 chars, fits an interface name) name for a throwaway kernel object."""
    return f"kst{RUN_ID[:4]}{kind[:2]}{next(_counter)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and (item.get_closest_marker("kernel") or item.get_closest_marker("bpf")):
        report.outcome = "failed"
        report.longrepr = f"kernel/BPF test skipped under CI (CI=true): {report.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    # A module skipped while being collected (e.g. importorskip) hides every test in it.
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"test module skipped at collection under CI (CI=true): {report.longrepr}"


@pytest.fixture
def root_required():
    if not IS_ROOT:
        pytest.skip("needs root")


@contextlib.contextmanager
def throwaway_netns():
    """A fresh, empty network namespace with loopback up; removed afterwards even on failure."""
    name = unique_name("ns")
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def netns(root_required):
    with throwaway_netns() as name:
        yield name


@pytest.fixture
def lab_apiserver(tmp_path):
    """The lab's in-memory Kubernetes API server on 127.0.0.1 (a free port), with the TrafficSplit,
    Gateway and Linkerd route CRDs installed. `.url`, `.kubeconfig` (a file whose current context is
    this server), `.apply(obj)`/`.get`/`.delete` for seeding, and the failure hooks `.compact()`,
    `.drop_watches()`, `.pause()`/`.resume()`, `.restart()`. Bookmarks every second."""
    from kernsplit.agent.lab.apiserver.server import LabApiServer
    server = LabApiServer(bookmark_interval=1.0).start()
    try:
        server.write_kubeconfig(tmp_path / "kubeconfig")
        yield server
    finally:
        server.stop()
