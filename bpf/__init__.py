"""The BPF C programs, shipped as package data (`kernsplit.bpf`); `ks_types.h` is the one schema."""
