"""Our rule comments as one typed codec: the owner text, and the metadata `kernsplit show` reads back.

`show` must work from the kernel alone (agent stopped, config gone), so the rules of every split
port carry, in `-m comment` matches, everything the config said about it:

    RootComment     kernsplit root=default/my-app ip=10.100.200.30 port=80 split=TrafficSplit/my-app-split
    BackendComment  kernsplit backend=my-app-v1 weight=900 share=9/10 [terminating=yes]   (one per backend)
    SlotComment     kernsplit backend=my-app-v1 endpoint=10.1.0.1:8080 share=9/10 root=default/my-app:80
                    (a refused share's slot: endpoint=refuse)

One comment per backend keeps each under the kernel's 255-character comment limit however many
backends a split has. Values never contain spaces (Kubernetes names, addresses, fractions), so a
comment is `kernsplit` followed by key=value words. Every reader (show, counter carry-over, the
sync's bookkeeping) decodes through `decode`/`decode_rule`; nothing else looks inside a comment.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

from kernsplit.agent.model.resolved import BackendShare, RefusedShare, SplitPort, WeightedEndpoint

OWNER = "kernsplit"
REFUSED = "refuse"     # the `endpoint` of a refused share's slot
MAX_COMMENT = 255      # XT_MAX_COMMENT_LEN (256) minus the terminating NUL


def _words(*fields: tuple[str, object]) -> str:
    text = " ".join([OWNER, *(f"{k}={v}" for k, v in fields)])
    return text[:MAX_COMMENT]


@dataclass(frozen=True)
class RootComment:
    """On a split port's entry rule: which root Service, address and split it is."""
    root: str            # namespace/service
    ip: str
    port: int
    split: str           # Kind/name

    def encode(self) -> str:
        return _words(("root", self.root), ("ip", self.ip), ("port", self.port), ("split", self.split))


@dataclass(frozen=True)
class BackendComment:
    """On the first rule of a KS-SVC chain, one per configured backend."""
    backend: str
    weight: int
    share: Fraction
    terminating: bool = False   # served by terminating endpoints, the last resort: `show` says so

    def encode(self) -> str:
        extra = (("terminating", "yes"),) if self.terminating else ()
        return _words(("backend", self.backend), ("weight", self.weight), ("share", self.share), *extra)


@dataclass(frozen=True)
class SlotComment:
    """On a slot rule (a DNAT, or a refused share). Backend and endpoint come first: a truncated
    comment (very long names) loses the informative tail, never the identity that `show` counts
    by and that a rewrite carries counters over with."""
    backend: str
    endpoint: str        # IP:PORT, or REFUSED
    share: Fraction
    root: str = ""       # namespace/service:port

    @property
    def refused(self) -> bool:
        return self.endpoint == REFUSED

    def encode(self) -> str:
        return _words(("backend", self.backend), ("endpoint", self.endpoint), ("share", self.share),
                      ("root", self.root))


Comment = RootComment | BackendComment | SlotComment


def root(sp: SplitPort) -> str:
    return RootComment(sp.root, sp.cluster_ip, sp.port, f"{sp.split_kind}/{sp.split}").encode()


def backend(b: BackendShare) -> str:
    return BackendComment(b.service, b.weight, b.share, b.terminating).encode()


def endpoint(sp: SplitPort, we: WeightedEndpoint) -> str:
    return SlotComment(we.backend, str(we.endpoint), we.share, f"{sp.root}:{sp.port}").encode()


def refused(sp: SplitPort, share: RefusedShare) -> str:
    # Shaped like an endpoint's comment, so counters are carried and counted the same way: a
    # refused share is a slot of its backend.
    return SlotComment(share.backend, REFUSED, share.share, f"{sp.root}:{sp.port}").encode()


def jump(purpose: str) -> str:
    return f"{OWNER}: {purpose}"


def _fraction(text: str) -> Fraction:
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):   # cut by the length limit
        return Fraction(0)


def _int(text: str) -> int:
    return int(text) if text.isdigit() else 0


def decode(text: str | None) -> Comment | None:
    """One comment of ours, typed; None when it is not one of our metadata comments. Fields cut
    off by the length limit read as empty (or 0)."""
    if not text:
        return None
    words = text.split()
    if not words or words[0] != OWNER:
        return None
    f = dict(w.split("=", 1) for w in words[1:] if "=" in w)
    if "backend" in f and "endpoint" in f:
        return SlotComment(f["backend"], f["endpoint"], _fraction(f.get("share", "0")), f.get("root", ""))
    if "backend" in f:
        return BackendComment(f["backend"], _int(f.get("weight", "")), _fraction(f.get("share", "0")),
                              f.get("terminating") == "yes")
    if "root" in f:
        return RootComment(f["root"], f.get("ip", ""), _int(f.get("port", "")), f.get("split", ""))
    return None


def decode_rule(args: Iterable[str]) -> list[Comment]:
    """Every comment of ours on one rule (its `--comment` values; ours carry several), typed."""
    args = list(args)
    found = (decode(args[i + 1]) for i, a in enumerate(args[:-1]) if a == "--comment")
    return [c for c in found if c is not None]
