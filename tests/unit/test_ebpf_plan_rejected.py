"""One split that does not fit the eBPF maps is skipped; every other split is still planned, and
the skipped one keeps whatever the kernel held for its address (no kernel needed)."""
from __future__ import annotations

from kernsplit.agent.dataplane.ebpf import abi, plan
from tests.fixtures import split_port


def images_or_rejected(desired):
    out = [plan.image_or_rejected(s) for s in desired]
    return ([i for i in out if not isinstance(i, plan.Rejected)],
            [r for r in out if isinstance(r, plan.Rejected)])


def split(ip="10.100.200.30", port=80, backends=2, endpoints_each=1, name="my-app-split"):
    names = [f"my-app-v{i}" for i in range(backends)]
    eps = {n: [(f"10.{i // 256}.{i % 256}.{j // 250 + 1}", 8000 + j % 250) for j in range(endpoints_each)]
           for i, n in enumerate(names)}
    return split_port(dict.fromkeys(names, 1), eps, ip=ip, port=port, split=name)


def test_sixteen_backendrefs_plus_the_root_fit():
    # Gateway API's maximum of 16 backendRefs, all weight 0: the model appends the root.
    img = plan.image(split(backends=abi.KS_MAX_BACKENDS))
    assert len(img.meta.backends) == 17 == abi.KS_MAX_BACKENDS


def test_too_many_backends_is_rejected_naming_split_address_and_limit():
    images, rejected = images_or_rejected([split(backends=18, name="big"), split(port=443)])
    assert [i.key for i in images] == [plan.Addr(4, "10.100.200.30", 443)]
    [r] = rejected
    assert r.key == plan.Addr(4, "10.100.200.30", 80)
    assert r.message.startswith("TrafficSplit default/big 10.100.200.30:80: backends: 18 backends")
    assert f"at most {abi.KS_MAX_BACKENDS}" in r.message
    assert "keeps its previous state" in r.message


def test_too_many_endpoints_is_rejected():
    _, [r] = images_or_rejected([split(backends=2, endpoints_each=2049)])
    assert "endpoints: 4098 endpoints" in r.message and f"at most {abi.KS_MAX_SLOTS}" in r.message


def test_ipv6_address_in_brackets():
    _, [r] = images_or_rejected([split(ip="fd00::30", backends=18)])
    assert "TrafficSplit default/my-app-split [fd00::30]:80: backends" in r.message


def test_rejected_split_keeps_its_installed_state_and_others_are_written():
    good = plan.plan(plan.images([split()]), {}).result          # last good state of :80
    images, rejected = images_or_rejected([split(backends=18), split(port=443)])
    p = plan.plan(images, good, keep=[r.key for r in rejected])
    key80 = plan.Addr(4, "10.100.200.30", 80)
    assert p.result[key80] == good[key80]                         # kept, not removed
    assert not any(getattr(op, "key", None) == key80 for op in p.ops)
    assert (p.written, p.removed, p.unchanged) == (1, 0, 0)       # only :443 written


def test_rejected_new_split_installs_nothing():
    images, rejected = images_or_rejected([split(backends=18)])
    p = plan.plan(images, {}, keep=[r.key for r in rejected])
    assert p.ops == () and p.result == {}


def test_keep_does_not_resurrect_a_split_that_is_gone():
    p = plan.plan([], {}, keep=[plan.Addr(4, "10.100.200.30", 80)])
    assert p.result == {}
