"""Chain names: our prefix plus a stable hash, at most 28 characters (the iptables limit).

Names depend only on identity (family, address, port, protocol; plus backend and endpoint for SEP
chains), never on weights: a weight change rewrites a chain in place under the same name, so the
per-endpoint packet counters `show` reads survive it.
"""
from __future__ import annotations

import base64
import hashlib

from agent.model.resolved import SplitPort, WeightedEndpoint

SERVICES = "KS-SERVICES"     # nat: one rule per split port -> its KS-SVC chain
REJECT = "KS-REJECT"         # filter: one REJECT rule per split port that must refuse
MAX_CHAIN = 28


def _hash(text: str) -> str:
    # 16 base32 characters = 80 bits: collisions are not a practical concern (kube-proxy does the same).
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def _port_identity(sp: SplitPort) -> str:
    return f"{sp.family}/{sp.cluster_ip}/{sp.port}/{sp.protocol}"


def svc_chain(sp: SplitPort) -> str:
    return f"KS-SVC-{_hash(_port_identity(sp))}"


def sep_chain(sp: SplitPort, we: WeightedEndpoint) -> str:
    return f"KS-SEP-{_hash(f'{_port_identity(sp)}/{we.backend}/{we.endpoint}')}"


def is_ours(chain: str) -> bool:
    """Chains this dataplane owns. Narrower than the project-wide `KS-` prefix on purpose: other
    parts of kernsplit (proxy-init) may keep `KS-` chains in the same namespace."""
    return chain in (SERVICES, REJECT) or chain.startswith(("KS-SVC-", "KS-SEP-"))
