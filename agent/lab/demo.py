"""`kernsplit lab demo`: the seed scenario, end to end, on a throwaway lab.

up -> TrafficSplit 900m/100m -> N requests from the client app through its proxy -> observed split
+ `kernsplit show` -> rollout 0m/1000m -> N again -> 100% v2 -> down (always, also on error or
Ctrl-C, unless --keep).
"""
from __future__ import annotations

import json
from collections.abc import Callable

import yaml

from kernsplit.agent.lab.lab import Lab, down, open_lab
from kernsplit.agent.lab.manifests import ROLLOUT_WEIGHTS, SEED_WEIGHTS, SPLIT_FILE, render_split
from kernsplit.agent.lab.observe import wait_applied
from kernsplit.agent.lab.plan import new_prefix
from kernsplit.agent.lab.report import split_table

Echo = Callable[[str], None]


def _milli(weights) -> dict[str, int]:
    return {svc: int(str(w).rstrip("m")) for svc, w in weights}


_TS = "trafficsplits.v1alpha2.split.smi-spec.io"
_WEIGHTS = "jsonpath={range .spec.trafficRouting[*]}{.backend.serviceName}={.weight} {end}"


def _publish(lab: Lab, echo: Echo, weights, patch: bool) -> None:
    """The split reaches the agent: a manifest file (files), `kubectl apply -f` or, for a change
    of an existing split, `kubectl patch --type merge` (kubernetes)."""
    if lab.source != "kubernetes" or not patch:
        path = lab.write_manifest(SPLIT_FILE, render_split(weights))
        command = f"kubectl apply -f {path}"
    else:
        routing = yaml.safe_load(render_split(weights))["spec"]["trafficRouting"]
        body = json.dumps({"spec": {"trafficRouting": routing}}, separators=(",", ":"))
        lab.kubectl("patch", _TS, "my-app-split", "--type", "merge", "-p", body)
        command = f"kubectl patch trafficsplit my-app-split --type merge -p '{body}'"
    if lab.source == "kubernetes":
        echo(f"   $ {command}\n   (the API server now holds: {lab.kubectl('get', _TS, 'my-app-split', '-o', _WEIGHTS).strip()})")


def _round(lab: Lab, echo: Echo, weights, connections: int, title: str, patch: bool = False) -> None:
    milli = _milli(weights)
    echo(f"\n== {title}: TrafficSplit my-app-split -> "
         + ", ".join(f"{s} {w}" for s, w in weights))
    _publish(lab, echo, weights, patch)
    wait_applied(lab, milli)
    echo(f"   agent applied it; sending {connections} requests from the client app "
         f"to my-app (10.100.200.30:80) through its proxy ...")
    result = lab.load(connections)
    total = sum(milli.values())
    expected = {s.removeprefix("my-app-"): w / total for s, w in milli.items()}
    failed = sum(n for k, n in result["outcomes"].items() if k != "ok")
    echo(split_table(result["versions"], expected, failed,
                     title=f"   answers by version ({result['seconds']:.2f}s):", label="version"))
    bpffs = f" --bpffs {lab.bpffs}" if lab.bpffs else ""
    echo(f"\n   $ kernsplit show --netns {lab.node}{bpffs}")
    shown = lab.show()
    echo("\n".join("   " + line for line in (shown.stdout or shown.stderr).splitlines()))
    if lab.interception == "ebpf":
        echo(f"\n   $ kernsplit show --pods{bpffs}")
        shown = lab.show("--pods")
        echo("\n".join("   " + line for line in (shown.stdout or shown.stderr).splitlines()))


def run_demo(dataplane: str, connections: int, keep: bool, echo: Echo, interception: str = "iptables",
             source: str = "files") -> None:
    lab = open_lab(new_prefix(), dataplane, interception, source)
    echo(f"== building lab {lab.prefix} (dataplane {dataplane}, interception {interception}, source {source}): "
         "node, 3 x my-app-v1, 3 x my-app-v2, client pod with proxy-init + proxy, agent")
    try:
        lab.up()
        echo(f"   manifests in {lab.manifests}, agent log {lab.agent_log}")
        if source == "kubernetes":
            echo(f"   the agent watches the lab's Kubernetes API: export KUBECONFIG={lab.kubeconfig}")
        _round(lab, echo, SEED_WEIGHTS, connections, "canary 90/10")
        _round(lab, echo, ROLLOUT_WEIGHTS, connections, "rollout 0/100", patch=True)
    finally:
        if keep:
            echo(f"\n== lab {lab.prefix} kept; remove it with: kernsplit lab down --prefix {lab.prefix}")
        else:
            echo(f"\n== tearing down lab {lab.prefix}")
            for problem in down(lab.prefix):
                echo(f"   warning: {problem}")
