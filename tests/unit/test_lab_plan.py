"""The lab's pure parts, no privileges: its shape, and that the manifests it writes are read by
the real model as the seed scenario (the agent gets exactly what the lab means)."""
from __future__ import annotations

from fractions import Fraction

import pytest

from kernsplit.agent.lab.manifests import SEED_WEIGHTS, render_services, render_split
from kernsplit.agent.lab.plan import CLIENT_POD, SEED_APPS, AppSpec, plan_lab
from kernsplit.agent.lab.report import split_table
from kernsplit.agent.model import load_config


def test_plan_names_fit_the_kernel_and_carry_the_prefix():
    plan = plan_lab("ksl1a2b", apps=(*SEED_APPS, *(AppSpec(f"b{i}", f"b{i}", f"10.100.201.{i}", 1)
                                                  for i in range(20))))
    assert all(len(p.host_veth) <= 15 and p.host_veth.startswith("ksl1a2b") for p in plan.pods)
    assert all(ns.startswith("ksl1a2b-") for ns in plan.netns_names)
    assert len({p.ip for p in plan.pods}) == len(plan.pods)
    assert plan.client.name == CLIENT_POD and len(plan.pods_of("my-app-v1")) == 3


@pytest.mark.parametrize("bad", ["lab1", "ksl12345", "KSL1a2b", "ksl1a2g"])
def test_bad_prefix_is_refused(bad):
    with pytest.raises(ValueError, match="ksl<4 hex digits>"):
        plan_lab(bad)


def test_lab_manifests_resolve_to_the_seed_split(tmp_path):
    plan = plan_lab("ksl0000")
    (tmp_path / "services.yaml").write_text(render_services(plan))
    split = render_split(SEED_WEIGHTS)
    (tmp_path / "split.yaml").write_text(split)
    assert "trafficRouting:" in split and "serviceName: my-app-v2" in split and "weight: 100m" in split
    config = load_config([tmp_path])
    assert config.errors == () and config.warnings == ()
    (port,) = config.split_ports
    assert (port.cluster_ip, port.port, port.service) == ("10.100.200.30", 80, "my-app")
    shares = {}
    for ep in port.endpoints:
        shares[ep.backend] = shares.get(ep.backend, 0) + ep.share
        assert ep.endpoint.port == 8080
    assert shares == {"my-app-v1": Fraction(9, 10), "my-app-v2": Fraction(1, 10)}


def test_split_table_shows_counts_shares_and_bars():
    text = split_table({"v1": 900, "v2": 100}, {"v1": 0.9, "v2": 0.1}, label="version")
    lines = text.splitlines()
    assert lines[0].split()[0] == "version"
    assert "900" in lines[1] and "90.0%" in lines[1] and "#" * 36 in lines[1]
    assert lines[-1].split()[:2] == ["total", "1000"]
