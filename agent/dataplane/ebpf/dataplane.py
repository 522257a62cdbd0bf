"""EbpfDataplane: the Dataplane protocol over pinned BPF maps behind cgroup connect hooks."""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from kernsplit.agent import mounts
from kernsplit.agent.dataplane.base import Desired, ObservedBackend, ObservedSplit, PortKey, SyncResult, by_key
from kernsplit.agent.dataplane.ebpf import build, links, pins, plan, preview, schema
from kernsplit.agent.dataplane.ebpf.maps import KernelMaps, carry, installed_schema
from kernsplit.agent.model.resolved import SplitPort

DEFAULT_BPFFS = Path("/sys/fs/bpf/kernsplit")

log = logging.getLogger("kernsplit.agent.ebpf")


class EbpfDataplane:
    """Programs and maps pinned under `bpffs`, programs attached to `cgroup` (cgroup v2 dir).

    The first sync compiles and pins (or adopts existing pins built from the same schema;
    replaces an install of another schema), attaches, then only map updates follow.
    `observe()`/`installed()` never compile or attach: they read the pins.

    `split_uids`: when given, only connect()s made by these uids (the mesh proxy, e.g. 2102) are
    rewritten; every other connect passes unchanged, so a meshed app's connection reaches its
    proxy with the ClusterIP as SO_ORIGINAL_DST and the proxy's own connect is split. Empty
    (default): every connect is split. Stored in the pinned ks_config map, no recompilation.

    `interception`: also attach the interception programs (proxy-init --mode ebpf registers pods
    with them); they are loaded and pinned either way, so turning it on needs no recompilation.

    A split port that does not fit the maps is skipped (the kernel keeps its previous state for
    that address, if any), logged as an error, and listed in `rejected` after each sync.

    A full sync also verifies what the maps hang on: every map and program pin (one removed is
    pinned again from the fd this agent holds, so the object and its counters stay the same) and
    every link (missing, detached, or on another cgroup, as after the cgroup was removed and
    recreated: attached again). Each repair is logged at warning level and listed in
    `SyncResult.repaired`. A start that finds a map or program pin of its own schema gone (no
    fd left to pin it from) builds a new install beside the old one, copies every map's entries
    over, counters included, and swaps the programs in place.
    """

    name = "ebpf"

    def __init__(self, cgroup: str | os.PathLike | None = None,
                 bpffs: str | os.PathLike | None = None, split_uids: Iterable[int] = (),
                 interception: bool = False):
        self.cgroup = Path(cgroup) if cgroup else None
        self.interception = interception
        self.pins = pins.Pins(Path(bpffs) if bpffs else DEFAULT_BPFFS)
        self.config = plan.config_image(schema.fingerprint(), split_uids)
        self.rejected: list[str] = []                 # messages of the last sync's skipped splits
        self.replaced = False                         # this instance replaced another schema's install
        self._maps: KernelMaps | None = None
        self._known: dict[plan.Addr, plan.Installed] | None = None   # what we last wrote
        # The image of every desired split port, by key, and the ones that do not fit: a sync
        # re-images only the split ports the caller says changed (10,000 exact tables take ~0.5 s).
        self._images: dict[PortKey, plan.SplitImage] = {}
        self._rejected: dict[PortKey, plan.Rejected] = {}
        self.compile_seconds: float | None = None    # set when this instance compiled
        self.last_write_seconds = 0.0                 # time the last sync spent writing maps
        self.links_created = 0
        self._progs: dict[Path, int] = {}            # pin -> our fd, to pin a program again
        self._started: list[pins.Repair] = []      # repairs made by the start (`_ready`)

    # --- Dataplane protocol ------------------------------------------------------------------

    def sync(self, desired: Desired, *, full: bool = False, changed: frozenset[PortKey] | None = None) -> SyncResult:
        desired = by_key(desired)
        scope = self._reimage(desired, changed)      # validates before anything is touched
        self.rejected = [r.message for r in self._rejected.values()]
        started = self._maps is None
        maps = self._ready(self._images.values())     # a view: read only on a first install
        if full or self._known is None:
            self._known, scope = maps.read_all(), None
            if maps.config() != self.config:     # drift, or another agent's --split-uid
                maps.write_config(self.config)
        keep = [r.key for r in self._rejected.values()]
        if scope is None:
            p = plan.plan(self._images.values(), self._known, keep=keep)
        else:
            p = plan.plan([self._images[k] for k in scope if k in self._images], self._known, keep=keep,
                          only=[plan.address_of_key(k) for k in scope])
        ops = plan.with_orphans(p, maps.slot_keys(), maps.meta_ids()) if full else list(p.ops)
        start = time.perf_counter()
        try:
            maps.apply(ops)
        except BaseException:
            self._known = None                 # unsure what landed: re-read next time
            raise
        finally:
            self.last_write_seconds = time.perf_counter() - start
        self._known = p.applied_to(self._known, partial=scope is not None)
        unchanged = p.unchanged if scope is None else len(self._images) - p.written
        if started:                        # the start verified (and repaired) everything itself
            repaired, self._started = self._started, []
        else:
            repaired = self._repair() if full else []
        return SyncResult(written=p.written, removed=p.removed, unchanged=unchanged,
                          repaired=tuple(r.metric for r in repaired))

    def _repair(self) -> list[pins.Repair]:
        """Verify the pins and the attachments under the maps (a full sync's second half), repair
        what is broken, and log each repair."""
        assert self._maps is not None
        found = pins.repin(self._maps.held(), "map pin") + pins.repin(self._progs, "program pin")
        found += links.attach(self.pins, self._cgroup(), self.interception)
        self._log_repairs(found)
        return found

    def _log_repairs(self, repairs: Iterable[pins.Repair]) -> None:
        for r in repairs:
            log.warning("ebpf: repaired %s", r, extra={"dataplane": self.name, "repaired": r.kind,
                                                     "object": r.name})

    def _cgroup(self) -> Path:
        return self.cgroup or mounts.cgroup2()

    def _reimage(self, desired: Mapping[PortKey, SplitPort], changed: frozenset[PortKey] | None
                 ) -> frozenset[PortKey] | None:
        """Images for `desired`: the previous ones, except for the changed split ports. Returns
        the keys to plan (None: all). A split that does not fit is logged and not imaged."""
        if changed is None:
            self._images, self._rejected = {}, {}
            changed, scope = frozenset(desired), None
        else:
            scope = changed
        for key in changed:
            self._images.pop(key, None)
            self._rejected.pop(key, None)
            sp = desired.get(key)
            if sp is None:
                continue
            img = plan.image_or_rejected(sp)
            if isinstance(img, plan.Rejected):
                self._rejected[key] = img
                log.error("ebpf: %s", img.message, extra={"dataplane": self.name})
            else:
                self._images[key] = img
        if len(self._images) + len(self._rejected) != len(desired):   # the caller's `changed` missed some
            return self._reimage(desired, None)
        return scope

    def preview(self, desired: Desired) -> str:
        """The map operations a full sync would apply, in flip order; reads the pins, compiles,
        attaches and writes nothing."""
        found = [plan.image_or_rejected(sp) for sp in by_key(desired).values()]
        images = [i for i in found if not isinstance(i, plan.Rejected)]
        rejected = [r for r in found if isinstance(r, plan.Rejected)]
        lines = [f"# skipped: {r.message}" for r in rejected]
        installed: dict = {}
        ops: list = []
        if self.pins.complete() and installed_schema(self.pins) == self.config.schema:
            lines.append("# ebpf: map operations on the pinned install, in the order they would be applied")
            maps = KernelMaps(self.pins)
            try:
                installed = maps.read_all()
                config_differs = maps.config() != self.config
                p = plan.plan(images, installed, keep=[r.key for r in rejected])
                ops = plan.with_orphans(p, maps.slot_keys(), maps.meta_ids())
            finally:
                maps.close()
        elif installed_schema(self.pins) == self.config.schema:
            lines.append(f"# ebpf: pins missing ({', '.join(map(str, self.pins.missing()))}): a sync rebuilds "
                         "the install beside the old one, copies the entries of the maps still pinned, then "
                         "writes what differs (not listed: the install cannot be read whole)")
            return "\n".join(lines) + "\n"
        else:
            config_differs = True
            lines.append("# ebpf: a new install (nothing pinned, or built from another schema): a sync "
                         "compiles and pins the programs, fills the new maps as below, then attaches")
            ops = list(plan.plan(images, {}).ops)
        if config_differs:
            uids = ", ".join(map(str, self.config.split_uids)) or "all"
            lines.append(f"write ks_config[0] = this agent's schema fingerprint, split uids: {uids}")
        body = preview.render(ops)
        return "\n".join(lines) + "\n" + (body or "# up to date, nothing to write\n")

    def cleanup(self) -> None:
        self.close()
        links.remove(self.pins)

    def installed(self) -> bool:
        return self.pins.any()

    def problems(self) -> list[str]:
        if not self.installed():
            return []
        return [f"{p}: connections are not split until the agent's next full resync"
                for p in links.unattached(self.pins)]

    def capacity(self) -> dict[str, tuple[int, int]]:
        """(entries in use, max entries) per pinned hash map, for the fill-ratio metric; read
        through fds of its own (the metrics endpoint runs beside the sync loop)."""
        if not self.installed() or self.pins.missing_maps():
            return {}                  # a pin removed by hand: the next full resync pins it again
        maps = KernelMaps(self.pins)
        try:
            return maps.fill()
        finally:
            maps.close()

    def observe(self) -> list[ObservedSplit]:
        if not self.installed():
            return []
        missing = self.pins.missing_maps()
        if missing and self._maps is None:
            raise pins.MissingPins(self.pins, missing)
        maps = self._maps or KernelMaps(self.pins)
        try:
            out = []
            for key, inst in sorted(maps.read_all().items()):
                meta = inst.image.meta
                counts = maps.counters(inst.split_id, len(meta.backends))
                out.append(ObservedSplit(
                    dataplane=self.name, namespace=meta.namespace, service=meta.service,
                    split=meta.split, cluster_ip=key.ip, port=key.port, refuse=inst.image.refuse,
                    backends=tuple(ObservedBackend(b.name, b.weight, b.share, n, b.terminating,
                                                   i in {s.backend for s in inst.image.slots if s.refuse})
                                   for i, (b, n) in enumerate(zip(meta.backends, counts)))))
            return out
        finally:
            if maps is not self._maps:
                maps.close()

    # --- helpers -------------------------------------------------------------------------------

    def close(self) -> None:
        """Drop our fds (the pins keep programs, maps and attachments alive)."""
        if self._maps is not None:
            self._maps.close()
            self._maps = None
        for fd in self._progs.values():
            os.close(fd)
        self._progs = {}
        self._known = None

    def _ready(self, images: Iterable[plan.SplitImage]) -> KernelMaps:
        if self._maps is not None:
            return self._maps
        pins.ensure_bpffs(self.pins.root)
        staging = self.pins.staging()
        if staging.root.exists():
            links.remove(staging)         # left by a crash during a replacement; never attached
        found = installed_schema(self.pins)
        adopted = found == self.config.schema
        rebuilt: list[pins.Repair] = []
        if adopted and not self.pins.missing(self.interception):
            pass                               # adopt: same programs, same map layouts
        elif adopted:
            rebuilt = self._rebuild(staging, images)
        elif self.pins.attached():
            # Another version's install is live: build ours beside it, fill it, then swap
            # programs in place, so connects never meet an unrewritten moment.
            log.warning("ebpf: pins under %s were built from another schema (%s, this agent %s): replacing "
                        "programs and maps; counters restart from zero", self.pins.root,
                        f"fingerprint {found.hex()[:12]}" if found else
                        f"no fingerprint: {self.pins.map('ks_config')} is missing or of another layout",
                        self.config.schema.hex()[:12])
            self.compile_seconds = build.compile_and_pin(staging)
            self._fill(staging, images)
            links.swap(self.pins, staging)
            self.replaced = True
        else:
            # Nothing attached (first install, or a crash during it): start clean.
            links.remove(self.pins)
            self.compile_seconds = build.compile_and_pin(self.pins)
        maps = KernelMaps(self.pins)
        try:
            if maps.config() != self.config:   # before attaching: the uid filter holds at once
                maps.write_config(self.config)
            created = links.attach(self.pins, self._cgroup(), self.interception)
            self._progs = pins.held_programs(self.pins)
        except BaseException:
            maps.close()
            raise
        self.links_created = len(created)
        if adopted:                            # links an install of ours lost are repairs too
            self._started = rebuilt + created
            self._log_repairs(created)
        self._maps = maps
        return maps

    def _rebuild(self, staging: pins.Pins, images: Iterable[plan.SplitImage]) -> list[pins.Repair]:
        """Our own schema, but map or program pins are gone, and with them the only way to open
        those objects (by id needs CAP_SYS_ADMIN). Build the same install beside it, copy every
        map's entries over (counters included), fill, and swap programs in place."""
        missing = self.pins.missing(self.interception)
        self.compile_seconds = build.compile_and_pin(staging)
        copied = carry(self.pins, staging)
        self._fill(staging, images)
        links.swap(self.pins, staging)
        # Counters are per backend index of ks_meta's list: without either map they mean nothing.
        kept = ("connection counters kept" if {"ks_counters", "ks_meta"} <= set(copied)
                else "connection counters restart from zero")
        repairs = [pins.Repair("map pin" if p.parent.name == "maps" else "program pin", p.name,
                                 f"pin {p} was missing: rebuilt the install under {self.pins.root} with the "
                                 f"same schema, map entries copied over ({kept})")
                   for p in missing]
        self._log_repairs(repairs)
        return repairs

    def _fill(self, staged: pins.Pins, images: Iterable[plan.SplitImage]) -> None:
        """Write config and every split into a new install's maps before it goes live (over
        what `carry` copied into them, if anything)."""
        maps = KernelMaps(staged)
        try:
            maps.write_config(self.config)
            p = plan.plan(images, maps.read_all(), keep=[r.key for r in self._rejected.values()])
            maps.apply(plan.with_orphans(p, maps.slot_keys(), maps.meta_ids()))
        finally:
            maps.close()
