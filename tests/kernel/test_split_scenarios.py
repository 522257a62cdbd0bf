"""The split scenarios of issues 3 and 4, run on both dataplanes in one lab per dataplane.

Requests are made by the client pod's application through its transparent proxy (as in the
demo); weights are changed by editing the lab's split.yaml while the agent runs.
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import time

import pytest
import yaml

from kernsplit.agent.iptables.exec import save
from kernsplit.agent.iptables.kinds import IptablesBackend
from kernsplit.agent.lab.manifests import SPLIT_FILE, render_split
from kernsplit.agent.lab.observe import observed_connections, show_json, wait_applied
from kernsplit.agent.lab.plan import PROXY_UID
from kernsplit.agent.lab import procs
from kernsplit.agent.lab.timescale import scaled

from scenario import (EMPTY_ROOT, EMPTY_VIP, EQUAL_BACKENDS, ROOT, apply_split, assert_shares,
                      build_lab, by_backend, failures, milli, teardown, wait_log)

STAT_CONNECTIONS = 2000


@pytest.fixture(scope="module", params=[
    pytest.param("iptables", marks=pytest.mark.kernel),
    pytest.param("ebpf", marks=[pytest.mark.kernel, pytest.mark.bpf]),
])
def lab(request):
    from conftest import IS_ROOT
    if not IS_ROOT:
        pytest.skip("needs root")
    the_lab = build_lab(request.param)
    try:
        yield the_lab
    finally:
        teardown(the_lab)


ACCURACY = {
    "90/10": ("seed", (("my-app-v1", "900m"), ("my-app-v2", "100m"))),
    # v1alpha1 quantities: 1 = 1000m, so 1 : 500m is 2:1 (the SMI SDK bug inverted it)
    "1:500m": ("v1alpha1", (("my-app-v1", 1), ("my-app-v2", "500m"))),
    "70/30/0": ("seed", (("my-app-v1", "700m"), ("my-app-v2", "300m"), ("my-app-b0", "0m"))),
    "10-equal": ("seed", tuple((app.name, "100m") for app in EQUAL_BACKENDS)),
}


@pytest.mark.parametrize("case", list(ACCURACY))
def test_split_accuracy(lab, case):
    shape, backends = ACCURACY[case]
    apply_split(lab, backends, shape=shape)
    report = lab.load(STAT_CONNECTIONS)
    assert failures(report) == {}
    weights = {svc: milli(w) for svc, w in backends}
    assert_shares(by_backend(report), weights)       # 1:500m included: 2:1, not the inverse


def test_rollout_then_rollback(lab):
    apply_split(lab, (("my-app-v1", "0m"), ("my-app-v2", "1000m")))
    report = lab.load(300)
    assert failures(report) == {} and by_backend(report) == {"my-app-v2": 300}
    apply_split(lab, (("my-app-v1", "1000m"), ("my-app-v2", "0m")))
    report = lab.load(300)
    assert failures(report) == {} and by_backend(report) == {"my-app-v1": 300}


def test_all_zero_weights_use_the_root_endpoints(lab):
    apply_split(lab, (("my-app-v1", "0m"), ("my-app-v2", "0m")))
    report = lab.load(600)
    assert failures(report) == {}
    # my-app's own endpoints are all six pods, both versions, equally
    assert_shares(by_backend(report), {"my-app-v1": 1, "my-app-v2": 1})
    assert len(report["pods"]) == 6


def test_missing_backend_is_excluded(lab):
    apply_split(lab, (("my-app-v1", "500m"), ("my-app-v3", "500m"), ("my-app-v2", "500m")),
                expect={"my-app-v1": 500, "my-app-v2": 500})
    report = lab.load(1000)
    assert failures(report) == {}
    assert_shares(by_backend(report), {"my-app-v1": 1, "my-app-v2": 1})


def _route(backend_refs) -> str:
    return yaml.safe_dump({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "my-app-route", "namespace": "default"},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": ROOT, "port": 80}],
                 "rules": [{"backendRefs": [{"name": n, "port": 80, "weight": w} for n, w in backend_refs]}]}})


def test_route_refuses_the_share_of_a_backend_ref_that_cannot_serve(lab):
    """Gateway API: "Connection rejections must respect weight" -- a missing backendRef of weight 1
    beside a served one of weight 3 has about a quarter of new connections refused (ECONNREFUSED
    at once: RST on iptables, the connect hook's ECONNREFUSED on eBPF); weight 0 gets nothing."""
    refs = (("my-app-v1", 3), ("my-app-gone", 1), ("my-app-v2", 0))
    lab.write_manifest(SPLIT_FILE, _route(refs))
    wait_applied(lab, dict(refs))
    # straight from the kernel: the proxy uid is neither redirected (iptables) nor exempt (eBPF)
    report = lab.load(STAT_CONNECTIONS, uid=PROXY_UID)
    assert set(report["outcomes"]) <= {"ok", "refused"}, report       # never a hang or a timeout
    assert by_backend(report) == {"my-app-v1": report["outcomes"].get("ok", 0)}   # v2 (weight 0): none
    assert_shares({"my-app-v1": report["outcomes"].get("ok", 0), "refused": report["outcomes"].get("refused", 0)},
                  {"my-app-v1": 3, "refused": 1})
    shown = show_json(lab)
    counted = observed_connections(shown, ROOT)
    assert counted["my-app-gone"] == report["outcomes"].get("refused", 0) and counted["my-app-v2"] == 0, counted
    backends = {b["service"]: b for s in shown if s["service"] == ROOT for b in s["backends"]}
    assert backends["my-app-gone"]["refused"] and not backends["my-app-v1"]["refused"]


def _refusing(lab) -> bool:
    split = next((s for s in show_json(lab) if s.get("service") == EMPTY_ROOT), None)
    return bool(split and split.get("refuse"))


def test_root_without_endpoints_refuses_promptly(lab):
    lab.write_manifest(SPLIT_FILE, render_split((("my-app-gone", "1000m"),), root=EMPTY_ROOT,
                                                name="empty-split"))
    deadline = time.monotonic() + scaled(10)
    while not _refusing(lab):
        assert time.monotonic() < deadline, f"no refusing split for {EMPTY_ROOT} in the kernel"
        time.sleep(0.1)
    # straight from the kernel (the proxy uid is not redirected): connection refused
    direct = lab.load(50, target=EMPTY_VIP, uid=PROXY_UID)
    assert direct["outcomes"] == {"refused": 50}
    # through the proxy: the app sees a reset or refusal, never an answer, never a hang
    proxied = lab.load(50, target=EMPTY_VIP)
    assert set(proxied["outcomes"]) <= {"refused", "reset"}, proxied


def test_open_connection_keeps_its_backend(lab):
    apply_split(lab, (("my-app-v1", "500m"), ("my-app-v2", "500m")))
    client = subprocess.Popen(lab.exec_argv("client", procs.python_module(
        "kernsplit.agent.lab.load", "--target", "10.100.200.30:80", "--keepalive")),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    try:
        assert client.stdout.readline().strip() == "connected"

        def ask() -> str:
            client.stdin.write("go\n")
            client.stdin.flush()
            return client.stdout.readline().strip()

        first = ask()
        assert first.startswith("version=v"), first
        other = "my-app-v2" if "version=v1" in first else "my-app-v1"
        mine = "my-app-v1" if other == "my-app-v2" else "my-app-v2"
        apply_split(lab, ((mine, "0m"), (other, "1000m")))
        assert by_backend(lab.load(100)) == {other: 100}     # new connections follow the change
        assert ask() == first                                 # the open one stays, and works
        assert ask() == first
    finally:
        client.kill()
        client.wait()


def _rules(lab) -> str:
    """Both backends' rulesets of the node, without comments and chain counters. No `-t`: naming
    a table would create it (and legacy tables would change the agent's backend choice)."""
    text = save(lab.node, IptablesBackend.NFT) + save(lab.node, IptablesBackend.LEGACY)
    return "\n".join(re.sub(r" \[\d+:\d+\]$", "", line) for line in text.splitlines()
                     if not line.startswith("#"))


def test_agent_sigkill_and_restart_under_load(lab):
    apply_split(lab, (("my-app-v1", "800m"), ("my-app-v2", "200m")))
    rules_before = _rules(lab) if lab.dataplane == "iptables" else None
    loop = subprocess.Popen(lab.exec_argv("client", procs.python_module(
        "kernsplit.agent.lab.load", "--target", "10.100.200.30:80", "--loop", "-c", "4")),
        stdout=subprocess.PIPE, text=True)
    try:
        assert loop.stdout.readline().strip() == "started"
        time.sleep(scaled(0.3))
        counted_before = sum(observed_connections(show_json(lab), ROOT).values())
        lab.kill_agent(signal.SIGKILL)
        time.sleep(scaled(0.5))               # traffic keeps flowing with no agent at all
        offset = lab.agent_log.stat().st_size
        lab.start_agent()
        restarted = wait_log(lab.agent_log, offset, r"sync \(start\)")
        time.sleep(scaled(0.3))
    finally:
        loop.send_signal(signal.SIGTERM)
        out, _ = loop.communicate(timeout=scaled(30))
    report = json.loads(out.strip().splitlines()[-1])
    assert report["outcomes"].get("ok", 0) > 100 and failures(report) == {}, report
    # nothing rewritten: the restarted agent adopted the kernel state as it was
    assert "0 split ports written" in restarted and "1 unchanged" in restarted, restarted
    counted_after = sum(observed_connections(show_json(lab), ROOT).values())
    assert counted_after >= counted_before > 0     # counters survived: objects not recreated
    if rules_before is not None:
        assert _rules(lab) == rules_before


def test_bad_edit_keeps_the_previous_split(lab):
    apply_split(lab, (("my-app-v1", "900m"), ("my-app-v2", "100m")))
    offset = lab.agent_log.stat().st_size
    lab.write_manifest(SPLIT_FILE, render_split((("my-app-v1", "-5"), ("my-app-v2", "100m"))))
    logged = wait_log(lab.agent_log, offset, r"weight")
    assert "split.yaml" in logged and "trafficRouting[0].weight" in logged, logged
    assert lab.pids.get("agent") and procs.alive(lab.pids["agent"])   # still running
    wait_applied(lab, {"my-app-v1": 900, "my-app-v2": 100}, timeout=1)
    report = lab.load(STAT_CONNECTIONS)
    assert failures(report) == {}
    assert_shares(by_backend(report), {"my-app-v1": 900, "my-app-v2": 100})


def test_backend_pod_reaches_its_own_root_service(lab):
    """Hairpin: a backend pod connecting to its own root service is sometimes sent to itself.
    On iptables the node DNATs it back to the pod (and must masquerade that case); on eBPF the
    pod's own connect is rewritten (only the proxy uid's connects are split there, so the load
    runs as that uid)."""
    apply_split(lab, (("my-app-v1", "900m"), ("my-app-v2", "100m")))
    uid = PROXY_UID if lab.dataplane == "ebpf" else None
    report = lab.load(300, pod="my-app-v1-0", uid=uid)
    assert failures(report) == {}, report
    assert report["pods"].get("my-app-v1-0", 0) > 0, report      # it did land on itself
