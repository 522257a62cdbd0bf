"""Read what the agent has put in the kernel, through `kernsplit show -o json` (a real program),
and wait for a desired split to be in force."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping

from agent.lab.lab import Lab, LabError


def _objects(node) -> Iterator[dict]:
    """Every JSON object in a document, depth first: tolerant of the envelope `show` uses."""
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _objects(v)
    elif isinstance(node, list):
        for v in node:
            yield from _objects(v)


def observed_weights(doc, root: str) -> dict[str, int] | None:
    """{backend service: weight} of the split whose root service is `root`, or None."""
    for obj in _objects(doc):
        if obj.get("service") == root and isinstance(obj.get("backends"), list):
            return {b["service"]: int(b["weight"]) for b in obj["backends"]
                    if isinstance(b, dict) and "service" in b and "weight" in b}
    return None


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


def wait_applied(lab: Lab, weights: Mapping[str, int], root: str = "my-app",
                 timeout: float = 10.0) -> dict:
    """Poll `kernsplit show` until the split of `root` carries these backend weights
    (milli-units for SMI quantities); returns the show document."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            doc = show_json(lab)
            last = observed_weights(doc, root)
            if last is not None and all(last.get(k) == v for k, v in weights.items()):
                return doc
        except (LabError, ValueError) as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            raise LabError(f"the agent did not apply {dict(weights)} for {root} within {timeout}s; "
                           f"kernel shows {last}; agent log: {lab.agent_log}")
        time.sleep(0.1)
