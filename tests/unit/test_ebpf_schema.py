"""The schema fingerprint and the config entry (no kernel needed)."""
from __future__ import annotations

import shutil

import pytest

from kernsplit.agent.dataplane.ebpf import abi, plan, schema
from kernsplit.agent.dataplane.ebpf.sources import BPF_SRC


def test_fingerprint_is_stable_and_sized_for_the_map():
    assert schema.fingerprint() == schema.fingerprint()
    assert len(schema.fingerprint()) == abi.KS_SCHEMA_LEN


def test_any_change_to_a_bpf_source_changes_it(tmp_path):
    copy = tmp_path / "bpf"
    shutil.copytree(BPF_SRC, copy)
    assert schema.fingerprint(copy) == schema.fingerprint()
    header = copy / "ks_types.h"
    header.write_text(header.read_text().replace("#define KS_MAX_SPLIT_UIDS  8", "#define KS_MAX_SPLIT_UIDS  9"))
    assert schema.fingerprint(copy) != schema.fingerprint()


def test_the_python_mirrors_are_part_of_it():
    text = schema.abi_text()
    assert "ks_config" in text and "KS_MAX_BACKENDS" in text


def test_config_uids_sorted_deduplicated_and_validated():
    fp = schema.fingerprint()
    assert plan.config_image(fp, [2102, 0, 2102]).split_uids == (0, 2102)
    assert plan.config_image(fp).split_uids == ()
    with pytest.raises(ValueError, match="--split-uid: -1 is not a uid"):
        plan.config_image(fp, [-1])
    with pytest.raises(ValueError, match="at most 8"):
        plan.config_image(fp, range(9))
