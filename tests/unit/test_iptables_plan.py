"""The iptables planner and renderer, without a kernel: golden restore texts, structure, exact math.

Refresh the golden files after an intended change with KS_UPDATE_GOLDEN=1.
"""
from __future__ import annotations

import re
import shlex
from fractions import Fraction

import pytest

from kernsplit.agent.commands.show import as_table
from kernsplit.agent.dataplane.iptables import names, probability
from kernsplit.agent.dataplane.iptables.observe import observe_tables
from kernsplit.agent.dataplane.iptables.plan import plan
from kernsplit.agent.iptables.ruleset import Ruleset
from kernsplit.agent.iptables.saved import parse_save

from tests.fixtures import REFUSE, ROUTE, SCENARIOS, SEED, SEVENTY, TEN, assert_golden, split_port
from tests.fixtures import agent_render_full as render_full

CASES = {name: (list(sc.ports), sc.family) for name, sc in SCENARIOS.items()}


def as_saved(restore_text: str) -> str:
    """A full restore text as iptables-save prints it back: our jumps are inserted with
    `-I CHAIN 1` (into otherwise empty built-in chains here), saved as `-A CHAIN`."""
    return re.sub(r"^-I (\S+) 1 ", r"-A \1 ", restore_text, flags=re.M)


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_ruleset_matches_golden(case):
    ports, family = CASES[case]
    assert_golden(f"dataplane/{case}.golden", render_full(plan(ports, family)))


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_jump_target_exists_and_names_fit(case):
    ports, family = CASES[case]
    rs = plan(ports, family)
    builtin = {"nat": {"PREROUTING", "OUTPUT", "POSTROUTING"}, "filter": {"INPUT", "FORWARD", "OUTPUT"}}
    standard = {"DNAT", "REJECT", "RETURN", "ACCEPT", "MASQUERADE", "MARK"}
    for table in rs.tables:
        declared = {c.name for c in table.chains}
        for c in table.chains:
            assert c.name.startswith("KS-") and len(c.name) <= 28
            for r in c.rules:
                # a rule without target only carries show's metadata (first rule of a SVC chain)
                assert r.target in declared | standard or (r.target is None and r is c.rules[0]), (c.name, r)
                assert any(a.startswith("kernsplit") for a in r.args), "every rule carries our comment"
        for j in table.jumps:
            assert j.chain in builtin[table.name] and j.target in declared


def test_weight_zero_and_excluded_backends_get_no_rule():
    text = render_full(plan([SEVENTY]))
    assert "10.1.1.3" not in text
    assert "backend=c weight=0 share=0" in text   # still recorded for show


def _kernel_shares(rs: Ruleset) -> list[Fraction]:
    """Per-endpoint shares the kernel will realise, from the rendered probabilities."""
    svc = next(c for c in rs.table("nat").chains if c.name.startswith("KS-SVC-"))
    shares, left = [], Fraction(1)
    for r in svc.rules[1:]:    # the first rule holds metadata only
        if "--probability" in r.args:
            t = round(Fraction(r.args[r.args.index("--probability") + 1]) * probability.SCALE)
            p = Fraction(t, probability.SCALE)
        else:
            p = Fraction(1)
        shares.append(left * p)
        left -= left * p
    return shares


@pytest.mark.parametrize("sp", [SEED, SEVENTY, TEN, ROUTE], ids=["seed", "70-30-0", "ten", "route-refused-share"])
def test_probabilities_realise_exact_shares(sp):
    want = [c.share for c in sp.choices]
    got = _kernel_shares(plan([sp]))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert abs(g - w) <= Fraction(len(want), probability.SCALE)   # one 2**-31 step per rule at most


def test_conditional_probabilities_are_exact_fractions():
    ps = probability.conditional_probabilities([Fraction(7, 10), Fraction(2, 10), Fraction(1, 10)])
    assert ps == [Fraction(7, 10), Fraction(2, 3), Fraction(1)]
    assert probability.conditional_probabilities([Fraction(1, 10)] * 10)[3] == Fraction(1, 7)


def test_probability_thresholds_round_and_clamp():
    assert probability.threshold(Fraction(1, 2)) == 1 << 30
    assert probability.threshold(Fraction(1, 10**12)) == 1            # tiny weight never becomes "never"
    assert probability.threshold(Fraction(10**12 - 1, 10**12)) == (1 << 31) - 1
    # what iptables-save prints (%.11f of t/2**31) parses back to the same threshold
    for p in (Fraction(9, 10), Fraction(1, 3), Fraction(1, 7), Fraction(999_999, 1_000_000)):
        t = probability.threshold(p)
        assert round(float(probability.render(p)) * probability.SCALE) == t


def test_chain_names_do_not_depend_on_weights():
    a = split_port({"v1": 900, "v2": 100}, {"v1": ["10.1.0.1"], "v2": ["10.1.0.2"]})
    b = split_port({"v1": 0, "v2": 1000}, {"v1": ["10.1.0.1"], "v2": ["10.1.0.2"]})
    assert names.svc_chain(a) == names.svc_chain(b)


def test_one_chain_per_split_port_however_many_endpoints():
    # iptables-nft slows down with the number of chains, not rules: endpoints must not add chains
    # beyond the hairpin shards, one per last byte of an endpoint address (at most 256).
    rs = plan([SEED, SEVENTY, TEN])
    nat = rs.table("nat")
    last_bytes = sorted({int(we.endpoint.ip.rsplit(".", 1)[1]) for sp in (SEED, SEVENTY, TEN) for we in sp.endpoints})
    assert [c.name for c in nat.chains] == [names.SERVICES, *(names.svc_chain(sp) for sp in (SEED, SEVENTY, TEN)),
                                            names.HAIRPIN, *(names.hairpin_shard(n) for n in last_bytes)]
    dnats = [r for c in nat.chains for r in c.rules if r.target == "DNAT"]
    assert len(dnats) == len(SEED.endpoints) + len(SEVENTY.endpoints) + len(TEN.endpoints)


def test_observe_reads_metadata_and_counters_from_saved_text():
    text = render_full(plan([SEED, REFUSE]))
    saved = []
    for line in text.splitlines():   # pretend the kernel counted 7 connections on every DNAT rule
        saved.append(f"[7:420] {line}" if line.startswith("-A ") and "DNAT" in line else line)
    splits = {s.service: s for s in observe_tables(parse_save(as_saved("\n".join(saved))))}
    seed = splits["my-app"]
    assert (seed.namespace, seed.split, seed.cluster_ip, seed.port, seed.refuse) == \
        ("default", "my-app-split", "10.100.200.30", 80, False)
    assert [(b.service, b.weight, b.share, b.connections) for b in seed.backends] == \
        [("my-app-v1", 900, Fraction(9, 10), 21), ("my-app-v2", 100, Fraction(1, 10), 21)]
    assert splits["empty"].refuse and splits["empty"].backends[0].connections == 0


def test_observe_counts_a_refused_share_against_its_backend():
    text = render_full(plan([ROUTE]))
    saved = [f"[5:300] {line}" if line.startswith("-A KS-SVC-") and "endpoint=" in line else line
             for line in text.splitlines()]
    [split] = observe_tables(parse_save(as_saved("\n".join(saved))))
    assert not split.refuse
    assert [(b.service, b.share, b.connections, b.refused) for b in split.backends] == [
        ("v1", Fraction(3, 4), 5, False), ("gone", Fraction(1, 4), 5, True)]
    table = as_table(split)
    assert "(refused: cannot serve; its connections are reset)" in next(l for l in table.splitlines() if "gone" in l)


def test_show_says_when_terminating_endpoints_serve():
    sp = split_port({"v1": 1}, {"v1": ["10.1.4.1"]}, ip="10.100.200.36", service="t", split="s", terminating=["v1"])
    [split] = observe_tables(parse_save(as_saved(render_full(plan([sp])))))
    assert split.backends[0].terminating
    assert "(terminating endpoints: none is ready, the last resort)" in as_table(split)


def test_the_refused_slot_is_a_weighted_rule_like_a_dnat():
    svc = plan([ROUTE]).table("nat").chain(names.svc_chain(ROUTE))
    assert [r.target for r in svc.rules] == [None, "DNAT", names.REFUSE]
    assert svc.rules[1].args[svc.rules[1].args.index("--probability") + 1] == probability.render(Fraction(3, 4))


def test_comments_parse_back_as_shell_words():
    # The restore text must tokenise to the same args iptables-save will print back.
    text = render_full(plan([SEED]))
    line = next(l for l in text.splitlines() if l.startswith("-A KS-SVC-"))
    words = shlex.split(line)
    assert "kernsplit backend=my-app-v2 weight=100 share=1/10" in words
