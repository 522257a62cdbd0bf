"""Where a lab keeps its files, and the small state file `lab down` reads (also after a crash).

/run/kernsplit/labs/<prefix>/
    state.json     prefix, dataplane, cgroup, bpffs, pids (written before anything is created,
                   updated as processes start)
    manifests/     the agent's --config directory (services.yaml, split.yaml); with the
                   Kubernetes source, what the lab applies to its API server with kubectl
    kubeconfig     the lab API server's kubeconfig (Kubernetes source)
    logs/          one log per process (agent.log is appended across restarts)
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

LABS_DIR = Path("/run/kernsplit/labs")


@dataclass
class LabState:
    prefix: str
    dataplane: str
    cgroup: str
    bpffs: str | None = None
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return LABS_DIR / self.prefix


def lab_root(prefix: str) -> Path:
    return LABS_DIR / prefix


def manifests_dir(prefix: str) -> Path:
    return lab_root(prefix) / "manifests"


def logs_dir(prefix: str) -> Path:
    return lab_root(prefix) / "logs"


def kubeconfig_path(prefix: str) -> Path:
    """The kubeconfig of the lab's API server (labs whose agent uses --source kubernetes)."""
    return lab_root(prefix) / "kubeconfig"


def save(state: LabState) -> None:
    state.root.mkdir(parents=True, exist_ok=True)
    tmp = state.root / ".state.json.tmp"
    tmp.write_text(json.dumps(asdict(state), indent=2))
    os.replace(tmp, state.root / "state.json")


def load(prefix: str) -> LabState | None:
    try:
        data = json.loads((lab_root(prefix) / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return LabState(**data)


def known_prefixes() -> list[str]:
    return sorted(p.name for p in LABS_DIR.iterdir()) if LABS_DIR.is_dir() else []
