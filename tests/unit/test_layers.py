"""The import contract: layers point one way.

`init` (proxy-init) may import from `agent`; `agent` never imports `init`. The iptables path never
imports BCC (a node without BCC must still run the iptables dataplane), and the model stays pure
(no subprocess, no pyroute2, no bcc).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in _modules(package):
        for name in _imports(path):
            if name.split(".")[0] in forbidden or any(name.startswith(f + ".") or name == f for f in forbidden):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    return bad


def test_agent_never_imports_init():
    assert _modules("agent"), "agent package not found"
    assert _offenders("agent", ("kernsplit.init", "init")) == []


@pytest.mark.parametrize("package", ["agent/model", "agent/iptables", "agent/dataplane/iptables", "init"])
def test_iptables_paths_never_import_bcc(package):
    assert _offenders(package, ("bcc",)) == []


def test_model_is_pure():
    assert _offenders("agent/model", ("subprocess", "pyroute2", "bcc", "kernsplit.agent.iptables", "kernsplit.agent.dataplane")) == []
