"""Partial sync planning (kube-proxy style), without a kernel: only changed chains are written."""
from __future__ import annotations

from kernsplit.agent.dataplane.iptables import names
from kernsplit.agent.dataplane.iptables.plan import plan
from kernsplit.agent.iptables.kinds import Family
from kernsplit.agent.iptables.ruleset import Ruleset
from kernsplit.agent.iptables.saved import parse_save

from test_iptables_plan import as_saved, REFUSE, SEED, SEVENTY, split_port
from tests.fixtures import agent_diff as diff
from tests.fixtures import agent_owned as owned
from tests.fixtures import agent_render as render_changes
from tests.fixtures import agent_render_full as render_full


def _kernel_after(*ports) -> Ruleset:
    """What iptables-save would show after applying the full plan (plus a foreign chain)."""
    text = as_saved(render_full(plan(list(ports)))).replace("*nat\n", "*nat\n:FOREIGN - [0:0]\n-A FOREIGN -j RETURN\n")
    return owned(Family.V4, parse_save(text))


def test_unchanged_config_writes_nothing():
    have = _kernel_after(SEED, SEVENTY, REFUSE)
    changes = diff(plan([SEED, SEVENTY, REFUSE]), have)
    assert changes.empty and render_changes(changes) == ""


def test_weight_change_rewrites_only_that_service_chain():
    have = _kernel_after(SEED, SEVENTY)
    rolled = split_port({"my-app-v1": 0, "my-app-v2": 1000},
                        {"my-app-v1": ["10.1.0.1", "10.1.0.2", "10.1.0.3"],
                         "my-app-v2": ["10.1.0.4", "10.1.0.5", "10.1.0.6"]})
    changes = diff(plan([rolled, SEVENTY]), have)
    text = render_changes(changes)
    svc_seed, svc_70 = names.svc_chain(SEED), names.svc_chain(SEVENTY)
    # only the seed's SVC chain (weights, DNATs and backend metadata live there), and the hairpin
    # shards of v1's endpoints, which are no DNAT target any more: 10.1.0.1 and .2 share theirs
    # with SEVENTY's 10.1.1.1 and .2; 10.1.0.3's shard (shared with 10.1.1.3 of SEVENTY's
    # weight-0 backend, no target either) goes, so the dispatcher changes too
    assert changes.written() == {svc_seed, names.HAIRPIN, names.hairpin_shard(1), names.hairpin_shard(2)}
    assert changes.tables[0].delete == (names.hairpin_shard(3),)
    assert svc_70 not in text and names.SERVICES not in text
    assert not changes.tables[0].add_jumps
    assert "10.1.0.1:8080" not in text and "10.1.0.4:8080" in text      # v1 at weight 0: no rule
    assert "-s 10.1.0.1/32" not in text and "-s 10.1.1.1/32 -d 10.1.1.1/32" in text
    assert "10.1.0.4/32" not in text                 # v2's shards did not change: not written


def test_weight_change_between_nonzero_weights_rewrites_only_the_service_chain():
    have = _kernel_after(SEED, SEVENTY)
    half = split_port({"my-app-v1": 500, "my-app-v2": 500},
                      {"my-app-v1": ["10.1.0.1", "10.1.0.2", "10.1.0.3"],
                       "my-app-v2": ["10.1.0.4", "10.1.0.5", "10.1.0.6"]})
    assert diff(plan([half, SEVENTY]), have).written() == {names.svc_chain(SEED)}


def test_hairpin_rule_per_distinct_endpoint_ip_of_the_family():
    shared = split_port({"a": 1}, {"a": ["10.1.0.1", "10.1.0.9"]}, ip="10.100.200.50", service="other")
    nat = plan([SEED, shared, REFUSE]).table("nat")
    hairpin = nat.chain(names.HAIRPIN).rules
    assert "RETURN" in hairpin[0].args and "DNAT" in hairpin[0].args            # non-DNATed leave first
    # then one jump per last byte of an endpoint address, to the shard holding those addresses
    assert [(r.args[1], r.target) for r in hairpin[1:]] == [
        (f"0.0.0.{i}/0.0.0.255", names.hairpin_shard(i)) for i in (1, 2, 3, 4, 5, 6, 9)]
    masquerades = [r for i in (1, 2, 3, 4, 5, 6, 9) for r in nat.chain(names.hairpin_shard(i)).rules]
    assert [r.args[1] for r in masquerades] == [f"10.1.0.{i}/32" for i in (1, 2, 3, 4, 5, 6, 9)]   # 10.1.0.1 once
    assert all(r.args[1] == r.args[3] and r.target == "MASQUERADE" for r in masquerades)
    assert plan([REFUSE]).table("nat").chain(names.HAIRPIN).rules == (hairpin[0],)   # nothing DNATed, no rule


def test_buried_jump_is_moved_back_to_the_top_in_one_change():
    text = as_saved(render_full(plan([SEED, REFUSE])))
    text = text.replace("*nat\n", "*nat\n:KUBE-SERVICES - [0:0]\n-A OUTPUT -j KUBE-SERVICES\n", 1)
    have = owned(Family.V4, parse_save(text))
    assert [j.chain for j in have.table("nat").buried] == ["OUTPUT"]
    changes = diff(plan([SEED, REFUSE]), have)
    out = render_changes(changes)
    assert out.splitlines()[1:] == [
        '-D OUTPUT -m comment --comment "kernsplit: split service connections" -j KS-SERVICES',
        '-I OUTPUT 1 -m comment --comment "kernsplit: split service connections" -j KS-SERVICES',
        "COMMIT"]
    assert "KUBE-SERVICES -" not in out and "filter" not in out
    assert "FOREIGN" not in text


def test_chains_of_the_earlier_sep_layout_are_ours_and_removed():
    old = ("*nat\n:KS-SERVICES - [0:0]\n:KS-SVC-A - [0:0]\n:KS-SEP-B - [0:0]\n"
           "-A KS-SVC-A -j KS-SEP-B\n-A KS-SEP-B -p tcp -j DNAT --to-destination 10.1.0.1:8080\nCOMMIT\n")
    changes = diff(plan([SEED]), owned(Family.V4, parse_save(old)))
    nat = next(t for t in changes.tables if t.name == "nat")
    assert set(nat.delete) == {"KS-SVC-A", "KS-SEP-B"}


def test_removed_split_deletes_its_chains_and_jumps_when_nothing_is_left():
    have = _kernel_after(SEED, REFUSE)
    text = render_changes(diff(plan([SEED]), have))
    assert f"-X {names.svc_chain(REFUSE)}" in text and f"-X {names.REFUSE}" in text
    assert "-X KS-REJECT" in text                    # nothing refuses any more: the reject rule goes
    assert text.index("*nat") < text.index("*filter")     # after the last nat rule that marked
    everything = render_changes(diff(plan([]), have))
    assert all(f"-X {c}" in everything for c in (names.SERVICES, names.REJECT, names.REFUSE, names.svc_chain(SEED)))
    assert "-D PREROUTING" in everything and "FOREIGN" not in everything


def test_each_commit_alone_is_safe_the_filter_reject_comes_before_nat_marks_and_goes_after():
    """A restore cut between tables must never leave nat marking connections that nothing rejects."""
    first = render_changes(diff(plan([SEED, REFUSE]), Ruleset(Family.V4, ())))
    assert first.index("*filter") < first.index("*nat")
    last = render_changes(diff(plan([]), _kernel_after(SEED, REFUSE)))
    assert last.index("*nat") < last.index("*filter")


def test_a_served_refused_change_rewrites_nat_only_while_another_port_refuses():
    served = split_port({"a": 1}, {"a": ["10.1.0.9"]}, ip="10.100.200.33", service="empty")
    other = split_port({"gone": 1}, {}, ip="10.100.200.35", service="other")
    for before, after in ((served, REFUSE), (REFUSE, served)):
        text = render_changes(diff(plan([SEED, other, after]), _kernel_after(SEED, other, before)))
        assert text.startswith("*nat\n") and "*filter" not in text, text


def test_the_first_refusal_writes_filter_first_and_the_last_removes_it_after_nat():
    served = split_port({"a": 1}, {"a": ["10.1.0.9"]}, ip="10.100.200.33", service="empty")
    first = render_changes(diff(plan([SEED, REFUSE]), _kernel_after(SEED, served)))
    assert first.index("*filter") < first.index("*nat")
    last = render_changes(diff(plan([SEED, served]), _kernel_after(SEED, REFUSE)))
    assert last.index("*nat") < last.index("*filter")


def test_missing_jump_and_edited_rule_are_repaired():
    have_text = as_saved(render_full(plan([SEED])))
    lines = have_text.splitlines()
    lines = [l for l in lines if not l.startswith("-A PREROUTING")]            # jump deleted by hand
    victim = next(i for i, l in enumerate(lines) if l.startswith(f"-A {names.svc_chain(SEED)}"))
    del lines[victim]                                                          # one weighted rule deleted
    changes = diff(plan([SEED]), owned(Family.V4, parse_save("\n".join(lines))))
    assert changes.written() == {names.svc_chain(SEED)}
    assert [j.chain for j in changes.tables[0].add_jumps] == ["PREROUTING"]


def test_foreign_ks_chains_are_not_ours():
    text = "*nat\n:KS-PROXY-OUTPUT - [0:0]\n-A OUTPUT -j KS-PROXY-OUTPUT\nCOMMIT\n"
    assert owned(Family.V4, parse_save(text)).tables == ()
