"""Deleting the nf_tables tables that iptables-nft created for our rules, once they are empty.

iptables-nft creates a table, and each base chain, the first time a rule needs it, and never
removes them: after a cleanup an empty `nat` (or `filter`) table would remain in a namespace that
had none. A table is deleted only when nothing but empty base chains with iptables' names and an
ACCEPT policy is left in it (what iptables-nft makes for a rule of ours); a table holding anything
else (a rule, a foreign chain, a set, a DROP policy) is left alone. The legacy backend cannot do
this: the kernel keeps x_tables tables once a namespace has used them.

The deletion is one `nft -f` transaction that deletes each base chain and then the table: when a
rule has been added to one of those chains since they were listed, the kernel refuses to delete
that chain and the whole transaction changes nothing.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Iterable, Mapping

from kernsplit.agent.iptables.kinds import Family
from kernsplit.agent.netns import wrap_command

log = logging.getLogger("kernsplit.iptables")

NFT_FAMILY = {Family.V4: "ip", Family.V6: "ip6"}
BUILTIN_CHAINS = {"nat": frozenset({"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"}),
                  "filter": frozenset({"INPUT", "FORWARD", "OUTPUT"})}


def leftover_chains(listing: Mapping, table: str) -> tuple[str, ...] | None:
    """The base chains of `table` (from `nft -j list table`) when nothing else is in it, each of
    them empty with an ACCEPT policy; None when the table holds anything more. Pure."""
    chains = []
    items = [kind_body for item in listing.get("nftables", ()) for kind_body in item.items()]
    for kind, body in items:
        if kind == "metainfo" or (kind == "table" and not body.get("flags")):
            continue
        if kind != "chain" or "hook" not in body or body.get("policy") != "accept" \
                or body.get("name") not in BUILTIN_CHAINS.get(table, ()):
            return None          # a rule, a chain of someone's, a set, a flowtable, a DROP policy ...
        chains.append(body["name"])
    return tuple(chains)


def deletion(family: Family, table: str, chains: Iterable[str]) -> str:
    """`nft -f` input deleting the (empty) base chains, then the table. Pure."""
    fam = NFT_FAMILY[family]
    return "".join([*(f"delete chain {fam} {table} {c}\n" for c in chains), f"delete table {fam} {table}\n"])


def _nft(netns: str | os.PathLike | None, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(wrap_command(["nft", *args], netns), input=stdin, capture_output=True, text=True,
                          check=False)


def delete_if_empty(netns: str | os.PathLike | None, family: Family, tables: Iterable[str]) -> list[str]:
    """Delete each of `tables` (of the nft backend, in `family`) that holds nothing but empty
    default base chains; returns the names deleted. Never raises: a table that stays is logged."""
    deleted = []
    for table in tables:
        try:
            listed = _nft(netns, ["-j", "list", "table", NFT_FAMILY[family], table])
        except FileNotFoundError:
            log.warning("nft not found: the %s %s table stays, possibly empty (install nftables)",
                        family.value, table)
            return deleted
        if listed.returncode != 0:           # no such table: nothing to do
            continue
        chains = leftover_chains(json.loads(listed.stdout), table)
        if chains is None:
            log.info("%s %s table kept: it holds rules or chains of others", family.value, table)
            continue
        done = _nft(netns, ["-f", "-"], stdin=deletion(family, table, chains))
        if done.returncode != 0:
            log.info("%s %s table kept: %s", family.value, table, done.stderr.strip())
            continue
        log.info("deleted the %s %s table (nft), empty once our rules were removed", family.value, table)
        deleted.append(table)
    return deleted
