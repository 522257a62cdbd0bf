"""The thin executor: read our rules back, diff them against the planner's, run one
iptables-restore per family (reading, diffing and rendering are the shared iptables core's).

Atomicity: each family is one `iptables-restore --noflush` transaction. When a later family fails,
the families already changed in this run are put back to what they held before (a second
transaction computed by the same planner), so a failed run leaves no half-applied interception.
"""
from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from kernsplit.agent.iptables import exec as ipt
from kernsplit.agent.iptables import nft_tables
from kernsplit.agent.iptables.exec import IptablesError
from kernsplit.agent.iptables.kinds import Family, IptablesBackend
from kernsplit.agent.iptables.diff import diff
from kernsplit.agent.iptables.ownership import owned
from kernsplit.agent.iptables.render import render
from kernsplit.agent.iptables.ruleset import Ruleset
from kernsplit.agent.iptables.saved import parse_save
from kernsplit.agent.netns import netns_path
from kernsplit.init import plan
from kernsplit.init.config import InitConfig
from kernsplit.init.namespace import has_ipv6

VERSION = {Family.V4: 4, Family.V6: 6}


@dataclass(frozen=True)
class FamilyPlan:
    family: Family
    backend: IptablesBackend
    backend_reason: str
    observed: Ruleset          # ours, as found before this run (what a roll-back restores)
    text: str | None           # iptables-restore input; None when the kernel already matches

    def command(self) -> str:
        return f"{ipt.binary('restore', self.backend, self.family)} --noflush"


def families(cfg: InitConfig, log: logging.Logger) -> list[Family]:
    if cfg.ipv6 is not None:
        return [Family.V4, Family.V6] if cfg.ipv6 else [Family.V4]
    try:
        six = has_ipv6(cfg.netns)
    except OSError as exc:     # cannot enter the namespace (e.g. --simulate without root)
        log.warning("cannot tell whether the namespace has IPv6 (%s); IPv6 rules left out", exc)
        return [Family.V4]
    log.info("IPv6 %s: %s", "enabled" if six else "disabled",
             "an interface other than lo has an IPv6 address" if six else "no IPv6 address besides ::1")
    return [Family.V4, Family.V6] if six else [Family.V4]


def _plain_backend(binary: str | None) -> tuple[IptablesBackend, str]:
    """--iptables-mode plain: whatever backend the distribution's `iptables` binary uses."""
    tool = binary or shutil.which("iptables") or "iptables"
    try:
        out = subprocess.run([tool, "-V"], capture_output=True, text=True, check=False).stdout
    except OSError:
        out = ""
    if "nf_tables" in out:
        return IptablesBackend.NFT, f"plain mode: {tool} uses nf_tables"
    return IptablesBackend.LEGACY, f"plain mode: {tool} is legacy"


def resolve_backend(cfg: InitConfig, family: Family, firewall_bin: str | None = None) -> tuple[IptablesBackend, str]:
    if cfg.iptables_mode == "legacy":
        return IptablesBackend.LEGACY, "--iptables-mode legacy"
    if cfg.iptables_mode == "nft":
        return IptablesBackend.NFT, "--iptables-mode nft"
    if cfg.iptables_mode == "plain":
        return _plain_backend(firewall_bin)
    path = netns_path(cfg.netns)
    if path is not None and not path.exists():
        # Only --simulate gets here (the CLI refuses a missing namespace otherwise): there is no
        # namespace to detect from, so plan for the backend a fresh namespace would get.
        return IptablesBackend.NFT, f"netns {cfg.netns} is not on this host: planning for nft, as in a fresh namespace"
    return ipt.detect_backend(cfg.netns, family)


def read_ours(netns, backend: IptablesBackend, family: Family) -> Ruleset:
    # No `-t nat`: with the legacy backend that would instantiate the nat table in the namespace
    # (changing what `iptables-save` shows) just by looking.
    return owned(plan.OWNERSHIP, family, parse_save(ipt.save(netns, backend, family)))


def restore_text(desired: Ruleset | None, observed: Ruleset) -> str | None:
    """What turns `observed` into `desired` (None: nothing of ours); None when nothing is to do."""
    want = desired if desired is not None else Ruleset(observed.family, ())
    return render(diff(want, observed, plan.OWNERSHIP.jumps)) or None


def make_plans(cfg: InitConfig, fams: Sequence[Family], log: logging.Logger, *, cleanup: bool = False,
               firewall_bin: str | None = None, tolerate_unreadable: bool = False) -> list[FamilyPlan]:
    plans = []
    for family in fams:
        for backend, reason in _backends(cfg, family, cleanup, firewall_bin):
            plans.append(_plan_one(cfg, family, backend, reason, log, cleanup, tolerate_unreadable))
            if not cleanup:
                plans += _other_backend_leftovers(cfg, family, backend, log)
    return plans


def _other_backend_leftovers(cfg: InitConfig, family: Family, chosen: IptablesBackend, log: logging.Logger) -> list[FamilyPlan]:
    """Our rules left in the other backend by an earlier run (e.g. --iptables-mode changed): both
    would apply, so converging means removing them, after the new rules are in place."""
    other = IptablesBackend.NFT if chosen is IptablesBackend.LEGACY else IptablesBackend.LEGACY
    try:
        observed = read_ours(cfg.netns, other, family)
    except IptablesError:
        return []
    text = restore_text(None, observed)
    if text is None:
        return []
    log.info("%s: removing our earlier rules from iptables-%s", family.value, other.value)
    return [FamilyPlan(family, other, f"leftovers of an earlier run in iptables-{other.value}", observed, text)]


def _backends(cfg: InitConfig, family: Family, cleanup: bool, firewall_bin: str | None):
    if cleanup and cfg.iptables_mode == "auto":
        # Our rules may sit in either backend (e.g. applied before foreign legacy rules appeared):
        # cleanup looks in both rather than guess.
        return [(IptablesBackend.LEGACY, "cleanup looks at both backends"), (IptablesBackend.NFT, "cleanup looks at both backends")]
    return [resolve_backend(cfg, family, firewall_bin)]


def _plan_one(cfg: InitConfig, family: Family, backend: IptablesBackend, reason: str, log: logging.Logger,
              cleanup: bool, tolerate_unreadable: bool) -> FamilyPlan:
    log.info("%s: using iptables-%s (%s)", family.value, backend.value, reason,
             extra={"family": family.value, "backend": backend.value})
    try:
        observed = read_ours(cfg.netns, backend, family)
    except IptablesError as exc:
        if not tolerate_unreadable:
            raise
        log.warning("%s: cannot read the current rules (%s); planning against an empty table",
                    family.value, exc)
        observed = Ruleset(family, ())
    desired = None if cleanup else plan.desired_ruleset(cfg, VERSION[family])
    return FamilyPlan(family, backend, reason, observed, restore_text(desired, observed))


def _restore(cfg: InitConfig, p: FamilyPlan, text: str) -> None:
    ipt.restore(cfg.netns, p.backend, p.family, text, noflush=True, wait=cfg.iptables_wait)


def execute(cfg: InitConfig, plans: Sequence[FamilyPlan], log: logging.Logger) -> int:
    """Apply the plans in order; on failure roll the already changed families back, then raise.
    Returns how many families were changed."""
    done: list[FamilyPlan] = []
    for p in plans:
        if p.text is None:
            log.info("%s: rules already in place, nothing changed", p.family.value,
                     extra={"family": p.family.value, "changed": False})
            continue
        try:
            _restore(cfg, p, p.text)
        except IptablesError:
            _roll_back(cfg, done, log)
            raise
        done.append(p)
        log.info("%s: applied with one %s", p.family.value, p.command(),
                 extra={"family": p.family.value, "changed": True})
    return len(done)


def delete_empty_tables(cfg: InitConfig, plans: Sequence[FamilyPlan]) -> None:
    """After --cleanup: the nft tables we removed rules from, when nothing else is left in them
    (iptables-nft created them for our rules; legacy tables stay, the kernel keeps them)."""
    for p in plans:
        if p.backend is IptablesBackend.NFT and p.text is not None:
            nft_tables.delete_if_empty(cfg.netns, p.family, [t.name for t in p.observed.tables])


def _roll_back(cfg: InitConfig, done: Sequence[FamilyPlan], log: logging.Logger) -> None:
    for p in reversed(done):
        try:
            now = read_ours(cfg.netns, p.backend, p.family)
            text = restore_text(p.observed, now)
            if text is not None:
                _restore(cfg, p, text)
            log.warning("%s: rolled back to the rules in place before this run", p.family.value)
        except IptablesError as exc:
            log.error("%s: roll-back failed, rules of this run may remain: %s", p.family.value, exc)


# --cleanup removes ours from both families, whatever --ipv6 says: leftovers must go.
CLEANUP_FAMILIES = (Family.V4, Family.V6)
