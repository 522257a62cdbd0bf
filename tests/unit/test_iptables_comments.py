"""The rule-comment codec: what the planner writes is what show, counter carry-over and the
sync's bookkeeping read back, typed; a comment cut at the kernel's limit keeps its identity."""
from __future__ import annotations

from fractions import Fraction

import pytest

from kernsplit.agent.dataplane.iptables import comments
from kernsplit.agent.dataplane.iptables.comments import BackendComment, RootComment, SlotComment

CASES = [
    RootComment("default/my-app", "10.100.200.30", 80, "TrafficSplit/my-app-split"),
    RootComment("default/my-app", "fd00::30", 8080, "HTTPRoute/my-route"),
    BackendComment("my-app-v1", 900, Fraction(9, 10)),
    BackendComment("my-app-v3", 0, Fraction(0)),
    BackendComment("my-app-v2", 100, Fraction(1, 10), terminating=True),
    SlotComment("my-app-v1", "10.1.0.1:8080", Fraction(9, 20), "default/my-app:80"),
    SlotComment("my-app-v2", comments.REFUSED, Fraction(1, 10), "default/my-app:80"),
]


@pytest.mark.parametrize("value", CASES, ids=repr)
def test_round_trip(value):
    text = value.encode()
    assert text.startswith("kernsplit ") and len(text) <= comments.MAX_COMMENT
    assert comments.decode(text) == value
    assert comments.decode_rule(("-m", "comment", "--comment", text, "-j", "DNAT")) == [value]


def test_the_text_is_the_one_show_has_always_read():
    assert CASES[0].encode() == ("kernsplit root=default/my-app ip=10.100.200.30 port=80 "
                                 "split=TrafficSplit/my-app-split")
    assert CASES[4].encode() == "kernsplit backend=my-app-v2 weight=100 share=1/10 terminating=yes"
    assert CASES[6].refused and not CASES[5].refused


def test_a_comment_cut_at_the_limit_keeps_backend_and_endpoint():
    long = SlotComment("b" * 63, "10.1.0.1:8080", Fraction(1, 3), "n" * 63 + "/" + "s" * 150 + ":80")
    text = long.encode()
    assert len(text) == comments.MAX_COMMENT
    got = comments.decode(text)
    assert (got.backend, got.endpoint, got.share) == (long.backend, long.endpoint, long.share)


@pytest.mark.parametrize("text", [None, "", "kernsplit: hairpin", "kube-proxy backend=x", "kernsplit"])
def test_other_comments_are_not_ours(text):
    assert comments.decode(text) is None
