"""Counter carrying across chain rewrites, without a kernel: which counters are read, how the
rewritten rules get them back, and which ones are lost (weight 0, removed endpoints)."""
from __future__ import annotations

from kernsplit.agent.dataplane.iptables import carry, names
from kernsplit.agent.dataplane.iptables.plan import plan
from kernsplit.agent.iptables.kinds import Family
from kernsplit.agent.iptables.saved import parse_save

from test_iptables_plan import as_saved, SEED, SEVENTY, split_port
from tests.fixtures import agent_diff as diff
from tests.fixtures import agent_owned as owned
from tests.fixtures import agent_render as render_changes
from tests.fixtures import agent_render_full as render_full

ENDPOINTS = {"my-app-v1": ["10.1.0.1", "10.1.0.2", "10.1.0.3"], "my-app-v2": ["10.1.0.4", "10.1.0.5", "10.1.0.6"]}


def _counted_kernel(*ports):
    """Parsed `iptables-save -c` after applying the plan, each DNAT rule having counted
    (last octet of its endpoint) connections, the metadata rule 21, entry rules 9."""
    lines = []
    for line in as_saved(render_full(plan(list(ports)))).splitlines():
        if line.startswith("-A ") and "--to-destination" in line:
            n = int(line.rsplit(":", 1)[0].rsplit(".", 1)[1])
            line = f"[{n}:{n * 60}] {line}"
        elif line.startswith("-A KS-SVC-") and " -j " not in line:
            line = f"[21:1260] {line}"
        elif line.startswith(f"-A {names.SERVICES} "):
            line = f"[9:540] {line}"
        elif line.startswith("-A "):
            line = f"[0:0] {line}"
        lines.append(line)
    return parse_save("\n".join(lines))


def test_weight_change_carries_counters_of_the_same_endpoints():
    saved = _counted_kernel(SEED, SEVENTY)
    have = owned(Family.V4, saved)
    fifty = split_port({"my-app-v1": 500, "my-app-v2": 500}, ENDPOINTS)
    changes = diff(plan([fifty, SEVENTY]), have)
    places = carry.rewritten(changes, have)
    assert places == [("nat", names.svc_chain(SEED))]          # only the chain being replaced is read
    text = render_changes(changes, carry.from_saved(saved, places))
    rules = [l for l in text.splitlines() if "-A " in l]
    for last in range(1, 7):
        [line] = [l for l in rules if f"10.1.0.{last}:8080" in l and "DNAT" in l]
        assert line.startswith(f"[{last}:{last * 60}] -A "), line
    assert any(l.startswith("[21:1260] -A ") and "weight=500" in l for l in rules)   # metadata rule
    assert "probability 0.16666666651" in text                  # the new weights are written


def test_weight_zero_endpoints_lose_their_counters():
    saved = _counted_kernel(SEED)
    have = owned(Family.V4, saved)
    rolled = split_port({"my-app-v1": 0, "my-app-v2": 1000}, ENDPOINTS)
    changes = diff(plan([rolled]), have)
    text = render_changes(changes, carry.from_saved(saved, carry.rewritten(changes, have)))
    assert "10.1.0.1:8080" not in text
    assert [l.split("]")[0] for l in text.splitlines() if "DNAT --to" in l] == ["[4:240", "[5:300", "[6:360"]


def test_new_chains_are_not_read_and_entry_rules_keep_their_counters():
    saved = _counted_kernel(SEED)
    have = owned(Family.V4, saved)
    changes = diff(plan([SEED, SEVENTY]), have)
    # The new split's SVC chain starts at zero: only the top chain (it gains a rule) is read.
    places = carry.rewritten(changes, have)
    assert places == [("nat", names.SERVICES)]
    text = render_changes(changes, carry.from_saved(saved, places))
    entry = [l for l in text.splitlines() if f"-A {names.SERVICES} " in l]
    assert entry[0].startswith("[9:540] ") and "10.100.200.30" in entry[0]
    assert entry[1].startswith("-A ") and "10.100.200.31" in entry[1]
    assert not any(l.startswith("[") for l in render_changes(changes, {}).splitlines())


def test_rule_listing_with_counters_parses():
    svc = names.svc_chain(SEED)
    text = (f"-N {svc}\n"
            f'-A {svc} -m comment --comment "kernsplit backend=my-app-v1 weight=900 share=9/10" -c 12 720\n'
            f'-A {svc} -p tcp -m comment --comment "kernsplit backend=my-app-v1 endpoint=10.1.0.1:8080 '
            f'share=3/10 root=default/my-app:80" -m statistic --mode random --probability 0.29999999981 '
            f"-c 7 420 -j DNAT --to-destination 10.1.0.1:8080\n")
    assert carry.from_listing("nat", svc, text) == {
        ("nat", svc, ("metadata",)): (12, 720),
        ("nat", svc, ("endpoint", "my-app-v1", "10.1.0.1:8080")): (7, 420)}


def test_rule_keys_ignore_weights_and_foreign_rules():
    a = plan([SEED]).table("nat").chain(names.svc_chain(SEED)).rules
    b = plan([split_port({"my-app-v1": 1, "my-app-v2": 1}, ENDPOINTS)]).table("nat").chain(names.svc_chain(SEED)).rules
    assert [carry.rule_key(r.args) for r in a] == [carry.rule_key(r.args) for r in b]
    assert a[1].args != b[1].args
    assert carry.rule_key(("-p", "tcp", "-j", "RETURN")) is None
