"""Where the BPF C sources are: the `kernsplit.bpf` package data (the repository's `bpf/` folder).

Found through importlib.resources, so an installed wheel and a source checkout resolve alike. Kept
apart from the loader so that the schema fingerprint can read the sources without importing BCC.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

# BCC needs a real directory for `-I`: the package is installed as plain files (never zipped).
BPF_SRC = Path(str(files("kernsplit.bpf")))
# One text for BCC, in this order: BCC rewrites map calls only in the text it is given (lb.c).
SOURCES = ("lb.c", "sock_connect.c", "sock_getpeername.c",
           "intercept.c", "intercept_connect.c", "intercept_sockops.c", "intercept_tc.c")
