"""The eBPF dataplane: cgroup connect4/6 hooks choose an endpoint by weight from pinned maps.

C sources are in bpf/ (schema: bpf/ks_types.h). Modules: `table` (exact weight tables), `plan`
(pure: images and ordered map operations), `maps`/`bpfsys` (map I/O over libbpf), `loader`
(BCC compile, pins, cgroup links), `headers` (kernel tree for BCC), `dataplane` (the protocol).
"""
from kernsplit.agent.dataplane.ebpf.dataplane import EbpfDataplane

__all__ = ["EbpfDataplane"]
