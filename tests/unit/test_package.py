"""The distribution installs as `kernsplit.*` (no top-level `agent`/`init` in site-packages), lists
every package folder, and a plain (non-editable) install into a fresh venv gives working commands
that find the BPF sources as package data."""
from __future__ import annotations

import os
import subprocess
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_listed_under_kernsplit():
    cfg = _config()
    mapping = {folder: name for name, folder in cfg["package-dir"].items()}
    found = set()
    for folder, top in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((top, *rel)))
    assert sorted(found) == sorted(cfg["packages"])
    assert all(name.startswith("kernsplit.") for name in cfg["packages"])


@pytest.mark.slow
def test_plain_install_into_fresh_venv(tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / "bin"
    subprocess.run([bin_dir / "pip", "install", "-q", "--disable-pip-version-check", str(ROOT)],
                   check=True, capture_output=True, cwd=tmp_path)
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    assert not (site / "agent").exists() and not (site / "init").exists()
    assert (site / "kernsplit" / "bpf" / "ks_types.h").is_file()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = dict(capture_output=True, text=True, cwd=tmp_path, env=env)   # not the checkout: no shadowing
    simulate = subprocess.run([bin_dir / "proxy-init", "--simulate", "--no-ipv6"], **run)
    assert simulate.returncode == 0, simulate.stderr
    assert "-j KS-PROXY-INIT-OUTPUT" in simulate.stdout
    seed = ROOT / "tests" / "unit" / "manifests" / "seed"
    validate = subprocess.run([bin_dir / "kernsplit", "validate", str(seed)], **run)
    assert validate.returncode == 0, validate.stderr
    assert "my-app-v1 90%" in validate.stdout
    where = subprocess.run([bin_dir / "python", "-c",
                            "from kernsplit.agent.dataplane.ebpf.sources import BPF_SRC; print(BPF_SRC)"], **run)
    assert Path(where.stdout.strip()).resolve() == (site / "kernsplit" / "bpf").resolve()
