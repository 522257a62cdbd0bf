# kernsplit image: the node agent (`kernsplit agent`) and the init container (`proxy-init`).
#
# Built by `make image` with podman, offline from any registry: the base is Debian bookworm made
# by mmdebstrap and imported (`kernsplit-base`), and the Python packages are wheels built on the
# host into build/wheels (no package index is reachable from inside the build).
ARG BASE=localhost/kernsplit-base:bookworm

# --- build: a venv holding kernsplit and its dependencies, from wheels only ------------------
FROM ${BASE} AS build
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
COPY build/wheels /wheels
RUN python3 -m venv /opt/kernsplit \
 && /opt/kernsplit/bin/pip install -q --no-index --no-cache-dir --find-links /wheels kernsplit \
 && /opt/kernsplit/bin/pip uninstall -q -y pip \
 && mkdir /opt/kernsplit/bcc-site \
 && ln -s /usr/lib/python3/dist-packages/bcc /opt/kernsplit/bcc-site/bcc \
 && echo /opt/kernsplit/bcc-site > "$(/opt/kernsplit/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/kernsplit-distro-bcc.pth"

# --- runtime: what the programs run, no compiler, no pip --------------------------------------
# iptables: both backends (legacy and nft); nftables: `nft`, which deletes the tables cleanup
# emptied. python3-bpfcc/libbpfcc: BCC, which compiles the BPF
# programs at the agent's first start with the clang and LLVM it links as libraries, so no
# compiler program (gcc, clang) is installed. linux-libc-dev: the UAPI headers for the kernel-header
# fallback on nodes without linux-headers.
FROM ${BASE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      python3 iptables nftables python3-bpfcc libbpfcc linux-libc-dev \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /usr/share/doc/* /usr/share/man/* /usr/share/locale/*
COPY --from=build /opt/kernsplit /opt/kernsplit
ENV PATH=/opt/kernsplit/bin:$PATH PYTHONDONTWRITEBYTECODE=1
ENTRYPOINT ["kernsplit"]
CMD ["--help"]
