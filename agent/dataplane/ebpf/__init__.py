"""The eBPF dataplane: cgroup connect4/6 hooks choose an endpoint by weight from pinned maps.

C sources are in bpf/ (schema: bpf/ks_types.h). Modules: `thresholds` (exact weight bounds over
the random space), `plan` (pure: images and ordered map operations), `limits` (the header's
#defines), `abi` (ctypes mirrors), `maps`/`bpfsys` (map I/O over libbpf), `pins` (what an
install is made of and where it is pinned), `loader` (BCC compile, checked against the mirrors,
and pinning; run by `build` in a child process), `links` (cgroup attachment, swapping installs,
removal), `headers` (kernel tree for BCC), `dataplane` (the protocol).

`EbpfDataplane` is imported on first use, so importing a pure module of this package (`plan`,
`thresholds`) loads neither ctypes nor libbpf.
"""
from __future__ import annotations

__all__ = ["EbpfDataplane"]


def __getattr__(name: str):
    if name == "EbpfDataplane":
        from kernsplit.agent.dataplane.ebpf.dataplane import EbpfDataplane
        return EbpfDataplane
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
