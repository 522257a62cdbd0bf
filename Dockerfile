# kernsplit image: the node agent (`kernsplit agent`) and the init container (`proxy-init`).
# BCC comes from the distribution (python3-bpfcc), never from PyPI.
FROM debian:12-slim

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      iptables nftables iproute2 util-linux gcc python3 python3-venv python3-bpfcc libbpfcc \
      linux-libc-dev bpftool ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/kernsplit
COPY pyproject.toml README.md ./
COPY agent ./agent
COPY init ./init
COPY bpf ./bpf

# Same layout as `make install`: a venv that sees only Debian's bcc package.
RUN python3 -m venv /opt/kernsplit/.venv \
 && /opt/kernsplit/.venv/bin/pip install --no-cache-dir -e . \
 && mkdir -p /opt/kernsplit/.venv/bcc-site \
 && ln -s /usr/lib/python3/dist-packages/bcc /opt/kernsplit/.venv/bcc-site/bcc \
 && echo /opt/kernsplit/.venv/bcc-site > "$(/opt/kernsplit/.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/kernsplit-distro-bcc.pth"

ENV PATH=/opt/kernsplit/.venv/bin:$PATH
ENTRYPOINT ["kernsplit"]
CMD ["--help"]
