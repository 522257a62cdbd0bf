"""What our rule comments say: the owner text, and the metadata `kernsplit show` reads back.

`show` must work from the kernel alone (agent stopped, config gone), so the entry rule of every
split port carries, in `-m comment` matches, everything the config said about it:

    kernsplit root=default/my-app ip=10.100.200.30 port=80 split=TrafficSplit/my-app-split
    kernsplit backend=my-app-v1 weight=900 share=9/10          (one comment per backend)

One comment per backend keeps each under the kernel's 255-character comment limit however many
backends a split has. Values never contain spaces (Kubernetes names, addresses, fractions), so a
comment is `kernsplit` followed by key=value words.
"""
from __future__ import annotations

from collections.abc import Iterable

from kernsplit.agent.model.resolved import BackendShare, RefusedShare, SplitPort, WeightedEndpoint

OWNER = "kernsplit"
REFUSED = "refuse"     # the `endpoint` of a refused share's slot
MAX_COMMENT = 255      # XT_MAX_COMMENT_LEN (256) minus the terminating NUL


def _words(**fields: object) -> str:
    text = " ".join([OWNER, *(f"{k}={v}" for k, v in fields.items())])
    return text[:MAX_COMMENT]


def root(sp: SplitPort) -> str:
    return _words(root=sp.root, ip=sp.cluster_ip, port=sp.port, split=f"{sp.split_kind}/{sp.split}")


def backend(b: BackendShare) -> str:
    if b.terminating:   # served by terminating endpoints, the last resort: `show` says so
        return _words(backend=b.service, weight=b.weight, share=b.share, terminating="yes")
    return _words(backend=b.service, weight=b.weight, share=b.share)


def endpoint(sp: SplitPort, we: WeightedEndpoint) -> str:
    # Names the backend so `show` can add this rule's counter to the right one, and backend+endpoint
    # identify the rule when a rewrite carries its counter over. Those come first: a truncated
    # comment (very long names) loses the informative tail, never the identity.
    return _words(backend=we.backend, endpoint=we.endpoint, share=we.share, root=f"{sp.root}:{sp.port}")


def refused(sp: SplitPort, share: RefusedShare) -> str:
    # Shaped like an endpoint's comment (`endpoint=refuse`), so counters are carried and counted the
    # same way: a refused share is a slot of its backend.
    return _words(backend=share.backend, endpoint=REFUSED, share=share.share, root=f"{sp.root}:{sp.port}")


def jump(purpose: str) -> str:
    return f"{OWNER}: {purpose}"


def parse(comment: str | None) -> dict[str, str] | None:
    """key=value fields of one of our metadata comments; None when it is not one."""
    if not comment:
        return None
    words = comment.split()
    if not words or words[0] != OWNER:
        return None
    fields = dict(w.split("=", 1) for w in words[1:] if "=" in w)
    return fields or None


def all_comments(args: Iterable[str]) -> list[str]:
    """Every `--comment` value of a rule (ours carry several)."""
    args = list(args)
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--comment"]

