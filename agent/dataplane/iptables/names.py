"""Chain names: our prefix plus a stable hash, at most 28 characters (the iptables limit).

Names depend only on identity (family, address, port, protocol), never on weights: a weight change
rewrites a chain in place under the same name (and the dataplane carries its rules' counters over).
"""
from __future__ import annotations

import base64
import hashlib

from kernsplit.agent.iptables.ownership import JumpPlacement, Ownership
from kernsplit.agent.model.resolved import SplitPort

SERVICES = "KS-SERVICES"     # nat: one rule per split port -> its KS-SVC chain
REJECT = "KS-REJECT"         # filter: rejects connections nat marked as refused (one static rule)
REFUSE = "KS-REFUSE"         # nat: marks a refused connection and ends the nat walk (see `refuse`)
HAIRPIN = "KS-POSTROUTING"   # nat: masquerade connections DNATed back to their own source (hairpin)
HAIRPIN_SHARD = "KS-HAIRPIN-"  # nat: ... by the endpoint address's last byte (KS-HAIRPIN-00 .. -FF)
LEGACY_SEP = "KS-SEP-"       # per-endpoint chains of the earlier layout: never created any more


def _hash(text: str) -> str:
    # 16 base32 characters = 80 bits: collisions are not a practical concern (kube-proxy does the same).
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def _port_identity(sp: SplitPort) -> str:
    return f"{sp.family}/{sp.cluster_ip}/{sp.port}/{sp.protocol}"


def svc_chain(sp: SplitPort) -> str:
    return f"KS-SVC-{_hash(_port_identity(sp))}"


def is_ours(chain: str) -> bool:
    """Chains this dataplane owns. Narrower than the project-wide `KS-` prefix on purpose: other
    parts of kernsplit (proxy-init) may keep `KS-` chains in the same namespace.

    KS-SEP-* (per-endpoint chains of the earlier layout) are no longer planned but stay ours, so a
    sync over a kernel programmed by an older agent deletes them."""
    return chain in (SERVICES, REJECT, REFUSE, HAIRPIN) or chain.startswith(("KS-SVC-", HAIRPIN_SHARD, LEGACY_SEP))


def hairpin_shard(n: int) -> str:
    return f"{HAIRPIN_SHARD}{n:02X}"


# Ours: the chains above, in nat and filter; our jumps are the first rule of their built-in chain
# (on a node with kube-proxy, its `-j KUBE-SERVICES` would otherwise DNAT the root ClusterIP before
# a later jump of ours is reached, and a foreign `FORWARD -j ACCEPT` above KS-REJECT would turn a
# refusal into a hang).
OWNERSHIP = Ownership(is_ours, ("nat", "filter"), JumpPlacement.FIRST)
