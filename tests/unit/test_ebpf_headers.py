"""The minimal kernel tree generated for BCC, and the header limits mirrored in Python."""
from __future__ import annotations

import gzip
import pathlib
import re

import pytest

from kernsplit.agent.dataplane.ebpf import abi, headers, sources


def test_autoconf_from_config():
    text = headers.autoconf_h("CONFIG_BPF=y\nCONFIG_FOO=m\n# CONFIG_BAR is not set\nCONFIG_HZ=250\n"
                              'CONFIG_LOCALVERSION="-x"\n')
    assert "#define CONFIG_BPF 1\n" in text
    assert "#define CONFIG_FOO_MODULE 1\n" in text
    assert "CONFIG_BAR" not in text
    assert "#define CONFIG_HZ 250\n" in text
    assert '#define CONFIG_LOCALVERSION "-x"\n' in text


def test_version_code():
    assert headers.version_code("6.18.44-fc-v669") == (6 << 16) + (18 << 8) + 44
    assert headers.version_code("5.4.300") == (5 << 16) + (4 << 8) + 255
    with pytest.raises(headers.KernelHeadersError):
        headers.version_code("weird")


def test_tree_generated_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(headers, "_read_config", lambda release=None: "CONFIG_BPF=y\n")
    tree = headers.ensure_tree("9.9.9-test", tmp_path)
    assert (tree / "include/generated/autoconf.h").read_text().endswith("#define CONFIG_BPF 1\n")
    assert "IS_ENABLED" in (tree / "include/linux/kconfig.h").read_text()
    assert (tree / "include/uapi/linux/bpf.h").read_text() == "#include <bcc/bpf.h>\n"
    assert (tree / "include/uapi/linux/types.h").resolve() == (headers.UAPI_INCLUDE / "linux/types.h").resolve()
    stamp = (tree / "include/linux/version.h").stat().st_mtime_ns
    assert headers.ensure_tree("9.9.9-test", tmp_path) == tree
    assert (tree / "include/linux/version.h").stat().st_mtime_ns == stamp


def test_missing_everything_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(headers, "_read_config", lambda release=None: "CONFIG_BPF=y\n")
    monkeypatch.setattr(headers, "UAPI_INCLUDE", tmp_path / "nothing")
    with pytest.raises(headers.KernelHeadersError, match="linux-headers-9.9.9-test"):
        headers.ensure_tree("9.9.9-test", tmp_path / "cache")


def test_config_read_from_boot_when_proc_has_none(tmp_path):
    """Debian, Ubuntu and RHEL kernels are built without CONFIG_IKCONFIG_PROC: no /proc/config.gz,
    but /boot/config-<release> beside the image. A node without linux-headers must still work."""
    boot = tmp_path / "config-6.1.0-57-amd64"
    boot.write_text("CONFIG_BPF_SYSCALL=y\n")
    sources = (tmp_path / "config.gz", boot)
    assert headers._read_config("6.1.0-57-amd64", sources) == "CONFIG_BPF_SYSCALL=y\n"
    assert headers.config_sources("6.1.0-57-amd64")[1] == pathlib.Path("/boot/config-6.1.0-57-amd64")


def test_config_gz_preferred_and_absence_names_both_places(tmp_path):
    gz = tmp_path / "config.gz"
    gz.write_bytes(gzip.compress(b"CONFIG_FROM_PROC=y\n"))
    boot = tmp_path / "config-x"
    boot.write_text("CONFIG_FROM_BOOT=y\n")
    assert headers._read_config("x", (gz, boot)) == "CONFIG_FROM_PROC=y\n"
    with pytest.raises(headers.KernelHeadersError, match="config-missing.*linux-headers-x"):
        headers._read_config("x", (tmp_path / "none.gz", tmp_path / "config-missing"))


def test_python_limits_match_header():
    text = (sources.BPF_SRC / "ks_types.h").read_text()
    defines = dict(re.findall(r"#define (KS_\w+)\s+(\d+)\b", text))
    for name in ("KS_MAX_SPLITS", "KS_MAX_BACKENDS", "KS_SLOTS_LOG2", "KS_NAME_LEN",
                 "KS_SPLIT_NAME_LEN", "KS_KIND_LEN", "KS_SCHEMA_LEN", "KS_MAX_SPLIT_UIDS"):
        assert getattr(abi, name) == int(defines[name]), name
