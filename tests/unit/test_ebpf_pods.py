"""The pod entry of eBPF interception: flags -> settings -> struct ks_pod -> settings, and limits."""
from __future__ import annotations

import ipaddress

import pytest

from kernsplit.agent.dataplane.ebpf import abi
from kernsplit.agent.dataplane.ebpf.pods import PodLimitError, PodSettings, decode, describe, encode
from kernsplit.init.config import build_config
from kernsplit.init.pod_entry import pod_settings


def test_flags_survive_the_round_trip_through_the_kernel_struct():
    cfg = build_config(proxy_uid="2102", proxy_gid="2103", ports_to_redirect=["80,8080-8090"],
                       inbound_ports_to_ignore=["4190-4191"], outbound_ports_to_ignore=["443"],
                       subnets_to_ignore=["10.0.0.0/8,fd00::/8"], mode="ebpf")
    settings = pod_settings(cfg, "web-1", True, ["10.1.2.3", "127.0.0.1", "fe80::1%eth0", "::1", "10.1.2.3"])
    assert settings.addresses == (ipaddress.ip_address("10.1.2.3"), ipaddress.ip_address("fe80::1"))
    assert decode(encode(settings)) == settings
    assert describe(settings) == ("inbound->4143  outbound->4140  uid 2102  gid 2103  redirect 80,8080-8090  "
                                  "ignore-in 4190-4191  ignore-out 443  ignore-subnets 10.0.0.0/8,fd00::/8  ipv4+ipv6")


def test_unset_uid_and_gid_stay_unset():
    settings = pod_settings(build_config(proxy_uid="-1", mode="ebpf"), "p", False, [])
    raw = encode(settings)
    assert raw.flags & (abi.KS_POD_UID | abi.KS_POD_GID | abi.KS_POD_IPV6) == 0
    assert decode(raw) == settings


def test_a_list_longer_than_the_entry_is_an_error_naming_the_flag():
    many = tuple((p, p) for p in range(1000, 1000 + 2 * (abi.KS_POD_PORT_RANGES + 1), 2))
    with pytest.raises(PodLimitError, match="--outbound-ports-to-ignore: 17 port ranges, at most 16"):
        encode(PodSettings("p", 4143, 4140, 2102, None, outbound_ignore=many))
