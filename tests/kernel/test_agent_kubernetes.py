"""`kernsplit agent --source kubernetes` for real, on both dataplanes: the lab's API server on
127.0.0.1, objects written to it (directly, and with kubectl), the agent as a subprocess, and a
client process in the test's netns and cgroup whose connections to the root ClusterIP land on
listeners that answer with their label. What the client sees is what the kernel holds."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from kernsplit.agent.lab.timescale import scaled
from test_ebpf_dataplane import lab  # noqa: F401  (fixture: netns, cgroup, bpffs, listeners, client)

pytestmark = pytest.mark.kernel

KERNSPLIT = str(Path(sys.executable).parent / "kernsplit")
ROOT_IP = "10.100.200.30"
V1, V2, V2B = "10.1.0.1", "10.1.0.2", "10.1.0.3"
ECONNREFUSED = "errno 111"
SMI = "split.smi-spec.io/v1alpha2"


# --- objects, as a user writes them ---------------------------------------------------------
def service(name: str, ip: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}}


def slice_of(service_name: str, *endpoints: tuple[str, dict], suffix: str = "abc") -> dict:
    """An EndpointSlice of `service_name`; each endpoint is (ip, conditions)."""
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"{service_name}-{suffix}", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": service_name}},
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": cond} for ip, cond in endpoints]}


READY = {"ready": True, "serving": True, "terminating": False}
NOT_READY = {"ready": False, "serving": False, "terminating": False}
TERMINATING = {"ready": False, "serving": False, "terminating": True}


def split(v1: int, v2: int, name: str = "my-app-split", root: str = "my-app") -> dict:
    return {"apiVersion": SMI, "kind": "TrafficSplit", "metadata": {"name": name, "namespace": "default"},
            "spec": {"service": root, "backends": [{"service": "my-app-v1", "weight": v1},
                                                   {"service": "my-app-v2", "weight": v2}]}}


def seed(api) -> None:
    for name, ip in (("my-app", ROOT_IP), ("my-app-v1", "10.100.200.31"), ("my-app-v2", "10.100.200.32")):
        api.apply(service(name, ip))
    api.apply(slice_of("my-app-v1", (V1, READY)))
    api.apply(slice_of("my-app-v2", (V2, READY)))
    api.apply(split(0, 1000))


# --- the node: a netns + cgroup with listeners, the agent, the client -----------------------
@pytest.fixture(params=["iptables", pytest.param("ebpf", marks=pytest.mark.bpf)])
def node(request, lab, lab_apiserver, tmp_path):  # noqa: F811
    subprocess.run(["ip", "-n", Path(lab.netns).name, "addr", "add", f"{ROOT_IP}/32", "dev", "lo"], check=True)
    subprocess.run(["ip", "-n", Path(lab.netns).name, "addr", "add", f"{V2B}/32", "dev", "lo"], check=True)
    for ip, label in ((V1, "v1"), (V2, "v2"), (V2B, "v2b")):
        lab.listen(ip, 8080, label)
    node = Node(request.param, lab, lab_apiserver, tmp_path)
    try:
        yield node
    finally:
        node.stop_all()
        subprocess.run([KERNSPLIT, "agent", "--cleanup", *node.target()], capture_output=True, timeout=scaled(60))


class Node:
    def __init__(self, dataplane: str, lab, api, tmp_path: Path) -> None:  # noqa: F811
        self.dataplane, self.lab, self.api, self.tmp = dataplane, lab, api, tmp_path
        self.agents: list[Agent] = []

    def target(self) -> list[str]:
        if self.dataplane == "ebpf":
            return ["--dataplane", "ebpf", "--cgroup", str(self.lab.cgroup), "--bpffs", str(self.lab.bpffs)]
        return ["--dataplane", "iptables", "--netns", self.lab.netns]

    def agent(self, *extra: str, kubeconfig: Path | None = None) -> "Agent":
        args = [KERNSPLIT, "agent", "--source", "kubernetes", "--kubeconfig", str(kubeconfig or self.api.kubeconfig),
                *self.target(), "--log-level", "debug",
                *([] if "--metrics-addr" in extra else ["--metrics-addr", "127.0.0.1:0"]), *extra]
        agent = Agent(args, self.tmp / f"agent{len(self.agents)}.log")
        self.agents.append(agent)
        return agent

    def stop_all(self) -> None:
        for agent in self.agents:
            agent.stop()

    def seen(self, n: int = 10) -> Counter:
        """Where n new connections to the root ClusterIP went (listener labels, or errno)."""
        return Counter(r.get("label", f"errno {r.get('error')}") for r in self.lab.client(ROOT_IP, 80, n))

    def until(self, want: dict, what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + scaled(timeout)
        while (got := self.seen()) != Counter(want):
            assert time.monotonic() < deadline, f"{what}: connections went to {dict(got)}, not {want}; " \
                                                f"agent log:\n{self.agents[-1].text()[-3000:]}"
            time.sleep(0.1)

    def kubectl(self, *args: str) -> str:
        proc = subprocess.run(["kubectl", "--kubeconfig", str(self.api.kubeconfig), *args],
                              capture_output=True, text=True, timeout=scaled(30))
        assert proc.returncode == 0, proc.stderr
        return proc.stdout


class Agent:
    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log.open("w"))

    def text(self) -> str:
        return self.log.read_text()

    def wait_log(self, needle: str, timeout: float = 20.0, count: int = 1) -> None:
        deadline = time.monotonic() + scaled(timeout)
        while self.text().count(needle) < count:
            assert self.proc.poll() is None, f"agent exited: {self.text()}"
            assert time.monotonic() < deadline, f"{needle!r} not logged {count} times:\n{self.text()}"
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=scaled(10))
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


# --- the tests ------------------------------------------------------------------------------
def test_split_and_endpoint_changes_reach_the_kernel(node):
    seed(node.api)
    agent = node.agent()
    agent.wait_log("sync (start)")
    node.until({"v2": 10}, "initial sync: 0/1000 sends everything to v2")

    node.kubectl("patch", "trafficsplit", "my-app-split", "--type", "merge",
                 "-p", json.dumps({"spec": {"backends": [{"service": "my-app-v1", "weight": 1000},
                                                         {"service": "my-app-v2", "weight": 0}]}}))
    node.until({"v1": 10}, "kubectl patch of the weights")

    node.api.apply(split(0, 1000))
    node.api.apply(slice_of("my-app-v2", (V2, READY), (V2B, READY)))
    _both(node, {"v2", "v2b"})                  # an endpoint added: both serve v2's share

    node.api.apply(slice_of("my-app-v2", (V2, NOT_READY), (V2B, READY)))
    node.until({"v2b": 10}, "a not-ready endpoint leaves the table")
    node.api.apply(slice_of("my-app-v2", (V2, READY), (V2B, TERMINATING)))
    node.until({"v2": 10}, "a terminating endpoint leaves the table while a ready one exists")

    node.api.apply(split(1, 1))
    _both(node, {"v1", "v2"})
    node.api.delete("v1", "Service", "my-app-v2")
    node.until({"v1": 10}, "backend Service deleted: the split leaves it out (SMI), v1 takes all")

    node.api.delete(SMI, "TrafficSplit", "my-app-split")
    node.until({ECONNREFUSED: 10}, "split deleted: the ClusterIP is no longer ours (nothing listens on it)")
    assert agent.stop() == 0


def _both(node: Node, labels: set[str]) -> None:
    deadline = time.monotonic() + scaled(10)
    while set(node.seen(40)) != labels:
        assert time.monotonic() < deadline, f"not spread over {labels}: {node.agents[-1].text()[-2000:]}"
        time.sleep(0.1)


def test_gone_with_a_delete_during_the_gap_and_a_dropped_stream(node):
    seed(node.api)
    node.api.apply(service("other", "10.100.200.40"))
    node.api.apply(split(1000, 0, name="other-split", root="other"))
    agent = node.agent()
    agent.wait_log("sync (start)")
    node.until({"v2": 10}, "initial sync")
    listed = agent.text().count("listed ")

    node.api.restart()                          # every stream dropped; history kept
    node.api.apply(split(1000, 0))
    node.until({"v1": 10}, "a change after the API server restarted")
    assert agent.text().count("listed ") == listed, "a dropped stream resumed with a relist"

    node.api.pause()
    node.api.delete(SMI, "TrafficSplit", "my-app-split")
    node.api.compact()                          # the delete is no longer in the watch history
    node.api.resume()
    agent.wait_log("is gone")
    node.until({ECONNREFUSED: 10}, "the split deleted during the gap is removed from the kernel")
    assert agent.stop() == 0


def test_api_down_keeps_rules_and_connections_then_converges(node):
    seed(node.api)
    agent = node.agent()
    agent.wait_log("sync (start)")
    node.until({"v2": 10}, "initial sync")
    node.api.pause()
    agent.wait_log("retrying in", count=3)
    assert node.seen(20) == Counter({"v2": 20}), "connections keep flowing while the API is down"
    node.api.apply(split(1000, 0))              # made while the agent cannot see it
    assert node.seen(10) == Counter({"v2": 10})
    node.api.resume()
    node.until({"v1": 10}, "recovery converges to the change made while down")
    assert agent.proc.poll() is None
    assert agent.stop() == 0


def test_an_invalid_split_gets_an_event_and_the_others_are_applied(node):
    seed(node.api)
    node.api.apply(service("other", "10.100.200.40"))
    bad = split(1000, 0, name="bad-split", root="other")
    bad["spec"]["backends"][1]["weight"] = -5
    node.api.apply(bad)
    agent = node.agent()
    agent.wait_log("sync (start)")
    node.until({"v2": 10}, "the valid split is applied")
    deadline = time.monotonic() + scaled(10)
    while not (events := json.loads(node.kubectl("get", "events", "-o", "json"))["items"]):
        assert time.monotonic() < deadline, f"no Event posted:\n{agent.text()}"
        time.sleep(0.1)
    [event] = events
    assert event["involvedObject"]["name"] == "bad-split" and event["reason"] == "InvalidTrafficSplit"
    assert "TrafficSplit default/bad-split: spec.backends[1].weight" in event["message"]
    assert agent.stop() == 0


def test_a_crd_installed_after_start_is_picked_up(node, tmp_path):
    from kernsplit.agent.lab.apiserver.server import LabApiServer

    bare = LabApiServer(crds=[], bookmark_interval=1.0).start()
    try:
        kubeconfig = bare.write_kubeconfig(tmp_path / "bare")
        for name, ip in (("my-app", ROOT_IP), ("my-app-v1", "10.100.200.31"), ("my-app-v2", "10.100.200.32")):
            bare.apply(service(name, ip))
        bare.apply(slice_of("my-app-v2", (V2, READY)))
        agent = node.agent("--discovery-interval", "0.5", kubeconfig=kubeconfig)
        agent.wait_log("sync (start)")
        crd = Path(__file__).resolve().parents[2] / "deploy" / "base" / "crds" / "trafficsplit.yaml"
        subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "apply", "-f", str(crd)],
                       check=True, capture_output=True, timeout=scaled(30))
        deadline = time.monotonic() + scaled(10)
        while True:
            try:
                bare.apply(split(0, 1000))
                break
            except KeyError:
                assert time.monotonic() < deadline, "the CRD was not served"
                time.sleep(0.1)
        node.until({"v2": 10}, "a split of a CRD installed after the agent started")
        assert agent.stop() == 0
    finally:
        bare.stop()


def test_restarted_agent_adopts_the_kernel_and_writes_nothing(node):
    seed(node.api)
    first = node.agent()
    first.wait_log("sync (start)")
    node.until({"v2": 10}, "initial sync")
    assert first.stop() == 0
    assert node.seen() == Counter({"v2": 10}), "rules stay while no agent runs"
    second = node.agent()
    second.wait_log("sync (start)")
    line = next(l for l in second.text().splitlines() if "sync (start)" in l)
    assert "0 split ports written, 0 removed" in line, line
    assert node.seen() == Counter({"v2": 10})


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=scaled(5)) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except urllib.error.URLError as exc:
        return 0, str(exc)


def _samples(text: str, name: str) -> dict[tuple, float]:
    from prometheus_client.parser import text_string_to_metric_families
    return {tuple(sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples if s.name == name}


def test_metrics_scraped_during_a_run_match_the_connections_made(node):
    seed(node.api)
    node.api.apply(split(500, 500))
    bad = split(1000, 0, name="bad-split", root="my-app")
    bad["spec"]["backends"][1]["weight"] = -5
    node.api.apply(bad)
    port = _free_port()
    agent = node.agent("--metrics-addr", f"127.0.0.1:{port}")
    deadline = time.monotonic() + scaled(20)
    while _scrape(port, "/readyz")[0] != 200:
        assert time.monotonic() < deadline and agent.proc.poll() is None, f"never ready:\n{agent.text()}"
        time.sleep(0.1)
    assert _scrape(port, "/healthz")[0] == 200

    made = node.seen(200)                       # the only connections to the split so far
    assert set(made) == {"v1", "v2"} and sum(made.values()) == 200
    time.sleep(2.5)                             # the metrics cache kernel reads for 2 s
    status, text = _scrape(port)
    assert status == 200
    conns = {dict(k)["backend"]: v for k, v in _samples(text, "kernsplit_split_backend_connections_total").items()
             if dict(k)["service"] == "my-app"}
    assert conns == {"my-app-v1": made["v1"], "my-app-v2": made["v2"]}
    objects = {dict(k)["kind"]: v for k, v in _samples(text, "kernsplit_watched_objects").items()}
    assert objects["Service"] == 3 and objects["EndpointSlice.discovery.k8s.io"] == 2
    assert objects["TrafficSplit.split.smi-spec.io"] == 2
    errors = {dict(k)["kind"]: v for k, v in _samples(text, "kernsplit_config_object_errors").items()}
    assert errors.get("TrafficSplit.split.smi-spec.io") == 1
    relists = sum(_samples(text, "kernsplit_watch_relists_total").values())
    assert relists >= 3                         # Services, EndpointSlices, TrafficSplits listed once each
    assert sum(_samples(text, "kernsplit_sync_proxy_rules_duration_seconds_count").values()) >= 1
    if node.dataplane == "ebpf":                # one split port of the node's capacity
        from kernsplit.agent.dataplane.ebpf import limits
        fill = {dict(k)["map"]: v for k, v in _samples(text, "kernsplit_bpf_map_fill_ratio").items()}
        assert fill["ks_services"] == 1 / limits.KS_MAX_SPLITS and "ks_counters" not in fill

    node.api.drop_watches()                     # every stream ends: each resumes without a relist
    node.api.delete(SMI, "TrafficSplit", "bad-split")
    deadline = time.monotonic() + scaled(10)
    while True:
        text = _scrape(port)[1]
        restarts = sum(_samples(text, "kernsplit_watch_restarts_total").values())
        errors = sum(_samples(text, "kernsplit_config_object_errors").values())
        if restarts >= 3 and errors == 0:
            break
        assert time.monotonic() < deadline, f"restarts {restarts}, errors {errors}:\n{agent.text()[-2000:]}"
        time.sleep(0.2)
    assert sum(_samples(text, "kernsplit_watch_relists_total").values()) == relists
    assert agent.stop() == 0
