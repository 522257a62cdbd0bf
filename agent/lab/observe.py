"""Read what the agent has put in the kernel, through `kernsplit show -o json` (a real program),
and wait for a desired split to be in force."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping

from kernsplit.agent.lab.lab import Lab, LabError
from kernsplit.agent.lab.timescale import scaled


def _objects(node) -> Iterator[dict]:
    """Every JSON object in a document, depth first: tolerant of the envelope `show` uses."""
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _objects(v)
    elif isinstance(node, list):
        for v in node:
            yield from _objects(v)


def split_of(doc, root: str) -> dict | None:
    """The JSON object `show` prints for the split of root service `root` (first port)."""
    for obj in _objects(doc):
        if obj.get("service") == root and isinstance(obj.get("backends"), list):
            return obj
    return None


def observed_weights(doc, root: str) -> dict[str, int] | None:
    """{backend service: weight} of the split whose root service is `root`, or None."""
    split = split_of(doc, root)
    if split is None:
        return None
    return {b["service"]: int(b["weight"]) for b in split["backends"]
            if isinstance(b, dict) and "service" in b and "weight" in b}


def same_proportions(observed: Mapping[str, int], expected: Mapping[str, int]) -> bool:
    """Weights compared as proportions among the expected backends, so that the units a
    dataplane records (milli-units, integers) do not matter."""
    if any(k not in observed for k in expected):
        return False
    total_o = sum(observed[k] for k in expected)
    total_e = sum(expected.values())
    if (total_o == 0) != (total_e == 0):
        return False
    return all(observed[k] * total_e == v * total_o for k, v in expected.items()) \
        and all(observed[k] == 0 for k, v in expected.items() if v == 0)


def observed_connections(doc, root: str) -> dict[str, int]:
    """{backend service: connections counted by the kernel} for the split of `root`."""
    for obj in _objects(doc):
        if obj.get("service") == root and isinstance(obj.get("backends"), list):
            return {b["service"]: int(b.get("connections", 0)) for b in obj["backends"]
                    if isinstance(b, dict) and "service" in b}
    return {}


def show_json(lab: Lab):
    proc = lab.show("-o", "json")
    if proc.returncode != 0:
        raise LabError(f"kernsplit show failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def wait_applied(lab: Lab, weights: Mapping[str, int] | None, root: str = "my-app",
                 timeout: float = 10.0) -> dict:
    """Poll `kernsplit show` until the split of `root` is in the kernel with these backend
    weights (as proportions; None: just present); returns the show document. `timeout` is for a
    fast machine: it is stretched by KERNSPLIT_TEST_TIME_SCALE."""
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            doc = show_json(lab)
            last = observed_weights(doc, root)
            if last is not None and (weights is None or same_proportions(last, weights)):
                return doc
        except (LabError, ValueError) as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            raise LabError(f"the agent did not apply {dict(weights or {})} for {root} within "
                           f"{timeout}s; kernel shows {last}; agent log: {lab.agent_log}")
        time.sleep(0.1)
