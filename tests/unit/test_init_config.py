"""proxy-init's flags: parsing, validation errors naming the flag, and the CLI refusing bad input
before anything is read or applied."""
from __future__ import annotations

import ipaddress

import pytest
from click.testing import CliRunner

from kernsplit.init.cli import main
from kernsplit.init.config import ConfigError, PortRange, build_config, parse_ports, parse_subnets


def test_ports_and_ranges_accumulate_sorted_and_merged():
    assert parse_ports(["4191,4190", "4567-4568", "4568-4570", "22"], "--x") == (
        PortRange(22, 22), PortRange(4190, 4191), PortRange(4567, 4570))
    assert parse_ports([], "--x") == ()
    assert parse_ports(["80, 443 ,"], "--x") == (PortRange(80, 80), PortRange(443, 443))


@pytest.mark.parametrize("value,message", [
    ("0", "--inbound-ports-to-ignore: port 0 is out of range 1-65535"),
    ("65536", "--inbound-ports-to-ignore: port 65536 is out of range 1-65535"),
    ("90-80", "--inbound-ports-to-ignore: range '90-80' is reversed"),
    ("http", "--inbound-ports-to-ignore: 'http' is not a port number"),
    ("1-", "--inbound-ports-to-ignore: '' is not a port number"),
])
def test_bad_ports_name_the_flag(value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_ports([value], "--inbound-ports-to-ignore")


def test_subnets_mixed_families_and_canonical():
    nets = parse_subnets(["fd00::1/8,10.1.2.3/8", "192.168.0.7"], "--subnets-to-ignore")
    assert nets == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.168.0.7/32"),
                    ipaddress.ip_network("fd00::/8"))
    with pytest.raises(ConfigError, match="--subnets-to-ignore: '10.0.0.0/33' is not an IPv4 or IPv6 CIDR"):
        parse_subnets(["10.0.0.0/33"], "--subnets-to-ignore")


def test_defaults_are_linkerds():
    cfg = build_config()
    assert (cfg.incoming_proxy_port, cfg.outgoing_proxy_port, cfg.proxy_uid, cfg.proxy_gid) == (4143, 4140, 2102, None)
    assert cfg.iptables_mode == "auto" and cfg.ipv6 is None
    assert build_config(proxy_uid="-1").proxy_uid is None


@pytest.mark.parametrize("args,message", [
    (["-p", "0"], "--incoming-proxy-port: port 0 is out of range"),
    (["-o", "70000"], "--outgoing-proxy-port: port 70000 is out of range"),
    (["-r", "9000-8000"], "--ports-to-redirect: range '9000-8000' is reversed"),
    (["--outbound-ports-to-ignore", "22,x"], "--outbound-ports-to-ignore: 'x' is not a port number"),
    (["--subnets-to-ignore", "10.0.0.0/8,nope"], "--subnets-to-ignore: 'nope' is not an IPv4 or IPv6 CIDR"),
    (["--iptables-mode", "iptables"], "Invalid value for '--iptables-mode'"),
    (["--bpffs", "/sys/fs/bpf/x"], "--bpffs: applies to --mode ebpf only"),
    (["--fallback", "iptables"], "--fallback: applies to --mode ebpf only"),
    (["--mode", "ebpf", "--fallback", "nft"], "--fallback: 'nft' is not one of none, iptables"),
    (["--mode", "tproxy"], "--mode: 'tproxy' is not one of iptables, ebpf"),
    (["-u", "abc"], "--proxy-uid: 'abc' is not a number"),
    (["--timeout-close-wait-secs", "-3"], "--timeout-close-wait-secs: -3 is negative"),
    (["--cleanup", "--validate"], "--cleanup cannot be combined"),
])
def test_cli_usage_errors_apply_nothing(args, message):
    # --netns names a namespace that does not exist: had anything tried to read or apply, the
    # error would be an iptables/nsenter failure (exit 1), not a usage error (exit 2).
    result = CliRunner().invoke(main, [*args, "--netns", "/nonexistent/ks-netns"])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_simulate_prints_restore_input_per_family_without_a_namespace():
    result = CliRunner().invoke(main, ["--simulate", "--ipv6", "--netns", "/nonexistent/ks-netns",
                                       "--iptables-mode", "legacy", "--subnets-to-ignore", "10.0.0.0/8,fd00::/8"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "# ipv4: input for iptables-legacy-restore --noflush" in out
    assert "# ipv6: input for ip6tables-legacy-restore --noflush" in out
    v4, v6 = out.split("# ipv6:")
    assert "-s 10.0.0.0/8" in v4 and "fd00::/8" not in v4
    assert "-s fd00::/8" in v6 and "10.0.0.0" not in v6
    assert out.count("COMMIT") == 2


def test_dry_run_is_an_alias_and_json_logs_go_to_stderr():
    result = CliRunner().invoke(main, ["--dry-run", "--no-ipv6", "--netns", "/nonexistent/ks-netns",
                                       "--iptables-mode", "nft", "--log-format", "json"])
    assert result.exit_code == 0
    assert result.stdout.startswith("# ipv4: input for iptables-nft-restore --noflush")
    import json
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert lines[0]["msg"].startswith("ipv4: using iptables-nft") and lines[0]["backend"] == "nft"


def test_validation_refuses_when_its_address_is_ignored():
    from kernsplit.init.probe import probe_port, validate
    result = validate(build_config(subnets_to_ignore=["192.0.2.0/24"], netns="/nonexistent/ks-netns"))
    assert not result.ok and "192.0.2.1 is inside --subnets-to-ignore" in result.message
    assert probe_port(build_config(outbound_ports_to_ignore=["15000-15003"])) == 15004
