"""`kernsplit agent --once --dry-run` prints what the sync would write and changes nothing, on both
dataplanes: a first install, a kernel already in place, and the seed's rollout step. Golden files
in tests/unit/golden/dry-run/ (KS_UPDATE_GOLDEN=1 rewrites them)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kernsplit.agent.iptables.exec import save
from kernsplit.agent.iptables.kinds import Family, IptablesBackend
from kernsplit.agent.lab.timescale import scaled
from tests.conftest import unique_name
from tests.fixtures import assert_golden

pytestmark = pytest.mark.kernel

KERNSPLIT = str(Path(sys.executable).parent / "kernsplit")
MANIFESTS = Path(__file__).parents[1] / "unit" / "manifests"


def agent(*args) -> subprocess.CompletedProcess:
    return subprocess.run([KERNSPLIT, "agent", "--once", *map(str, args)], capture_output=True, text=True,
                          timeout=scaled(60))


@pytest.fixture
def config(tmp_path):
    d = tmp_path / "manifests"
    shutil.copytree(MANIFESTS / "seed", d)
    return d


def roll_out(config: Path) -> None:
    shutil.copy(MANIFESTS / "rollout" / "traffic-split.yaml", config / "traffic-split.yaml")


def tables(netns) -> dict:
    return {f: "\n".join(l for l in save(netns, IptablesBackend.NFT, f, counters=True).splitlines()
                         if not l.startswith("#")) for f in Family}


def dry_run(*args) -> str:
    r = agent("--dry-run", *args)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_iptables_dry_run_prints_the_restore_input_and_changes_nothing(netns, config):
    target = ("--netns", netns, "--config", config, "--iptables-mode", "nft")
    before = tables(netns)
    assert_golden("dry-run/iptables-first.golden", dry_run(*target))
    assert tables(netns) == before
    assert agent(*target).returncode == 0
    assert_golden("dry-run/iptables-in-place.golden", dry_run(*target))
    roll_out(config)
    applied = tables(netns)
    assert_golden("dry-run/iptables-rollout.golden", dry_run(*target))
    assert tables(netns) == applied           # counters included: nothing was rewritten


def test_ebpf_dry_run_of_a_first_install_creates_no_pin(config, tmp_path):
    bpffs = Path("/sys/fs/bpf") / unique_name("bf")
    out = dry_run("--dataplane", "ebpf", "--bpffs", bpffs, "--cgroup", tmp_path / "no-such-cgroup",
                  "--config", config)
    assert_golden("dry-run/ebpf-first.golden", out)
    assert not bpffs.exists()


def test_dry_run_needs_once_and_a_good_config(config, tmp_path):
    r = subprocess.run([KERNSPLIT, "agent", "--dry-run", "--config", config], capture_output=True, text=True)
    assert r.returncode == 2 and "--dry-run" in r.stderr
    split = config / "traffic-split.yaml"
    split.write_text(split.read_text().replace("weight: 900m", "weight: lots"))
    r = agent("--dry-run", "--dataplane", "ebpf", "--bpffs", tmp_path / "pins", "--config", config)
    assert r.returncode == 1 and r.stdout == "" and "nothing would be written" in r.stderr
