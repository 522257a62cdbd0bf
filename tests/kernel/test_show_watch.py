"""`kernsplit show --watch`: after a rollout the RECENT column shows the new weights at once (shares
over the window, from counter deltas), while CONNS keeps the totals since install."""
from __future__ import annotations

import subprocess

import pytest

from test_agent_iptables_cli import KERNSPLIT, ROOT_IP, V1, V2, agent, config, split_yaml, topo  # noqa: F401
from kernsplit.agent.lab.timescale import scaled

pytestmark = pytest.mark.kernel


def _row(frame: str, backend: str) -> list[str]:
    return next(l for l in frame.splitlines() if l.strip().startswith(backend)).split()


def test_watch_shows_the_rollout_not_the_history(netns, topo, config):
    assert agent(netns, "--config", config, "--once").returncode == 0
    assert topo.connect(ROOT_IP, 80, n=100) == [0] * 100
    before = topo.accepted()
    assert before[V1] > 0
    # The rollout below must land between two frames: the interval is stretched with every other
    # wait on slow machines (an emulated CPU takes seconds to start the agent).
    interval = round(scaled(3))
    watch = subprocess.Popen([KERNSPLIT, "show", "--netns", netns, "--watch", "--interval", str(interval),
                              "--window", "60", "--count", "2"], stdout=subprocess.PIPE, text=True)
    try:
        first = [watch.stdout.readline()]           # the first frame is printed at once
        while not first[-1].strip().startswith("my-app-v2"):
            first.append(watch.stdout.readline())
        # Between the two frames: roll out to 0/100 and make 60 new connections.
        (config / "split.yaml").write_text(split_yaml("0m", "1000m"))
        assert agent(netns, "--config", config, "--once").returncode == 0
        assert topo.connect(ROOT_IP, 80, n=60) == [0] * 60
        rest, _ = watch.communicate(timeout=scaled(30))
    finally:
        watch.kill()
    assert watch.returncode == 0
    first_frame = "".join(first)
    assert "waiting for a second sample" in first_frame
    second = rest.split(f"Every {interval}s")[-1]
    v1, v2 = _row(second, "my-app-v1"), _row(second, "my-app-v2")
    # BACKEND WEIGHT DESIRED CONNS RATE RECENT [bar]
    assert v1[1:4] == ["0", "0.0%", "0"]            # weight 0: its rule (and counter) is gone
    assert v2[1:4] == ["1000", "100.0%", str(before[V2] + 60)]
    assert v2[5] == "100.0%"                        # recent share: the rollout, not the history
    assert v1[5] in ("0.0%", "-")
    assert f" {before[V2] + 60} connections, " in second    # the header keeps the total since install
