"""The import contract: layers point one way.

`init` (proxy-init) may import from `agent`; `agent` never imports `init`. The iptables path never
imports BCC (a node without BCC must still run the iptables dataplane), and the model stays pure
(no subprocess, no pyroute2, no bcc).
"""
from __future__ import annotations

import ast
import subprocess
import sys
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


# Pure planners: they return data and touch nothing. Proved by importing each in a fresh
# interpreter and looking at what came along (a package __init__ that pulls in its executor, or
# a value type living in an executor module, fails here).
PURE = sorted({str(p.relative_to(ROOT)) for pattern in ("plan.py", "diff.py", "render.py", "thresholds.py",
                                                         "limits.py", "ruleset.py", "kinds.py", "rule.py",
                                                         "saved.py", "partial.py", "store.py", "desired.py",
                                                         "pacer.py", "preview.py", "ownership.py", "comments.py", "btf.py")
               for p in (*(ROOT / "agent").rglob(pattern), *(ROOT / "init").rglob(pattern))
               if "lab" not in p.parts})    # the lab's plan.py plans processes, not kernel state
IMPURE = ("subprocess", "ctypes", "_ctypes", "bcc", "pyroute2")


def _module_name(path: str) -> str:
    return "kernsplit." + path.removesuffix(".py").replace("/", ".")


def test_pure_modules_are_found():
    assert {"agent/dataplane/ebpf/plan.py", "agent/dataplane/ebpf/thresholds.py",
            "agent/dataplane/iptables/plan.py", "init/plan.py"} <= set(PURE)


@pytest.mark.parametrize("path", PURE)
def test_pure_modules_import_neither_subprocess_nor_ctypes_nor_bcc(path):
    probe = ("import sys, importlib; importlib.import_module(sys.argv[1]); "
             f"print(' '.join(m for m in {IMPURE!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe, _module_name(path)], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [], f"importing {path} loads {', '.join(out)}"


def test_schema_fingerprint_never_loads_the_loader():
    probe = ("import sys; import kernsplit.agent.dataplane.ebpf.schema; "
             "print([m for m in sys.modules if m.startswith('kernsplit.') and m.endswith(('.loader', '.bpfsys', '.maps'))])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
