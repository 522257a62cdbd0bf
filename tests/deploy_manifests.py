"""deploy/ as a user installs it: `kubectl kustomize` of a folder, parsed into objects. Shared by
the manifest checks (tests/unit) and the capability tests (tests/kernel), so that the capability
sets tested are the ones the manifests grant."""
from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path

import yaml

DEPLOY = Path(__file__).parents[1] / "deploy"


@cache
def render(folder: str) -> tuple[dict, ...]:
    """The objects `kubectl kustomize deploy/<folder>` prints ("" for deploy/ itself)."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render deploy/ (kustomize is built in)"
    out = subprocess.run([kubectl, "kustomize", str(DEPLOY / folder)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, f"kubectl kustomize deploy/{folder}: {out.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def one(objects, kind: str) -> dict:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def container(obj: dict, name: str, init: bool = False) -> dict:
    key = "initContainers" if init else "containers"
    return next(c for c in pod_spec(obj).get(key, []) if c["name"] == name)


def added_capabilities(c: dict) -> tuple[str, ...]:
    return tuple(c["securityContext"]["capabilities"].get("add", ()))


def agent(overlay: str) -> dict:
    return container(one(render(overlay), "DaemonSet"), "agent")


def proxy_init() -> dict:
    return container(one(render("examples/proxy-init"), "Deployment"), "proxy-init", init=True)
