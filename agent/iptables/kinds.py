"""Value types that name an iptables installation: which backend (legacy or nft) and which address
family. Kept apart from the executor so planners can name a family without importing subprocess."""
from __future__ import annotations

import enum


class IptablesBackend(str, enum.Enum):
    """The kernel interface iptables drives: x_tables (legacy) or nf_tables (nft). Not to be confused
    with a split's backend Service (`agent.model.splits.Backend`)."""
    LEGACY = "legacy"
    NFT = "nft"


class Family(str, enum.Enum):
    V4 = "ipv4"
    V6 = "ipv6"
