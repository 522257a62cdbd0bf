"""Shared scenario code for both dataplanes: one lab per dataplane, split helpers, statistics.

The lab is driven like a user drives it: manifests written into the lab directory, the agent and
`kernsplit show` as real programs, requests made by the client pod's application through its
proxy (`agent.lab.load`).
"""
from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from kernsplit.agent.lab.lab import Lab, down, open_lab
from kernsplit.agent.lab.manifests import SPLIT_FILE, render_split
from kernsplit.agent.lab.observe import wait_applied
from kernsplit.agent.lab.plan import SEED_APPS, AppSpec, ServiceSpec, new_prefix
from kernsplit.agent.lab.timescale import scaled
from tests.fixtures import assert_shares  # noqa: F401 (the shared 4-sigma check, re-exported)

ROOT = "my-app"
ROOT_VIP = "10.100.200.30:80"
EMPTY_ROOT = "my-app-empty"          # a Service with no endpoints at all
EMPTY_VIP = "10.100.200.40:80"
EQUAL_BACKENDS = tuple(AppSpec(f"my-app-b{i}", f"b{i}", f"10.100.201.{10 + i}", replicas=1)
                       for i in range(10))
SCENARIO_APPS = (*SEED_APPS, *EQUAL_BACKENDS)
SCENARIO_SERVICES = (ServiceSpec(ROOT, "10.100.200.30", ("my-app-v1", "my-app-v2")),
                     ServiceSpec(EMPTY_ROOT, "10.100.200.40"))
VERSION_OF = {app.name: app.version for app in SCENARIO_APPS}


def build_lab(dataplane: str) -> Lab:
    """A lab for the scenario module; the caller must call `down(lab.prefix)` (even on failure:
    `up` already removes a lab that failed half-way)."""
    lab = open_lab(new_prefix(), dataplane, apps=SCENARIO_APPS, services=SCENARIO_SERVICES)
    lab.up()
    return lab


def teardown(lab: Lab) -> None:
    problems = down(lab.prefix)
    assert problems == [], problems


def milli(weight: str | int) -> int:
    """SMI quantity -> milli-units ("900m" -> 900, "1" -> 1000, 1 -> 1000)."""
    text = str(weight)
    return int(text[:-1]) if text.endswith("m") else int(text) * 1000


def apply_split(lab: Lab, backends: Sequence[tuple[str, str | int]], root: str = ROOT,
                shape: str = "seed", expect: Mapping[str, int] | None = None) -> None:
    """Write split.yaml and wait until `kernsplit show` reports it in the kernel."""
    lab.write_manifest(SPLIT_FILE, render_split(backends, root=root, shape=shape))
    wanted = expect if expect is not None else {svc: milli(w) for svc, w in backends}
    wait_applied(lab, wanted, root=root)


def by_backend(report: dict) -> dict[str, int]:
    """Answers of a load report, keyed by backend Service name."""
    service_of = {v: k for k, v in VERSION_OF.items()}
    return {service_of[v]: n for v, n in report["versions"].items()}


def failures(report: dict) -> dict[str, int]:
    return {k: n for k, n in report["outcomes"].items() if k != "ok"}


def wait_log(path: Path, since: int, pattern: str, timeout: float = 10.0) -> str:
    """Wait until the log, from byte offset `since`, matches `pattern`; returns that part."""
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = path.read_bytes()[since:].decode(errors="replace")
        if re.search(pattern, text):
            return text
        time.sleep(0.1)
    raise AssertionError(f"{path} did not log /{pattern}/ within {timeout}s; it logged:\n{text}")
