"""Adoption checks the schema fingerprint: an install built from other bpf/ sources (an older or
newer agent) is replaced, programs swapped in place under the live links, while connects keep
landing on backends."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.fixtures import assert_shares, program_ids
from tests.fixtures import split_port
from tests.fixtures import lab, labels, make  # noqa: F401 - `lab` is a fixture
from kernsplit.agent.lab.timescale import scaled

pytestmark = [pytest.mark.kernel, pytest.mark.bpf]

# Connects from the cgroup in a loop until stdin closes; says "going" after the first answer.
LOOP = r"""
import ctypes, json, os, socket, sys, threading
from kernsplit.agent.lab.timescale import scaled
cgroup, netns, host, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
open(os.path.join(cgroup, "cgroup.procs"), "w").write(str(os.getpid()))
fd = os.open(netns, os.O_RDONLY)
assert ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) == 0
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
out = []
while not stop.is_set():
    s = socket.socket()
    s.settimeout(scaled(2))
    try:
        s.connect((host, port))
        out.append({"label": s.recv(64).decode()})
    except OSError as e:
        out.append({"error": e.errno})
    finally:
        s.close()
    if len(out) == 1:
        print("going", flush=True)
print(json.dumps(out))
"""


def attached_ids(cgroup) -> set[int]:
    out = subprocess.run(["bpftool", "-j", "cgroup", "show", str(cgroup)], capture_output=True,
                         text=True, check=True).stdout
    return {p["id"] for p in json.loads(out.strip() or "[]")}


def fake_other_schema(pins, how: str) -> None:
    from kernsplit.agent.dataplane.ebpf import plan
    from kernsplit.agent.dataplane.ebpf.maps import KernelMaps
    if how == "other fingerprint":
        maps = KernelMaps(pins)
        maps.write_config(plan.ConfigImage(b"\x01" * 32, ()))
        maps.close()
    else:                       # an install from before the fingerprint: no ks_config map at all
        pins.map("ks_config").unlink()


@pytest.mark.parametrize("how", ["other fingerprint", "no config map"])
def test_install_of_another_schema_is_replaced_without_failing_a_connect(lab, how, caplog):
    from kernsplit.agent.dataplane.ebpf.maps import installed_schema
    lab.listen("10.1.0.1", 8080, "v1")
    lab.listen("10.1.0.2", 8080, "v2")
    desired = [split_port({"my-app-v1": 1, "my-app-v2": 1}, {"my-app-v1": [("10.1.0.1", 8080)], "my-app-v2": [("10.1.0.2", 8080)]}, ip="10.100.200.30", port=80)]
    old = make(lab)
    old.sync(desired)
    old_ids = set(program_ids(old).values())
    old.close()
    fake_other_schema(old.pins, how)

    # Connects in a loop from the cgroup while the new agent replaces the install.
    client = subprocess.Popen([sys.executable, "-c", LOOP, str(lab.cgroup), lab.netns, "10.100.200.30", "80"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == "going"
        new = make(lab)
        r = new.sync(desired)
        time.sleep(0.05)                    # a few connects on the new programs too
    finally:
        out, err = client.communicate(input="", timeout=scaled(60))
    assert client.returncode == 0, err
    results = json.loads(out)

    assert new.replaced and new.compile_seconds is not None
    assert "built from another schema" in caplog.text
    assert (r.written, r.removed, r.unchanged) == (0, 0, 1)       # filled before it went live
    assert new.links_created == 0                                  # same links, new programs
    new_ids = set(program_ids(new).values())
    assert attached_ids(lab.cgroup) == new_ids and not new_ids & old_ids
    assert installed_schema(new.pins) == new.config.schema
    assert not new.pins.staging().root.exists()
    assert len(results) > 20                                       # the replacement happened mid-loop
    assert_shares(labels(results), {"v1": 1, "v2": 1})            # by weight, and no connect failed
    # And the next restart simply adopts.
    new.close()
    again = make(lab)
    assert again.sync(desired).unchanged == 1 and not again.replaced and again.compile_seconds is None
    again.close()
