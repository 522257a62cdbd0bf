"""EbpfDataplane: the Dataplane protocol over pinned BPF maps behind cgroup connect hooks."""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from agent.dataplane.base import ObservedBackend, ObservedSplit, SyncResult
from agent.dataplane.ebpf import loader, plan
from agent.dataplane.ebpf.maps import KernelMaps
from agent.model.resolved import SplitPort

DEFAULT_BPFFS = Path("/sys/fs/bpf/kernsplit")


class EbpfDataplane:
    """Programs and maps pinned under `bpffs`, programs attached to `cgroup` (cgroup v2 dir).

    The first sync compiles and pins (or adopts existing pins), attaches, then only map updates
    follow. `observe()`/`installed()` never compile or attach: they read the pins.
    """

    name = "ebpf"

    def __init__(self, cgroup: str | os.PathLike | None = None,
                 bpffs: str | os.PathLike | None = None):
        self.cgroup = Path(cgroup) if cgroup else None
        self.pins = loader.Pins(Path(bpffs) if bpffs else DEFAULT_BPFFS)
        self._maps: KernelMaps | None = None
        self._known: dict[plan.Addr, plan.Installed] | None = None   # what we last wrote
        # SplitPort -> image of the last sync: building 10,000 exact tables costs ~0.5 s, and a
        # one-split weight change must not pay for the 9,999 that did not change.
        self._image_cache: dict[tuple, tuple[SplitPort, plan.SplitImage]] = {}
        self.compile_seconds: float | None = None    # set when this instance compiled
        self.last_write_seconds = 0.0                 # time the last sync spent writing maps
        self.links_created = 0

    # --- Dataplane protocol ------------------------------------------------------------------

    def sync(self, desired: Sequence[SplitPort], *, full: bool = False) -> SyncResult:
        images = self._images(desired)         # validates before anything is touched
        maps = self._ready()
        if full or self._known is None:
            self._known = maps.installed()
        p = plan.plan(images, self._known)
        ops = list(p.ops)
        if full:
            ops += plan.orphan_ops(p.result, maps.slot_keys(), maps.meta_ids())
        start = time.perf_counter()
        try:
            maps.apply(ops)
        except BaseException:
            self._known = None                 # unsure what landed: re-read next time
            raise
        finally:
            self.last_write_seconds = time.perf_counter() - start
        self._known = p.result
        return SyncResult(written=p.written, removed=p.removed, unchanged=p.unchanged)

    def cleanup(self) -> None:
        self.close()
        loader.remove(self.pins)

    def installed(self) -> bool:
        return self.pins.map("ks_services").exists()

    def observe(self) -> list[ObservedSplit]:
        if not self.installed():
            return []
        maps = self._maps or KernelMaps(self.pins)
        try:
            out = []
            for key, inst in sorted(maps.installed().items()):
                meta = inst.image.meta
                counts = maps.counters(inst.split_id, len(meta.backends))
                out.append(ObservedSplit(
                    dataplane=self.name, namespace=meta.namespace, service=meta.service,
                    split=meta.split, cluster_ip=key.ip, port=key.port, refuse=not inst.image.slots,
                    backends=tuple(ObservedBackend(b.name, b.weight, b.share, n)
                                   for b, n in zip(meta.backends, counts))))
            return out
        finally:
            if maps is not self._maps:
                maps.close()

    # --- helpers -------------------------------------------------------------------------------

    def _images(self, desired: Sequence[SplitPort]) -> list[plan.SplitImage]:
        # Same object, or an equal one at the same address: reuse. Comparing is cheap;
        # hashing a SplitPort (all its Fractions) is not.
        cache = self._image_cache
        out = []
        for s in desired:
            hit = cache.get(s.key)
            out.append(hit[1] if hit is not None and (hit[0] is s or hit[0] == s) else plan.image(s))
        self._image_cache = {s.key: (s, img) for s, img in zip(desired, out)}
        return out

    def close(self) -> None:
        """Drop our fds (the pins keep programs, maps and attachments alive)."""
        if self._maps is not None:
            self._maps.close()
            self._maps = None
        self._known = None

    def program_ids(self) -> dict[str, int]:
        return {name: loader.prog_id(self.pins.prog(name)) for name in loader.PROGRAMS
                if self.pins.prog(name).exists()}

    def _ready(self) -> KernelMaps:
        if self._maps is not None:
            return self._maps
        loader.ensure_bpffs(self.pins.root)
        if not self.pins.complete():
            # A partial install (crash during the first load) is not adoptable: start clean.
            loader.remove(self.pins)
            self.compile_seconds = loader.compile_and_pin(self.pins)
        cgroup = self.cgroup or loader.cgroup2_root()
        self.links_created = loader.attach(self.pins, cgroup)
        self._maps = KernelMaps(self.pins)
        return self._maps
